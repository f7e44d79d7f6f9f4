"""Seeded randomness and balanced quotas shared by the loaders and the partitioner."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def permuted(items: Sequence[T], seed: int) -> list[T]:
    """Return items in the order `datasets.Dataset.shuffle(seed=seed)` gives them.

    That shuffle selects `np.random.default_rng(seed).permutation(len(items))`; drawing the
    same permutation replays the reference's shuffles without building a Dataset.
    """
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def derived_rng(seed: int, *purpose: object) -> random.Random:
    """Return an RNG fixed by `seed` and a purpose, independent of other purposes."""
    # String seeds hash through SHA-512 in `random`, so they are stable across processes
    # (unlike hash()), and one purpose's draws never shift another's.
    return random.Random(":".join(str(part) for part in (seed, *purpose)))


def balanced_quotas(available: Mapping[str, int], total: int) -> dict[str, int]:
    """Split `total` as evenly as possible over keys, never above what each key has."""
    quotas = dict.fromkeys(available, 0)
    remaining = total
    # Water-filling: serve the smallest keys first so what they cannot use goes to the rest.
    ordered = sorted(available, key=lambda key: (available[key], key))
    for position, key in enumerate(ordered):
        share = remaining // (len(ordered) - position)
        quotas[key] = min(available[key], share)
        remaining -= quotas[key]
    return quotas
