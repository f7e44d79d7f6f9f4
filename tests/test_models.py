"""QLoRA on the tiny model: 4-bit layers, training moves only LoRA, the bitsandbytes trap,
the adapter round trip, and one base-model load per process."""

import numpy as np
import pytest
import torch

from fedrouter.data import format_prompt, generate_synthetic
from fedrouter.data.templates import get_template, prompt_through_marker
from fedrouter.embeddings import embed_texts
from fedrouter.evaluation import generate
from fedrouter.models import (
    LOAD_STATS,
    ModelLoadError,
    ModelSpec,
    adapter_to_arrays,
    arrays_to_adapter,
    clear_model_cache,
    default_lora_targets,
    get_model_and_tokenizer,
    lora_config,
    peft_target_modules,
)
from fedrouter.training import TrainSettings, train_adapter


def task_rows(task="headline_synth", n=400):
    return [r for r in generate_synthetic() if r["task"] == task][:n]


def completion_loss(model, tokenizer, rows, template="alpaca"):
    """Mean cross-entropy on what follows the response marker (" response" and eos)."""
    losses = []
    model.eval()
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(prompt_through_marker(row["instruction"], template))["input_ids"]
            text = get_template(template).training_text(
                row["instruction"], row["response"], tokenizer.eos_token
            )
            full = tokenizer(text)
            assert full["input_ids"][: len(prompt)] == prompt
            ids = torch.tensor([full["input_ids"]])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return float(np.mean(losses))


def base_weights(model):
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" not in n and p.dtype != torch.uint8
    } | {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}


def test_layers_are_4bit_with_lora(fresh_qlora):
    from bitsandbytes.nn import Linear4bit

    model, _, init = fresh_qlora
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 2 * 7  # q,k,v,o,gate,up,down in each of the 2 layers
    assert any("lora_A" in k for k in init) and any("lora_B" in k for k in init)
    # the default targets are PEFT's for Llama, as in the reference: q and v only
    assert {k.split(".")[-3] for k in init} == {"q_proj", "v_proj"}
    assert len(init) == 2 * 2 * 2  # A and B of q and v in each of the 2 layers


def test_lora_targets_default_to_peft_and_keywords_pass_through():
    assert ModelSpec("m").lora_target_modules == ("peft-default",)
    assert peft_target_modules(("peft-default",)) is None  # PEFT picks the model's default
    assert peft_target_modules(("all-linear",)) == "all-linear"
    assert peft_target_modules(("q_proj", "k_proj")) == ["q_proj", "k_proj"]
    assert lora_config(ModelSpec("m")).target_modules is None
    assert set(default_lora_targets("llama")) == {"q_proj", "v_proj"}
    with pytest.raises(ModelLoadError, match="no default LoRA modules"):
        default_lora_targets("no-such-architecture")


def test_all_linear_targets_every_linear_layer(tiny_path):
    from fedrouter.models import load_model_and_tokenizer

    spec = ModelSpec(
        tiny_path, load_in_4bit=False, lora_r=4, lora_alpha=8, lora_target_modules=("all-linear",)
    )
    model, _ = load_model_and_tokenizer(spec)
    modules = {k.split(".")[-3] for k in adapter_to_arrays(model)}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("targets", [("nope_proj",), ("q_proj", "v_prj")])
def test_lora_target_naming_no_module_is_a_load_error_listing_linear_modules(tiny_path, targets):
    from fedrouter.models import load_model_and_tokenizer

    spec = ModelSpec(tiny_path, load_in_4bit=False, lora_target_modules=targets)
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer(spec)
    message = str(info.value)
    assert targets[-1] in message and "q_proj" not in message.split(";")[0]
    assert "q_proj, up_proj, v_proj" in message  # the model's linear modules, sorted


def test_qlora_training_moves_lora_only_and_lowers_loss(fresh_qlora):
    model, tokenizer, init = fresh_qlora
    rows = task_rows()
    held_out = rows[-16:]
    before_base = base_weights(model)
    loss_before = completion_loss(model, tokenizer, held_out)
    settings = TrainSettings(max_steps=30, batch_size=8, seq_length=256)
    result = train_adapter(model, tokenizer, rows[:-16], settings=settings, lr=3e-3, seed=0)
    after = adapter_to_arrays(model)
    assert result.num_examples == len(rows) - 16  # every row given, as the caller sampled them
    for name, tensor in base_weights(model).items():
        assert torch.equal(tensor, before_base[name]), f"base weight {name} changed"
    changed = [k for k in init if not np.array_equal(init[k], after[k])]
    assert len(changed) == len(init), "every LoRA matrix should move"
    assert completion_loss(model, tokenizer, held_out) < loss_before - 0.2


def test_training_after_embedding_and_generation_still_moves_adapter(fresh_qlora):
    """bitsandbytes repacks 4-bit weights on an eval no-grad CPU forward; LoRA must still learn."""
    model, tokenizer, init = fresh_qlora
    rows = task_rows("dialogsum_synth", 200)
    embed_texts(model, tokenizer, [r["instruction"] for r in rows[:8]], batch_size=4)
    generate(
        model, tokenizer, [format_prompt(r["instruction"]) for r in rows[:4]], max_new_tokens=4
    )
    settings = TrainSettings(max_steps=3, batch_size=4, seq_length=256)
    train_adapter(model, tokenizer, rows, settings=settings, lr=1e-3, seed=1)
    after = adapter_to_arrays(model)
    lora_b = [k for k in init if "lora_B" in k]
    assert all(not np.array_equal(init[k], after[k]) for k in lora_b)


def test_adapter_arrays_are_float32_and_round_trip_exactly(fresh_qlora):
    model, tokenizer, init = fresh_qlora
    settings = TrainSettings(max_steps=2, batch_size=4, seq_length=256)
    train_adapter(model, tokenizer, task_rows(n=50), settings=settings, lr=1e-3, seed=2)
    trained = adapter_to_arrays(model)
    assert {a.dtype for a in trained.values()} == {np.dtype("float32")}
    assert list(trained) == list(init)  # stable key order
    rng = np.random.default_rng(0)
    noisy = {k: (v + rng.normal(size=v.shape)).astype(np.float32) for k, v in trained.items()}
    arrays_to_adapter(model, noisy)
    back = adapter_to_arrays(model)
    assert all(np.array_equal(noisy[k], back[k]) for k in noisy)


def test_mismatched_arrays_are_rejected(fresh_qlora):
    model, _, init = fresh_qlora
    broken = dict(init)
    broken.pop(next(iter(broken)))
    with pytest.raises(ValueError, match="missing"):
        arrays_to_adapter(model, broken)


def test_swapped_arrays_reach_the_live_parameters_and_forward(fresh_qlora):
    """A swap writes the very parameters the forward uses: zero B matrices give the base."""
    model, tokenizer, init = fresh_qlora
    batch = tokenizer(["### Instruction: hello there"], return_tensors="pt")

    def logits():
        with torch.no_grad():
            return model(**batch).logits

    rng = np.random.default_rng(1)
    arrays_to_adapter(
        model, {k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()}
    )
    with model.disable_adapter():
        base = logits()
    assert not torch.allclose(logits(), base)
    arrays_to_adapter(model, {k: (0 * v if "lora_B" in k else v) for k, v in init.items()})
    assert torch.allclose(logits(), base)


def test_adapter_arrays_do_not_follow_later_changes(fresh_qlora):
    model, _, init = fresh_qlora
    before = adapter_to_arrays(model)
    arrays_to_adapter(model, {k: v + 1.0 for k, v in init.items()})
    assert all(np.array_equal(before[k], init[k]) for k in init)


def test_a_replaced_parameter_is_found_again(fresh_qlora):
    """The swap caches where the LoRA tensors live; a parameter given new storage is re-read."""
    model, _, init = fresh_qlora
    arrays_to_adapter(model, init)  # builds the cache
    name, param = next((n, p) for n, p in model.named_parameters() if "lora_A" in n)
    param.data = param.data.clone()  # new storage, as a device move would give
    arrays_to_adapter(model, {k: v + 2.0 for k, v in init.items()})
    key = next(k for k in init if "lora_A" in k)
    assert torch.allclose(param.detach().float(), torch.from_numpy(init[key] + 2.0)), name


def test_arrays_of_the_wrong_shape_are_rejected(fresh_qlora):
    model, _, init = fresh_qlora
    key = next(iter(init))
    with pytest.raises(ValueError, match="shape"):
        arrays_to_adapter(model, {**init, key: np.zeros((1, 1), dtype=np.float32)})


def test_model_is_loaded_once_per_process(tiny_path):
    clear_model_cache()
    spec = ModelSpec(tiny_path, load_in_4bit=False, lora_r=4, lora_alpha=8)
    count = LOAD_STATS["count"]
    first = get_model_and_tokenizer(spec)
    second = get_model_and_tokenizer(spec)
    assert first[0] is second[0]
    assert LOAD_STATS["count"] == count + 1
    clear_model_cache()
