"""train_adapter's own tokenization, the CPU loss, and the cosine learning rate over rounds."""

import math

import numpy as np
import pytest
import torch

from fedrouter.data import generate_synthetic
from fedrouter.data.templates import get_template, prompt_through_marker
from fedrouter.training import (
    TrainSettings,
    _sft_trainer_class,
    checkpointing_needed,
    cosine_lr,
    sft_config,
    tokenize_rows,
    train_adapter,
)


def mixed_rows(n_per_task=6):
    rows = generate_synthetic()
    tasks = sorted({r["task"] for r in rows})
    return [r for t in tasks for r in [x for x in rows if x["task"] == t][:n_per_task]]


def training_ids(tokenizer, row, template):
    text = get_template(template).training_text(row["instruction"], row["response"], "</s>")
    return tokenizer(text)["input_ids"]


@pytest.mark.parametrize("template", ["alpaca", "alpaca_short"])
def test_tokenize_rows_masks_through_the_response_marker(qlora_model, template):
    _, tokenizer, _ = qlora_model
    assert tokenizer.eos_token == "</s>"
    rows = mixed_rows()
    out = tokenize_rows(rows, tokenizer, template, max_length=1024)
    assert len(out["input_ids"]) == len(out["labels"]) == len(rows)  # nothing cut, none dropped
    for row, ids, labels in zip(rows, out["input_ids"], out["labels"], strict=True):
        # one tokenizer call on the whole training text: prompt + response + eos
        assert ids == training_ids(tokenizer, row, template)
        start = next(i for i, t in enumerate(labels) if t != -100)
        assert labels[:start] == [-100] * start and labels[start:] == ids[start:]
        # the masked part ends with the marker; the loss covers " response" and eos
        assert tokenizer.decode(ids[:start]).endswith("### Response:")
        assert tokenizer.decode(labels[start:]) == " " + row["response"] + "</s>"


def test_tokenize_rows_cuts_long_rows_and_drops_rows_without_a_response_token(qlora_model):
    _, tokenizer, _ = qlora_model
    rows = mixed_rows()
    heads = [len(tokenizer(prompt_through_marker(r["instruction"]))["input_ids"]) for r in rows]
    max_length = sorted(heads)[len(heads) // 2]  # half the prompts alone fill max_length
    out = tokenize_rows(rows, tokenizer, "alpaca", max_length)
    kept = [row for row, head in zip(rows, heads, strict=True) if head < max_length]
    assert 0 < len(kept) < len(rows)
    assert len(out["input_ids"]) == len(kept)
    for row, ids, labels in zip(kept, out["input_ids"], out["labels"], strict=True):
        assert ids == training_ids(tokenizer, row, "alpaca")[:max_length]
        assert len(labels) == len(ids) and any(t != -100 for t in labels)
    assert any(len(ids) == max_length for ids in out["input_ids"])  # some responses were cut


def test_train_adapter_trains_on_exactly_the_rows_given(fresh_qlora):
    model, tokenizer, _ = fresh_qlora
    rows = mixed_rows(2)  # 8 rows, more than one call's 1 step x batch 2 would sample
    settings = TrainSettings(max_steps=1, batch_size=2, seq_length=256, template="alpaca_short")
    assert settings.samples_per_call < len(rows)
    result = train_adapter(model, tokenizer, rows, settings=settings, lr=1e-3, seed=0)
    assert result.num_examples == len(rows)  # the caller samples, not train_adapter
    with pytest.raises(ValueError, match="at least one row"):
        train_adapter(model, tokenizer, [], settings=settings, lr=1e-3, seed=0)


def test_cosine_lr_is_one_based_and_ends_at_min():
    lr, low = 1e-3, 1e-5
    assert cosine_lr(1, 4, lr, low) < lr  # round 1 is already past the peak
    # round 1 of 4: min + (lr - min) * (1 + cos(pi / 4)) / 2
    assert cosine_lr(1, 4, lr, low) == pytest.approx(low + (lr - low) * (1 + math.sqrt(0.5)) / 2)
    assert cosine_lr(2, 4, lr, low) == pytest.approx((lr + low) / 2)  # cos(pi / 2) = 0
    assert cosine_lr(4, 4, lr, low) == pytest.approx(low)  # the last round gets exactly min
    rates = [cosine_lr(r, 4, lr, low) for r in range(1, 5)]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plain-loss subclass is the CPU path")
def test_cpu_loss_equals_trl_fused_loss(qlora_model, tmp_path):
    from datasets import Dataset
    from trl import SFTTrainer

    model, tokenizer, _ = qlora_model
    rows = mixed_rows(2)
    settings = TrainSettings(max_steps=1, batch_size=len(rows), seq_length=256)
    dataset = Dataset.from_dict(tokenize_rows(rows, tokenizer, settings.template, 256))
    losses = []
    for cls in (SFTTrainer, _sft_trainer_class()):
        trainer = cls(
            model=model,
            args=sft_config(settings, 1e-3, 0, str(tmp_path)),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        model.eval()
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, dict(batch)).item())
    assert cls is not SFTTrainer
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


LLAMA_1B = type("Geometry", (), {"hidden_size": 2048, "num_hidden_layers": 16})()


def test_checkpointing_auto_weighs_a_batchs_activations_against_the_clients_gpu_share():
    h200 = 141 * 2**30
    # batch 16 of ~150-token rows: 2.7 GB of activations, a quarter of an H200 holds 35 GB
    assert not checkpointing_needed("auto", 16 * 150, LLAMA_1B, 0.25, gpu_bytes=h200)
    # rows padded to 1024 tokens: 18 GB, above a fifth of that share
    assert checkpointing_needed("auto", 16 * 1024, LLAMA_1B, 0.25, gpu_bytes=h200)
    assert not checkpointing_needed("auto", 16 * 1024, LLAMA_1B, 1.0, gpu_bytes=h200)
    assert checkpointing_needed("on", 1, LLAMA_1B, 1.0, gpu_bytes=h200)
    assert not checkpointing_needed("off", 10**9, LLAMA_1B, 0.01, gpu_bytes=h200)
    if not torch.cuda.is_available():
        assert not checkpointing_needed("auto", 10**9, LLAMA_1B, 0.01)  # off on a CPU


def test_checkpointing_changes_speed_not_the_trained_adapter(fresh_qlora):
    """Recomputation (non-reentrant) must keep LoRA's gradients: same loss, same adapter."""
    from fedrouter.models import adapter_to_arrays, arrays_to_adapter

    model, tokenizer, init = fresh_qlora
    rows = mixed_rows(8)
    results = {}
    for mode in ("off", "on"):
        arrays_to_adapter(model, init)
        settings = TrainSettings(
            max_steps=3, batch_size=4, seq_length=256, gradient_checkpointing=mode
        )
        out = train_adapter(model, tokenizer, rows, settings=settings, lr=1e-3, seed=3)
        assert model.is_gradient_checkpointing == (mode == "on")
        results[mode] = (out.loss, adapter_to_arrays(model))
    assert results["on"][0] == pytest.approx(results["off"][0], rel=1e-5)
    on, off = results["on"][1], results["off"][1]
    assert all(not np.array_equal(on[k], init[k]) for k in init if "lora_B" in k)
    assert all(np.allclose(on[k], off[k], atol=1e-6) for k in init)
    settings = TrainSettings(max_steps=1, batch_size=4, seq_length=256)
    train_adapter(model, tokenizer, rows, settings=settings, lr=1e-3, seed=3)
    assert not model.is_gradient_checkpointing  # auto on a CPU turns it back off
