"""The difficulty knob of the synthetic benchmark: `synthetic_overlap` (data/synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrouter.clustering import cluster_purity, kmeans
from fedrouter.config import Config, ConfigError
from fedrouter.data import (
    DataError,
    client_data_for,
    generate_synthetic,
    load_benchmark,
    load_client_data,
    synthetic,
)
from fedrouter.embeddings import embed_texts

N = 300  # rows per family: enough to see every shape, quick to generate
# The interference scenario's split (configs/scenarios/interference.sh) on the quickstart's
# 8 clients, as a client of `run_scenarios.sh` holds it.
INTERFERENCE = dict(
    dataset_name="multitask_synthetic",
    local_data_dir=None,
    dataset_sample=400_000,
    split_strategy="multitask_multi_domain",
    num_clients=8,
    train_split=0.8,
    max_data_per_client=600,
    max_eval_size=64,
    evaluation_mode="local",
    seed=111,
)


def test_same_seed_and_knob_give_the_same_rows():
    first = generate_synthetic(seed=7, n_per_task=N, overlap=0.6)
    synthetic._generate_cached.cache_clear()
    assert generate_synthetic(seed=7, n_per_task=N, overlap=0.6) == first
    assert generate_synthetic(seed=7, n_per_task=N, overlap=0.7) != first


def test_knob_zero_is_the_benchmark_without_the_knob():
    assert generate_synthetic(overlap=0.0) == generate_synthetic()
    assert load_benchmark("multitask_synthetic", synthetic_overlap=0) == load_benchmark(
        "multitask_synthetic"
    )


@pytest.mark.parametrize("overlap", [0.25, 0.5, 1.0])
def test_the_knob_changes_instructions_only(overlap):
    plain = generate_synthetic(n_per_task=N)
    blended = generate_synthetic(n_per_task=N, overlap=overlap)
    assert [(r["task"], r["response"]) for r in blended] == [
        (r["task"], r["response"]) for r in plain
    ]
    changed = sum(a["instruction"] != b["instruction"] for a, b in zip(plain, blended, strict=True))
    assert changed == len(plain)  # every row is framed above 0


def test_at_the_hardest_knob_each_input_is_whole_and_maps_to_one_response():
    plain = generate_synthetic(n_per_task=N)
    blended = generate_synthetic(n_per_task=N, overlap=1.0)
    responses: dict[str, str] = {}
    for before, after in zip(plain, blended, strict=True):
        assert responses.setdefault(after["instruction"], after["response"]) == after["response"]
        # the input sits between the frame's lines, its items whole, in the shared form or raw
        lines = after["instruction"].split("\n")
        assert lines[0].startswith("Note: ") and lines[1] == synthetic.FRAME_OPEN
        assert lines[-1] == synthetic.FRAME_CLOSE
        content = "\n".join(lines[2:-1])
        items = synthetic._ITEMS[before["task"]](before["instruction"])
        assert content in (before["instruction"], "\n".join(f"- {i}" for i in items))
    assert len(responses) == len(blended)  # instructions stay distinct


def test_the_note_grows_with_the_knob_and_stays_short(tiny_path):
    from fedrouter.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_path)
    notes = {}
    for overlap in (0.25, 0.5, 1.0):
        rows = generate_synthetic(n_per_task=N, overlap=overlap)
        notes[overlap] = np.mean([r["instruction"].split("\n")[0].count(",") for r in rows])
        longest = max(len(tokenizer(r["instruction"])["input_ids"]) for r in rows)
        assert longest < 200, overlap  # the quickstart's seq_length is 256
    assert notes[0.25] < notes[0.5] < notes[1.0]


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_config_rejects_a_knob_outside_0_1(value):
    with pytest.raises(ConfigError, match=r"synthetic_overlap=.*\[0, 1\]"):
        Config(dataset_name="multitask_synthetic", synthetic_overlap=value)
    with pytest.raises(ValueError, match="overlap"):
        generate_synthetic(n_per_task=N, overlap=value)


def test_config_rejects_the_knob_with_another_benchmark():
    with pytest.raises(ConfigError, match="synthetic_overlap=0.5 applies to .*multitask_synthetic"):
        Config(dataset_name="multitask", synthetic_overlap=0.5)
    assert Config(dataset_name="multitask_synthetic", synthetic_overlap=1).synthetic_overlap == 1.0


def test_the_run_config_carries_the_knob_to_every_client():
    cfg = Config(**INTERFERENCE, synthetic_overlap=0.5)
    assert cfg.to_dict()["synthetic_overlap"] == 0.5  # recorded in config.json
    blended, plain = client_data_for(cfg), client_data_for(cfg.replace(synthetic_overlap=0.0))
    for hard, easy in zip(blended, plain, strict=True):
        assert [r["response"] for r in hard.train] == [r["response"] for r in easy.train]
        assert all(r["instruction"].startswith("Note:") for r in (*hard.train, *hard.test))
        assert not any(r["instruction"].startswith("Note:") for r in easy.train)


def test_loading_another_benchmark_with_the_knob_is_an_error():
    with pytest.raises(DataError, match="multitask_synthetic only"):
        load_benchmark("multitask", synthetic_overlap=0.5)


def _local_purity(model, tokenizer, overlap: float, pid: int, n: int = 200) -> float:
    """Embed and 2-means a client's training rows as a client does; return the purity."""
    rows = load_client_data(**INTERFERENCE, synthetic_overlap=overlap)[pid].train[:n]
    embeddings = embed_texts(model, tokenizer, [r["instruction"] for r in rows], max_length=256)
    labels = kmeans(embeddings, 2, seed=0).labels
    return cluster_purity(labels, np.array([r["task"] for r in rows]))


def test_the_hardest_knob_lowers_local_purity(qlora_model):
    model, tokenizer, _ = qlora_model
    # clients 4 and 6 hold data2text with dialogsum and with paraphrase: well apart at 0
    easy = np.mean([_local_purity(model, tokenizer, 0.0, pid) for pid in (4, 6)])
    hard = np.mean([_local_purity(model, tokenizer, 1.0, pid) for pid in (4, 6)])
    assert easy - hard >= 0.2, (easy, hard)
