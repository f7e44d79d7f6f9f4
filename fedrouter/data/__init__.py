"""Data layer: task registry, loaders, the offline benchmark, partitioning and templates."""

from __future__ import annotations

import functools

from fedrouter.data.errors import DataError
from fedrouter.data.loaders import LOCAL_FORMATS, Pools, load_benchmark
from fedrouter.data.partition import (
    EVALUATION_MODES,
    SPLIT_STRATEGIES,
    ClientData,
    client_tasks,
    partition,
    routes_globally,
)
from fedrouter.data.registry import (
    DATASET_NAMES,
    INSTRUCTION_FORMATS,
    ROW_KEYS,
    TaskSpec,
    tasks_for,
)
from fedrouter.data.synthetic import (
    SYNTHETIC_BENCHMARK,
    SYNTHETIC_SEED,
    SYNTHETIC_TASKS,
    generate_synthetic,
    synthetic_texts,
)
from fedrouter.data.templates import TEMPLATE_NAMES, format_prompt

__all__ = [
    "DATASET_NAMES",
    "EVALUATION_MODES",
    "INSTRUCTION_FORMATS",
    "LOCAL_FORMATS",
    "ROW_KEYS",
    "SPLIT_STRATEGIES",
    "SYNTHETIC_BENCHMARK",
    "SYNTHETIC_SEED",
    "SYNTHETIC_TASKS",
    "TEMPLATE_NAMES",
    "ClientData",
    "DataError",
    "Pools",
    "TaskSpec",
    "client_data_for",
    "client_tasks",
    "format_prompt",
    "generate_synthetic",
    "load_benchmark",
    "load_client_data",
    "partition",
    "routes_globally",
    "synthetic_texts",
    "tasks_for",
]


@functools.lru_cache(maxsize=8)
def _load_client_data_cached(
    dataset_name: str,
    local_data_dir: str | None,
    dataset_sample: int,
    instruction_format: str,
    split_strategy: str,
    num_clients: int,
    train_split: float,
    max_data_per_client: int,
    max_eval_size: int,
    evaluation_mode: str,
    seed: int,
    synthetic_overlap: float = 0.0,
) -> tuple[ClientData, ...]:
    """Load and split once per process and argument set."""
    pools = load_benchmark(
        dataset_name,
        local_data_dir=local_data_dir,
        dataset_sample=dataset_sample,
        train_split=train_split,
        instruction_format=instruction_format,
        synthetic_overlap=synthetic_overlap,
    )
    return tuple(
        partition(
            pools.train,
            pools.test,
            tasks=[spec.name for spec in tasks_for(dataset_name)],
            split_strategy=split_strategy,
            num_clients=num_clients,
            max_data_per_client=max_data_per_client,
            max_eval_size=max_eval_size,
            evaluation_mode=evaluation_mode,
            seed=seed,
        )
    )


def load_client_data(
    *,
    dataset_name: str,
    local_data_dir: str | None,
    dataset_sample: int,
    split_strategy: str,
    num_clients: int,
    train_split: float,
    max_data_per_client: int,
    max_eval_size: int,
    evaluation_mode: str,
    seed: int,
    instruction_format: str = "raw",
    synthetic_overlap: float = 0.0,
) -> list[ClientData]:
    """Return every client's data for a run; cached, so each process loads and splits once."""
    return list(
        _load_client_data_cached(
            dataset_name,
            None if local_data_dir is None else str(local_data_dir),
            dataset_sample,
            instruction_format,
            split_strategy,
            num_clients,
            train_split,
            max_data_per_client,
            max_eval_size,
            evaluation_mode,
            seed,
            float(synthetic_overlap),
        )
    )


def client_data_for(cfg, num_clients: int | None = None) -> list[ClientData]:
    """Return every client's data for a run config (any object with the config's fields)."""
    return load_client_data(
        dataset_name=cfg.dataset_name,
        local_data_dir=cfg.local_data_dir,
        dataset_sample=cfg.dataset_sample,
        instruction_format=cfg.instruction_format,
        split_strategy=cfg.split_strategy,
        num_clients=cfg.num_clients if num_clients is None else num_clients,
        train_split=cfg.train_split,
        max_data_per_client=cfg.max_data_per_client,
        max_eval_size=cfg.max_eval_size,
        evaluation_mode=cfg.evaluation_mode,
        seed=cfg.seed,
        synthetic_overlap=cfg.synthetic_overlap,
    )
