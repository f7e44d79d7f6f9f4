"""Split a benchmark's rows over clients by a named strategy, then into train and test.

Strategies (each task list is read from the rows' `task` values, sorted):

- `iid`: all rows shuffled and dealt evenly to the clients, whatever their task.
- `multitask_iid`: each task's rows are dealt evenly to all clients; every client has all tasks.
- `multitask_clusters`: one task per client, client i gets task i % T. Needs
  num_clients >= T so that every task reaches a client. When num_clients is not a multiple
  of T, the first num_clients % T tasks have one client more, and their rows are split
  over more clients.
- `multitask_multi_domain`: two tasks per client, client i gets tasks i % T and (i+1) % T,
  as in the paper. Needs T >= 2 and num_clients >= T.

A task's rows are shuffled and dealt round-robin to the clients that hold it, so no row
reaches two clients. Each client then shuffles its rows, splits them by `train_split`, and
caps train at `max_data_per_client` and test at `max_eval_size` (-1: no cap).

With `evaluation_mode="global"`, each client's test set instead covers all tasks: the
held-out rows of every client form one pool, each task's pool is dealt to the clients, and
each client takes a task-balanced test set of up to `max_eval_size` from its share. Test sets
stay disjoint from every train set and from each other.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedrouter.data.errors import DataError
from fedrouter.data.registry import ROW_KEYS
from fedrouter.data.sampling import balanced_quotas, derived_rng

logger = logging.getLogger(__name__)

Row = dict[str, str]
EVALUATION_MODES: tuple[str, ...] = ("local", "global")


@dataclass(frozen=True)
class ClientData:
    """One client's rows."""

    train: list[Row]
    test: list[Row]
    tasks: tuple[str, ...]  # sorted task names present in `train`


# --- Which tasks each client holds -------------------------------------------------------

Assign = Callable[[str, tuple[str, ...], int], list[tuple[str, ...]]]


def _all_tasks(strategy: str, tasks: tuple[str, ...], num_clients: int) -> list[tuple[str, ...]]:
    """Give every client every task."""
    return [tasks] * num_clients


def _require_clients_per_task(strategy: str, tasks: tuple[str, ...], num_clients: int) -> None:
    """Refuse a client count that would leave a task without a client."""
    if num_clients < len(tasks):
        raise DataError(
            f"{strategy} needs num_clients >= the number of tasks ({len(tasks)}: "
            f"{', '.join(tasks)}); got num_clients={num_clients}"
        )


def _one_task(strategy: str, tasks: tuple[str, ...], num_clients: int) -> list[tuple[str, ...]]:
    """Give client i task i % T."""
    _require_clients_per_task(strategy, tasks, num_clients)
    return [(tasks[i % len(tasks)],) for i in range(num_clients)]


def _two_tasks(strategy: str, tasks: tuple[str, ...], num_clients: int) -> list[tuple[str, ...]]:
    """Give client i tasks i % T and (i+1) % T."""
    if len(tasks) < 2:
        raise DataError(f"{strategy} needs at least 2 tasks; the data has {list(tasks)}")
    _require_clients_per_task(strategy, tasks, num_clients)
    n_tasks = len(tasks)
    return [
        tuple(sorted((tasks[i % n_tasks], tasks[(i + 1) % n_tasks]))) for i in range(num_clients)
    ]


# --- How rows reach the clients ----------------------------------------------------------

Deal = Callable[[dict[str, list[Row]], list[tuple[str, ...]], int], list[list[Row]]]


def _deal_pooled(
    by_task: dict[str, list[Row]], assignment: list[tuple[str, ...]], seed: int
) -> list[list[Row]]:
    """Shuffle all rows together and deal them round-robin."""
    pool = [row for task in sorted(by_task) for row in by_task[task]]
    derived_rng(seed, "deal", "pooled").shuffle(pool)
    return [pool[i :: len(assignment)] for i in range(len(assignment))]


def _deal_per_task(
    by_task: dict[str, list[Row]], assignment: list[tuple[str, ...]], seed: int
) -> list[list[Row]]:
    """Shuffle each task's rows and deal them round-robin to the clients holding it."""
    shares: list[list[Row]] = [[] for _ in assignment]
    for task in sorted(by_task):
        holders = [i for i, held in enumerate(assignment) if task in held]
        rows = list(by_task[task])
        derived_rng(seed, "deal", task).shuffle(rows)
        for position, client in enumerate(holders):
            shares[client].extend(rows[position :: len(holders)])
    return shares


@dataclass(frozen=True)
class _Strategy:
    """A split strategy: which tasks each client holds, and how rows reach them."""

    assign: Assign
    deal: Deal


_STRATEGIES: dict[str, _Strategy] = {
    "iid": _Strategy(_all_tasks, _deal_pooled),
    "multitask_iid": _Strategy(_all_tasks, _deal_per_task),
    "multitask_clusters": _Strategy(_one_task, _deal_per_task),
    "multitask_multi_domain": _Strategy(_two_tasks, _deal_per_task),
}
SPLIT_STRATEGIES: tuple[str, ...] = tuple(_STRATEGIES)


def _strategy(split_strategy: str) -> _Strategy:
    """Look a strategy up by name."""
    try:
        return _STRATEGIES[split_strategy]
    except KeyError:
        raise DataError(
            f"Unknown split_strategy {split_strategy!r}; valid: {', '.join(SPLIT_STRATEGIES)}"
        ) from None


def client_tasks(
    split_strategy: str, tasks: Sequence[str], num_clients: int
) -> list[tuple[str, ...]]:
    """Return the task set each client gets under a strategy, without touching data."""
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    ordered = tuple(sorted(set(tasks)))
    if not ordered:
        raise DataError("There are no tasks to split")
    return _strategy(split_strategy).assign(split_strategy, ordered, num_clients)


# --- Train / test per client -------------------------------------------------------------


def _cap(rows: list[Row], limit: int) -> list[Row]:
    """Keep the first `limit` rows; -1 keeps all."""
    return rows if limit == -1 else rows[:limit]


def _split(rows: list[Row], train_split: float, rng: random.Random) -> tuple[list[Row], list[Row]]:
    """Shuffle and cut rows into (train, held-out)."""
    rows = list(rows)
    rng.shuffle(rows)
    n_train = round(len(rows) * train_split)
    return rows[:n_train], rows[n_train:]


def _global_tests(held_out: list[list[Row]], max_eval_size: int, seed: int) -> list[list[Row]]:
    """Deal each task's held-out rows over all clients; take a task-balanced test from each."""
    pool: dict[str, list[Row]] = {}
    for rows in held_out:
        for row in rows:
            pool.setdefault(row["task"], []).append(row)
    n_clients = len(held_out)
    shares: list[dict[str, list[Row]]] = [{} for _ in held_out]
    for task in sorted(pool):
        rows = pool[task]
        derived_rng(seed, "global_eval", task).shuffle(rows)
        for client in range(n_clients):
            shares[client][task] = rows[client::n_clients]
    tests = []
    for share in shares:
        available = {task: len(rows) for task, rows in share.items()}
        limit = sum(available.values()) if max_eval_size == -1 else max_eval_size
        quotas = balanced_quotas(available, limit)
        tests.append([row for task in sorted(share) for row in share[task][: quotas[task]]])
    return tests


def _validate(
    rows: Sequence[Row],
    train_split: float,
    max_data_per_client: int,
    max_eval_size: int,
    evaluation_mode: str,
) -> None:
    """Reject arguments no strategy can serve."""
    if not rows:
        raise DataError("There are no rows to split")
    bad = next((row for row in rows if set(row) != set(ROW_KEYS)), None)
    if bad is not None:
        raise DataError(f"Rows must have exactly the keys {ROW_KEYS}; got {sorted(bad)}")
    if not 0.0 < train_split < 1.0:
        raise DataError(f"train_split must be in (0, 1), got {train_split}")
    for name, value in (
        ("max_data_per_client", max_data_per_client),
        ("max_eval_size", max_eval_size),
    ):
        if value == 0 or value < -1:
            raise DataError(f"{name} must be positive or -1 (no cap), got {value}")
    if evaluation_mode not in EVALUATION_MODES:
        raise DataError(
            f"Unknown evaluation_mode {evaluation_mode!r}; valid: {', '.join(EVALUATION_MODES)}"
        )


def partition(
    rows: Sequence[Row],
    *,
    split_strategy: str,
    num_clients: int,
    train_split: float = 0.8,
    max_data_per_client: int = 600,
    max_eval_size: int = 300,
    evaluation_mode: str = "local",
    seed: int = 0,
) -> list[ClientData]:
    """Split rows over `num_clients` clients by `split_strategy`; deterministic per seed."""
    _validate(rows, train_split, max_data_per_client, max_eval_size, evaluation_mode)
    strategy = _strategy(split_strategy)
    by_task: dict[str, list[Row]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    assignment = client_tasks(split_strategy, tuple(by_task), num_clients)
    shares = strategy.deal(by_task, assignment, seed)

    splits = [
        _split(share, train_split, derived_rng(seed, "split", i)) for i, share in enumerate(shares)
    ]
    trains = [_cap(train, max_data_per_client) for train, _ in splits]
    held_out = [rest for _, rest in splits]
    tests = (
        _global_tests(held_out, max_eval_size, seed)
        if evaluation_mode == "global"
        else [_cap(rest, max_eval_size) for rest in held_out]
    )
    clients = []
    for i, (train, test) in enumerate(zip(trains, tests, strict=True)):
        if not train or not test:
            raise DataError(
                f"Client {i} of {num_clients} under {split_strategy} gets {len(train)} train and "
                f"{len(test)} test rows from {len(shares[i])}; use fewer clients, more data "
                f"(dataset_sample) or another train_split"
            )
        clients.append(ClientData(train, test, tuple(sorted({row["task"] for row in train}))))
    logger.info(
        "Split %d rows over %d clients (%s, %s eval): train sizes %s, test sizes %s",
        len(rows), num_clients, split_strategy, evaluation_mode,
        [len(c.train) for c in clients], [len(c.test) for c in clients],
    )  # fmt: skip
    return clients
