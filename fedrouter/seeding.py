"""Which seed drives what: the reference's fixed seeds, or the run seed everywhere.

With ``seeding="reference"`` (the default) the run seed drives the data order only, as in
the reference's Flower path: the LoRA initialisation uses seed 2025 (``flower_utils.py``),
k-means ``random_state=0`` with ``n_init='auto'`` (``router_utils.py``), the trainer
TrainingArguments' implicit seed 42, and each round's training subsample is seeded by the
round alone (``split_dataset.py``, ``client.py``). So the spread over seeds measures the
data split. ``seeding="run"`` derives every one of them from the run seed instead.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fedrouter.data.sampling import permuted

SEEDINGS: tuple[str, ...] = ("reference", "run")
REFERENCE_LORA_SEED = 2025
REFERENCE_KMEANS_SEED = 0
REFERENCE_KMEANS_N_INIT = "auto"  # one k-means++ run
REFERENCE_TRAINER_SEED = 42
RUN_KMEANS_N_INIT = 10


def lora_seed(cfg) -> int:
    """Return the seed of the LoRA initialisation."""
    return REFERENCE_LORA_SEED if cfg.seeding == "reference" else cfg.seed


def kmeans_seed(cfg, partition_id: int | None = None) -> tuple[int, int | str]:
    """Return (random_state, n_init) of a client's k-means, or the server's (no partition)."""
    if cfg.seeding == "reference":
        return REFERENCE_KMEANS_SEED, REFERENCE_KMEANS_N_INIT
    return cfg.seed + (partition_id or 0), RUN_KMEANS_N_INIT


def _call_seed(cfg, server_round: int, partition_id: int) -> int:
    """Return the run-seeded seed of one client's training call in one round."""
    return cfg.seed * 100_003 + server_round * 1_009 + partition_id


def trainer_seed(cfg, server_round: int, partition_id: int) -> int:
    """Return the trainer's seed (batch order, dropout) for one local training call."""
    if cfg.seeding == "reference":
        return REFERENCE_TRAINER_SEED
    return _call_seed(cfg, server_round, partition_id)


def round_sample(rows: Sequence[dict], n: int, cfg, server_round: int, partition_id: int):
    """Return the rows one training call uses this round: at most ``n`` of ``rows``."""
    if cfg.seeding == "reference":
        return reference_round_sample(rows, n, server_round)
    rng = random.Random(_call_seed(cfg, server_round, partition_id))
    if len(rows) > n:
        return rng.sample(list(rows), n)
    picked = list(rows)
    rng.shuffle(picked)
    return picked


def reference_round_sample(rows: Sequence[dict], n: int, server_round: int) -> list[dict]:
    """Draw the reference's subsample: a shuffle seeded by the round, then a sample seeded so.

    As ``cluster_dataset.shuffle(seed=round)`` (datasets' numpy permutation) followed by
    ``random.seed(round); random.sample(range(len), min(n, len))``.
    """
    shuffled = permuted(rows, server_round)
    picks = random.Random(server_round).sample(range(len(shuffled)), min(n, len(shuffled)))
    return [shuffled[i] for i in picks]
