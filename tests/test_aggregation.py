"""Weighted FedAvg, per-cluster aggregation and client sampling against hand-computed values."""

import numpy as np
import pytest

from fedrouter.strategies.aggregation import aggregate_by_cluster, sample_nodes, weighted_average


def adapter(value):
    return {"a": np.full((2, 2), value, dtype=np.float32), "b": np.array([value], np.float32)}


def test_weighted_average_matches_hand_value():
    w0, w1 = adapter(1.0), adapter(4.0)
    out = weighted_average([w0, w1], [1, 2])
    # (1*1 + 4*2) / 3 = 3
    np.testing.assert_allclose(out["a"], np.full((2, 2), 3.0))
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["a"].dtype == np.float32
    assert list(out) == ["a", "b"]


def test_weighted_average_rejects_zero_weights():
    with pytest.raises(ValueError, match="positive"):
        weighted_average([adapter(1.0)], [0])


def test_per_cluster_average_and_untrained_cluster_keeps_adapter():
    current = {0: adapter(0.0), 1: adapter(7.0), 2: adapter(9.0)}
    updates = [(0, adapter(2.0), 30.0), (0, adapter(5.0), 10.0), (2, adapter(1.0), 4.0)]
    out = aggregate_by_cluster(current, updates)
    np.testing.assert_allclose(out[0]["a"], (2 * 30 + 5 * 10) / 40)  # 2.75
    np.testing.assert_allclose(out[2]["b"], [1.0])
    assert out[1] is current[1]  # nobody trained cluster 1: it keeps its adapter


def test_update_for_unknown_cluster_is_an_error():
    with pytest.raises(KeyError):
        aggregate_by_cluster({0: adapter(0.0)}, [(3, adapter(1.0), 1.0)])


def test_sampling_takes_that_many_reproducibly():
    nodes = list(range(100, 108))
    picked = sample_nodes(nodes, 3, seed=111, server_round=4)
    assert len(picked) == len(set(picked)) == 3
    assert set(picked) <= set(nodes)
    assert picked == sample_nodes(nodes, 3, seed=111, server_round=4)
    rounds = {tuple(sample_nodes(nodes, 3, seed=111, server_round=r)) for r in range(1, 11)}
    assert len(rounds) > 1  # different rounds sample different clients
    with pytest.raises(ValueError):
        sample_nodes(nodes, 9, seed=0, server_round=1)
