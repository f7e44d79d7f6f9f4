"""The clustered strategy with mock replies: matching, per-cluster FedAvg, sampling, routing."""

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict

from fedrouter.strategies.base import (
    ADAPTER_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    ROUTING_KEY,
    ClientInfo,
    ClusteredStrategy,
    adapter_key,
    from_record,
    to_record,
)


def make_cfg(**overrides):
    base = dict(
        global_n_clusters=2, seed=111, sample_clients=4, num_clients=4, num_rounds=10,
        learning_rate=1e-3, min_learning_rate=1e-5, evaluation_mode="local",
    )  # fmt: skip
    return SimpleNamespace(**{**base, **overrides})


def adapter(value):
    return {"lora_A": np.full((2, 3), value, np.float32), "lora_B": np.full(3, value, np.float32)}


def clients_two_tasks():
    """Four clients, one local cluster each: two near (0,0) ('a'), two near (10,10) ('b')."""
    points = {1: [0.0, 0.1], 2: [10.0, 10.0], 3: [0.2, 0.0], 4: [9.8, 10.1]}
    tasks = {1: "a", 2: "b", 3: "a", 4: "b"}
    return [
        ClientInfo(node, node - 1, np.array([p], np.float32), (tasks[node],), (100,))
        for node, p in points.items()
    ]


def mock_reply(node, content=None, error=None):
    meta = Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
        reply_to_message_id="", group_id="", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    if error is not None:
        return Message(metadata=meta, error=Error(code=0, reason=error))
    return Message(metadata=meta, content=content)


def train_reply(node, global_cluster, value, examples):
    metrics = {
        "num-examples": float(examples), "train-loss": 1.0, "global-cluster": float(global_cluster),
    }  # fmt: skip
    return mock_reply(
        node,
        RecordDict({ADAPTER_KEY: to_record(adapter(value)), METRICS_KEY: MetricRecord(metrics)}),
    )


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """Give messages built outside a Flower runtime the identity the runtime would set."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)


@pytest.fixture()
def strategy():
    s = ClusteredStrategy(make_cfg())
    s.setup(clients_two_tasks(), adapter(0.0))
    return s


def test_global_clusters_group_clients_of_one_task(strategy):
    g = {node: int(strategy.assignment[node][0]) for node in (1, 2, 3, 4)}
    assert g[1] == g[3] and g[2] == g[4] and g[1] != g[2]
    assert sorted(strategy.cluster_tasks) == ["a", "b"]
    assert strategy.cluster_tasks[g[1]] == "a"


def test_each_client_gets_its_clusters_adapter(strategy):
    strategy.adapters[int(strategy.assignment[2][0])] = adapter(5.0)
    messages = strategy.configure_train(1, None, None, None)
    by_node = {m.metadata.dst_node_id: m for m in messages}
    assert set(by_node) == {1, 2, 3, 4}
    sent = from_record(by_node[2].content[ADAPTER_KEY])
    np.testing.assert_array_equal(sent["lora_B"], np.full(3, 5.0))
    config = by_node[2].content[CONFIG_KEY]
    assert config["global-cluster"] == int(strategy.assignment[2][0])
    assert config["lr"] == pytest.approx(1e-3)  # round 1 of the cosine schedule


def test_weighted_average_within_cluster_and_empty_cluster_keeps_adapter(strategy):
    ga = int(strategy.assignment[1][0])
    gb = int(strategy.assignment[2][0])
    strategy.adapters[gb] = adapter(7.0)
    replies = [train_reply(1, ga, 1.0, 10), train_reply(3, ga, 4.0, 20)]
    strategy.aggregate_train(1, replies)
    # (1*10 + 4*20) / 30 = 3
    np.testing.assert_allclose(strategy.adapters[ga]["lora_A"], np.full((2, 3), 3.0))
    np.testing.assert_array_equal(strategy.adapters[gb]["lora_A"], np.full((2, 3), 7.0))


def test_failed_client_is_recorded_and_its_cluster_unchanged(strategy):
    ga = int(strategy.assignment[1][0])
    before = strategy.adapters[ga]
    reason = "Traceback (most recent call last):\n  File 'x.py'\n\x1b[36mValueError: boom\x1b[39m"
    strategy.aggregate_train(1, [mock_reply(1, error=reason)])
    [recorded] = strategy.last_outcome.failures
    assert recorded["node"] == 1 and recorded["error"] == "ValueError: boom"
    assert "Traceback" in recorded["detail"]
    assert strategy.adapters[ga] is before


def test_sample_clients_below_num_clients_samples_that_many():
    s = ClusteredStrategy(make_cfg(sample_clients=2))
    s.setup(clients_two_tasks(), adapter(0.0))
    for server_round in range(1, 6):
        nodes = [m.metadata.dst_node_id for m in s.configure_train(server_round, None, None, None)]
        assert len(nodes) == len(set(nodes)) == 2


def test_local_mode_sends_only_own_clusters_global_mode_sends_all():
    for mode, expected in (("local", 1), ("global", 2)):
        s = ClusteredStrategy(make_cfg(evaluation_mode=mode))
        s.setup(clients_two_tasks(), adapter(0.0))
        message = next(iter(s.configure_evaluate(3, None, None, None)))
        routing = message.content[ROUTING_KEY]
        clusters = routing["clusters"].numpy()
        assert len(clusters) == expected
        assert routing["centroids"].numpy().shape == (2, 2)
        assert all(adapter_key(int(g)) in message.content for g in clusters)
