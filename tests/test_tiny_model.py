"""The tiny offline model: a standard HF folder, deterministic from its seed."""

import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedrouter.tiny_model import TinyModelSpec, build_tiny_model


def test_tiny_model_reloads_with_auto_classes(tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == TinyModelSpec().hidden_size
    ids = tokenizer("Write a headline for this news:\nAnna won in Paris.")["input_ids"]
    assert tokenizer.unk_token_id not in ids  # byte-level BPE covers the benchmark text
    assert (
        tokenizer.eos_token and tokenizer.pad_token and tokenizer.pad_token != tokenizer.eos_token
    )


def test_build_is_deterministic_from_seed(tmp_path):
    spec = TinyModelSpec(num_hidden_layers=1, vocab_size=600)
    a = build_tiny_model(tmp_path / "a", spec)
    b = build_tiny_model(tmp_path / "b", spec)
    c = build_tiny_model(tmp_path / "c", TinyModelSpec(num_hidden_layers=1, vocab_size=600, seed=1))
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb, wc = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_cli_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run(
        [sys.executable, "-m", "fedrouter.tiny_model", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
