"""The real pretrained model, offline: SmolLM2-135M-Instruct from its packaged GGUF (or the local
Hub cache). Marked real_model: ``python -m pytest -m real_model``; .ci/run installs the wheel
and runs them after the default suite. Without either source they skip, naming the install."""

import json
import math
import random

import pytest
import torch

from fedrouter import model_sources as ms
from tests.conftest import run_simulation

NAMED = ms.NAMED_MODELS["smollm2-135m"]
HAVE_MODEL = (
    ms.packaged_file(NAMED.distribution, NAMED.gguf_member) is not None
    or ms.hub_snapshot(NAMED.hub_id) is not None
)
pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not HAVE_MODEL, reason=f"smollm2-135m is not installed: {NAMED.install}"),
]

NATURAL = (
    "The meeting was moved to Thursday because the manager was travelling. Everyone agreed "
    "that the new plan was better, and the team went back to work on the report."
)


def perplexity(model, tokenizer, text: str) -> float:
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return math.exp(model(**batch, labels=batch["input_ids"]).loss.item())


def test_named_model_loads_and_knows_english_word_order():
    from fedrouter.models import ModelSpec, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(
        ModelSpec("smollm2-135m", load_in_4bit=False, use_peft=False)
    )
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    words = NATURAL.split()
    random.Random(0).shuffle(words)
    natural, shuffled = (
        perplexity(model, tokenizer, NATURAL),
        perplexity(model, tokenizer, " ".join(words)),
    )
    assert natural < 100 and shuffled > 20 * natural, (natural, shuffled)


def test_one_fedrouter_round_with_the_real_model_has_finite_metrics(tmp_path):
    proc, run_dir = run_simulation(
        tmp_path,
        "--model_name_or_path", "smollm2-135m",
        "--num_rounds", "1", "--evaluation_rounds", "1",
        "--max_steps", "1", "--batch_size", "2",
        "--max_data_per_client", "12", "--max_eval_size", "4",
        "--max_new_tokens", "8", "--eval_batch_size", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_round"] == 1
    assert all(math.isfinite(summary["final"][k]) for k in ("rouge1", "rouge2", "rougeL"))
    assert summary["model_source"]["name"] == "smollm2-135m"
    losses = [
        e["train_loss"]
        for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if e.get("event") == "train"
    ]
    assert losses and all(math.isfinite(x) for x in losses)
