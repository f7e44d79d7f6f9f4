"""Pure aggregation maths shared by every strategy: weighted FedAvg per cluster, sampling."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


def weighted_average(adapters: Sequence[Arrays], weights: Sequence[float]) -> OrderedDict:
    """Return the weighted mean of adapters key by key (weights need not sum to one)."""
    if not adapters:
        raise ValueError("weighted_average needs at least one adapter")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {list(weights)}")
    keys = list(adapters[0].keys())
    out = OrderedDict()
    for key in keys:
        acc = np.zeros_like(adapters[0][key], dtype=np.float64)
        for adapter, weight in zip(adapters, weights, strict=True):
            acc += np.asarray(adapter[key], dtype=np.float64) * (weight / total)
        out[key] = acc.astype(np.float32)
    return out


def aggregate_by_cluster(
    current: Mapping[int, Arrays], updates: Sequence[tuple[int, Arrays, float]]
) -> dict[int, Arrays]:
    """FedAvg the updates within each cluster; a cluster nobody trained keeps its adapter.

    ``updates`` holds (cluster id, adapter, weight) triples, one per trained client.
    """
    grouped: dict[int, list[tuple[Arrays, float]]] = {}
    for cluster, arrays, weight in updates:
        if cluster not in current:
            raise KeyError(f"update for unknown cluster {cluster}")
        grouped.setdefault(cluster, []).append((arrays, weight))
    result = dict(current)
    for cluster, items in grouped.items():
        result[cluster] = weighted_average([a for a, _ in items], [w for _, w in items])
    return result


def sample_nodes(node_ids: Sequence[int], k: int, seed: int, server_round: int) -> list[int]:
    """Sample ``k`` of ``node_ids`` without replacement, reproducibly for (seed, round)."""
    if k > len(node_ids):
        raise ValueError(f"cannot sample {k} clients from {len(node_ids)}")
    rng = np.random.default_rng([seed, server_round])
    picked = rng.choice(len(node_ids), size=k, replace=False)
    return [node_ids[i] for i in sorted(picked)]
