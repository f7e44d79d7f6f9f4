"""Split a benchmark's train and test pools over clients, as the reference's Flower path does.

The pools come from `loaders.load_benchmark` (one global train/test split, seed 0). Each pool
is split over the clients by a named strategy, the train pool capped at
`max_data_per_client` and the test pool at `max_eval_size` rows per client (-1: no cap).
Every split starts with one shuffle of the pool by the run seed; a "shard" is a contiguous
share, as `datasets.Dataset.shard` cuts it. Tasks come in the benchmark registry's order T.

- `iid` and `multitask_iid`: the shuffled pool cut into `num_clients` disjoint shards, so
  every client holds every task.
- `multitask_clusters`: clients form T consecutive blocks, client i in block
  `i * T // num_clients` (the reference's `i // (num_clients // T)` when T divides
  num_clients); block b holds task b. A task's rows, shuffled again by the seed, are
  sharded over its block.
- `multitask_multi_domain`: block b holds tasks b and b+1 (mod T): the first half of task
  b's rows and the second half of task b+1's, concatenated, shuffled by the seed and sharded
  over the block. No row reaches two blocks.

The test pool follows the evaluation mode (`EVALUATION_MODES`): `local` and
`data_local_eval_global` split it like the train pool, so a client is tested on its own
tasks; `global` and `data_global_eval_local` split it with `multitask_iid` (`iid` stays
`iid`), so every client is tested on every task. Where the reference cannot work as
written, this module keeps a working rule (README, "Fidelity to the reference"):
`multitask_iid` re-shuffled inside its client loop there, so shards overlapped; a client
count that T does not divide failed there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fedrouter.data.errors import DataError
from fedrouter.data.registry import ROW_KEYS
from fedrouter.data.sampling import permuted

logger = logging.getLogger(__name__)

Row = dict[str, str]
SPLIT_STRATEGIES: tuple[str, ...] = (
    "iid",
    "multitask_iid",
    "multitask_clusters",
    "multitask_multi_domain",
)
# mode -> (test data drawn like the client's own train data, routing among all clusters)
_EVALUATION_MODES: dict[str, tuple[bool, bool]] = {
    "local": (True, False),
    "global": (False, True),
    "data_local_eval_global": (True, True),
    "data_global_eval_local": (False, False),
}
EVALUATION_MODES: tuple[str, ...] = tuple(_EVALUATION_MODES)


def routes_globally(evaluation_mode: str) -> bool:
    """Return whether a mode routes test samples among all global clusters."""
    return _EVALUATION_MODES[evaluation_mode][1]


def eval_split_strategy(split_strategy: str, evaluation_mode: str) -> str:
    """Return the strategy that splits the test pool under an evaluation mode."""
    if _EVALUATION_MODES[evaluation_mode][0] or split_strategy == "iid":
        return split_strategy
    return "multitask_iid"


@dataclass(frozen=True)
class ClientData:
    """One client's rows."""

    train: list[Row]
    test: list[Row]
    tasks: tuple[str, ...]  # sorted task names present in `train`


def shard(rows: Sequence[Row], num_shards: int, index: int) -> list[Row]:
    """Return the `index`-th of `num_shards` contiguous, near-equal shares of `rows`."""
    size, extra = divmod(len(rows), num_shards)
    start = size * index + min(index, extra)
    return list(rows[start : start + size + (1 if index < extra else 0)])


def _cap(rows: list[Row], limit: int) -> list[Row]:
    """Keep the first `limit` rows; -1 keeps all."""
    return rows if limit == -1 else rows[:limit]


def task_blocks(num_clients: int, n_tasks: int) -> list[int]:
    """Return each client's block: the index of its (first) task."""
    return [i * n_tasks // num_clients for i in range(num_clients)]


def client_tasks(
    split_strategy: str, tasks: Sequence[str], num_clients: int
) -> list[tuple[str, ...]]:
    """Return the tasks each client gets under a strategy, in registry order, without data."""
    _check_strategy(split_strategy, tasks, num_clients)
    tasks = tuple(tasks)
    if split_strategy in ("iid", "multitask_iid"):
        return [tasks] * num_clients
    blocks = task_blocks(num_clients, len(tasks))
    if split_strategy == "multitask_clusters":
        return [(tasks[b],) for b in blocks]
    return [(tasks[b], tasks[(b + 1) % len(tasks)]) for b in blocks]


def _check_strategy(split_strategy: str, tasks: Sequence[str], num_clients: int) -> None:
    """Refuse a strategy, task list or client count that cannot be split."""
    if split_strategy not in SPLIT_STRATEGIES:
        raise DataError(
            f"Unknown split_strategy {split_strategy!r}; valid: {', '.join(SPLIT_STRATEGIES)}"
        )
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if not tasks:
        raise DataError("There are no tasks to split")
    if split_strategy == "multitask_multi_domain" and len(tasks) < 2:
        raise DataError(f"{split_strategy} needs at least 2 tasks; the data has {list(tasks)}")
    if split_strategy.startswith("multitask_") and split_strategy != "multitask_iid":
        if num_clients < len(tasks):
            raise DataError(
                f"{split_strategy} needs num_clients >= the number of tasks ({len(tasks)}: "
                f"{', '.join(tasks)}); got num_clients={num_clients}"
            )


def split_rows(
    rows: Sequence[Row],
    tasks: Sequence[str],
    *,
    split_strategy: str,
    num_clients: int,
    cap: int,
    seed: int,
) -> list[list[Row]]:
    """Split one pool over the clients by a strategy; return each client's rows."""
    _check_strategy(split_strategy, tasks, num_clients)
    rows = permuted(rows, seed)
    if split_strategy in ("iid", "multitask_iid"):
        return [_cap(shard(rows, num_clients, i), cap) for i in range(num_clients)]
    by_task: dict[str, list[Row]] = {task: [] for task in tasks}
    for row in rows:
        if row["task"] not in by_task:
            raise DataError(f"A row's task {row['task']!r} is not one of {', '.join(tasks)}")
        by_task[row["task"]].append(row)
    blocks = task_blocks(num_clients, len(tasks))
    pools: dict[int, list[Row]] = {}
    for b in sorted(set(blocks)):
        first = by_task[tasks[b]]
        if split_strategy == "multitask_clusters":
            pool = first
        else:
            second = by_task[tasks[(b + 1) % len(tasks)]]
            pool = first[: len(first) // 2] + second[len(second) // 2 :]
        pools[b] = permuted(pool, seed)
    shares = []
    for i, b in enumerate(blocks):
        holders = [j for j, other in enumerate(blocks) if other == b]
        shares.append(_cap(shard(pools[b], len(holders), holders.index(i)), cap))
    return shares


def _validate(
    train: Sequence[Row], test: Sequence[Row], max_data_per_client: int, max_eval_size: int
) -> None:
    """Reject pools and caps no strategy can serve."""
    if not train or not test:
        raise DataError(f"There are no rows to split ({len(train)} train, {len(test)} test)")
    bad = next((row for row in (*train, *test) if set(row) != set(ROW_KEYS)), None)
    if bad is not None:
        raise DataError(f"Rows must have exactly the keys {ROW_KEYS}; got {sorted(bad)}")
    for name, value in (
        ("max_data_per_client", max_data_per_client),
        ("max_eval_size", max_eval_size),
    ):
        if value == 0 or value < -1:
            raise DataError(f"{name} must be positive or -1 (no cap), got {value}")


def partition(
    train: Sequence[Row],
    test: Sequence[Row],
    *,
    tasks: Sequence[str],
    split_strategy: str,
    num_clients: int,
    max_data_per_client: int = 600,
    max_eval_size: int = 300,
    evaluation_mode: str = "local",
    seed: int = 0,
) -> list[ClientData]:
    """Split the train and test pools over `num_clients` clients; deterministic per seed."""
    _validate(train, test, max_data_per_client, max_eval_size)
    if evaluation_mode not in _EVALUATION_MODES:
        raise DataError(
            f"Unknown evaluation_mode {evaluation_mode!r}; valid: {', '.join(EVALUATION_MODES)}"
        )
    common = {"num_clients": num_clients, "seed": seed}
    trains = split_rows(
        train, tasks, split_strategy=split_strategy, cap=max_data_per_client, **common
    )
    tests = split_rows(
        test,
        tasks,
        split_strategy=eval_split_strategy(split_strategy, evaluation_mode),
        cap=max_eval_size,
        **common,
    )
    clients = []
    for i, (train_rows, test_rows) in enumerate(zip(trains, tests, strict=True)):
        if not train_rows or not test_rows:
            raise DataError(
                f"Client {i} of {num_clients} under {split_strategy} gets {len(train_rows)} "
                f"train and {len(test_rows)} test rows; use fewer clients, more data "
                f"(dataset_sample) or another train_split"
            )
        tasks_held = tuple(sorted({row["task"] for row in train_rows}))
        clients.append(ClientData(train_rows, test_rows, tasks_held))
    logger.info(
        "Split %d train and %d test rows over %d clients (%s, %s eval): "
        "train sizes %s, test sizes %s",
        len(train), len(test), num_clients, split_strategy, evaluation_mode,
        [len(c.train) for c in clients], [len(c.test) for c in clients],
    )  # fmt: skip
    return clients
