"""Mixed-adapter generation: every routed cluster's adapter in a slot of its own, rows of
different clusters in one batch, gives the same greedy tokens as one cluster at a time."""

import numpy as np
import pytest

from fedrouter.client_logic import evaluate_routed, slot_loader
from fedrouter.config import Config
from fedrouter.data import client_data_for
from fedrouter.evaluation import generate_routed
from fedrouter.models import (
    ModelSpec,
    adapter_to_arrays,
    arrays_to_adapter,
    load_model_and_tokenizer,
)

N_CLUSTERS = 3


@pytest.fixture(scope="module")
def routed(tiny_path):
    """A 4-bit tiny model with LoRA, three distinct adapters, and test rows routed over them."""
    spec = ModelSpec(tiny_path, load_in_4bit=True, lora_r=8, lora_alpha=16, seed=0)
    model, tokenizer = load_model_and_tokenizer(spec)  # its own: slots are added to it
    init = adapter_to_arrays(model)
    rng = np.random.default_rng(0)
    # B of LoRA starts at zero; a large random B makes each adapter answer differently
    adapters = {
        g: {k: v + rng.normal(0, 0.3, v.shape).astype(np.float32) for k, v in init.items()}
        for g in range(N_CLUSTERS)
    }
    cfg = Config(
        model_name_or_path="tiny",
        dataset_name="multitask_synthetic",
        num_clients=4,
        sample_clients=4,
    )
    rows = [r for part in client_data_for(cfg) for r in part.test[:4]]
    routes = np.arange(len(rows)) % N_CLUSTERS
    return model, tokenizer, spec, adapters, rows, routes


def answers(routed, *, mixed: bool, batch_size: int) -> list[str]:
    model, tokenizer, spec, adapters, rows, routes = routed
    return generate_routed(
        model,
        tokenizer,
        [r["instruction"] for r in rows],
        routes,
        lambda g: arrays_to_adapter(model, adapters[g]),
        template="alpaca_short",
        batch_size=batch_size,
        max_new_tokens=8,
        max_length=256,
        load_slots=slot_loader(model, spec, adapters) if mixed else None,
    )


def test_mixed_batches_give_the_per_cluster_tokens_at_any_batch_size(routed):
    per_cluster = answers(routed, mixed=False, batch_size=64)
    assert len(set(per_cluster)) > 3  # the adapters do answer differently
    for batch_size in (1, 64):
        assert answers(routed, mixed=True, batch_size=batch_size) == per_cluster, batch_size


def test_slots_leave_the_trained_adapter_alone(routed):
    model, _, spec, adapters, _, _ = routed
    before = adapter_to_arrays(model)
    slot_loader(model, spec, adapters)([0, 1])
    after = adapter_to_arrays(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model.active_adapter == "default"
    frozen = [n for n, p in model.named_parameters() if ".cluster_" in n and p.requires_grad]
    assert frozen == []


def test_an_evaluation_round_scores_the_same_either_way(routed):
    model, tokenizer, spec, adapters, rows, routes = routed
    tasks = [rows[i]["task"] for i in range(N_CLUSTERS)]
    results = [
        evaluate_routed(
            model,
            tokenizer,
            rows,
            routes,
            lambda g: arrays_to_adapter(model, adapters[g]),
            cluster_tasks=tasks,
            template="alpaca_short",
            batch_size=8,
            max_new_tokens=8,
            max_length=256,
            load_slots=loader,
        )
        for loader in (None, slot_loader(model, spec, adapters))
    ]
    assert np.array_equal(results[0].scores, results[1].scores)
    assert results[0].metrics()["rouge1"] == results[1].metrics()["rouge1"]
    assert results[0].new_tokens == results[1].new_tokens
