"""The clustered strategy with mock replies: matching, per-cluster FedAvg, sampling, routing."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict

from fedrouter.protocol import (
    ADAPTER,
    CONFIG,
    METRICS,
    ROUTING,
    adapter_key,
    from_record,
    to_record,
)
from fedrouter.strategies.fedrouter import ClientInfo, ClusteredStrategy

pytestmark = pytest.mark.usefixtures("flower_server_identity")


def make_cfg(**overrides):
    base = dict(
        global_n_clusters=2, seed=111, sample_clients=4, num_clients=4, num_rounds=10,
        learning_rate=1e-3, min_learning_rate=1e-5, evaluation_mode="local",
        seeding="reference", local_schedule="round_robin",
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


def clients_two_local_clusters():
    """Three clients with two local clusters each.

    Clients 1 and 2 hold one cluster near (0,0) ('a') and one near (10,10) ('b'); client 3
    holds two clusters, both near (0,0), so both match the same global cluster.
    """
    centroids = {
        1: ([0.0, 0.1], [10.0, 10.0]),
        2: ([0.2, 0.0], [9.8, 10.1]),
        3: ([0.1, 0.2], [0.0, 0.3]),
    }
    tasks = {1: ("a", "b"), 2: ("a", "b"), 3: ("a", "a")}
    return [
        ClientInfo(node, node - 1, np.array(c, np.float32), tasks[node], (60, 40))
        for node, c in centroids.items()
    ]


def mock_reply(node, content=None, error=None):
    meta = Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
        reply_to_message_id="", group_id="", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    if error is not None:
        return Message(metadata=meta, error=Error(code=0, reason=error))
    return Message(metadata=meta, content=content)


def train_reply(node, trained, adapters, **process):
    """Build a reply in the ClientApp's format.

    ``trained`` holds one (local cluster, global cluster, examples, loss) per trained local
    cluster; ``adapters`` maps each trained global cluster to the value of its adapter.
    """
    examples = [float(n) for _, _, n, _ in trained]
    losses = [float(loss) for _, _, _, loss in trained]
    total = sum(examples)
    metrics = {
        "num-examples": total,
        "train-loss": sum(n * loss for n, loss in zip(examples, losses, strict=True)) / total,
        "local-clusters": [local for local, _, _, _ in trained],
        "global-clusters": [g for _, g, _, _ in trained],
        "examples-per-cluster": examples,
        "loss-per-cluster": losses,
        "cluster-sizes": [100.0] * len(trained),
        "seconds-per-cluster": [1.0] * len(trained),
        **process,
    }
    content = RecordDict({adapter_key(g): to_record(adapter(v)) for g, v in adapters.items()})
    content[METRICS] = MetricRecord(metrics)
    return mock_reply(node, content)


def sent_adapters(message):
    """Return {global cluster: lora_B value} of the adapters a train message carries."""
    return {
        int(key.split(".")[1]): float(from_record(record)["lora_B"][0])
        for key, record in message.content.array_records.items()
    }


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
    gb = int(strategy.assignment[2][0])
    strategy.adapters[gb] = adapter(5.0)
    messages = strategy.configure_train(1, None, None, None)
    by_node = {m.metadata.dst_node_id: m for m in messages}
    assert set(by_node) == {1, 2, 3, 4}
    assert ADAPTER not in by_node[2].content  # the adapter travels under its cluster's key
    assert sent_adapters(by_node[2]) == {gb: 5.0}
    config = by_node[2].content[CONFIG]
    assert config["local-clusters"] == [0] and config["global-clusters"] == [gb]
    # round 1 of 10 on the 1-based cosine: min + (lr - min) * (1 + cos(pi / 10)) / 2
    expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi / 10))
    assert config["lr"] == pytest.approx(expected) and config["lr"] < 1e-3


def test_weighted_average_within_cluster_and_empty_cluster_keeps_adapter(strategy):
    ga = int(strategy.assignment[1][0])
    gb = int(strategy.assignment[2][0])
    strategy.adapters[gb] = adapter(7.0)
    replies = [
        train_reply(1, [(0, ga, 10, 2.0)], {ga: 1.0}),
        train_reply(3, [(0, ga, 20, 0.5)], {ga: 4.0}),
    ]
    outcome = strategy.aggregate_train(1, replies)
    # (1*10 + 4*20) / 30 = 3
    np.testing.assert_allclose(strategy.adapters[ga]["lora_A"], np.full((2, 3), 3.0))
    np.testing.assert_array_equal(strategy.adapters[gb]["lora_A"], np.full((2, 3), 7.0))
    assert outcome.num_examples == 30
    assert outcome.train_loss == pytest.approx((2.0 * 10 + 0.5 * 20) / 30)  # = 1.0
    assert [t["partition_id"] for t in outcome.trained] == [0, 2]
    assert outcome.failures == []


def test_failed_client_is_recorded_and_its_cluster_unchanged(strategy):
    ga = int(strategy.assignment[1][0])
    before = strategy.adapters[ga]
    reason = "Traceback (most recent call last):\n  File 'x.py'\n\x1b[36mValueError: boom\x1b[39m"
    outcome = strategy.aggregate_train(1, [mock_reply(1, error=reason)])
    [recorded] = outcome.failures
    assert outcome.trained == [] and outcome.train_loss is None
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
    modes = (
        ("local", 1),
        ("global", 2),
        ("data_local_eval_global", 2),  # own tasks' data, routed among all clusters
        ("data_global_eval_local", 1),  # every task's data, routed among own clusters
    )
    for mode, expected in modes:
        s = ClusteredStrategy(make_cfg(evaluation_mode=mode))
        s.setup(clients_two_tasks(), adapter(0.0))
        message = next(iter(s.configure_evaluate(3, None, None, None)))
        routing = message.content[ROUTING]
        clusters = routing["clusters"].numpy()
        assert len(clusters) == expected, mode
        assert routing["centroids"].numpy().shape == (2, 2)
        assert all(adapter_key(int(g)) in message.content for g in clusters)


def two_local_strategy(local_schedule):
    s = ClusteredStrategy(make_cfg(sample_clients=3, num_clients=3, local_schedule=local_schedule))
    s.setup(clients_two_local_clusters(), adapter(0.0))
    ga, gb = (int(g) for g in s.assignment[1])
    assert ga != gb and s.assignment[2].tolist() == [ga, gb]
    assert s.assignment[3].tolist() == [ga, ga]
    s.adapters[ga], s.adapters[gb] = adapter(2.0), adapter(5.0)
    return s, ga, gb


def test_schedule_all_trains_every_local_cluster_with_its_global_adapter():
    s, ga, gb = two_local_strategy("all")
    by_node = {m.metadata.dst_node_id: m for m in s.configure_train(1, None, None, None)}
    config = by_node[1].content[CONFIG]
    assert config["local-clusters"] == [0, 1]
    assert config["global-clusters"] == [ga, gb]
    assert sent_adapters(by_node[1]) == {ga: 2.0, gb: 5.0}

    replies = [
        train_reply(1, [(0, ga, 10, 1.0), (1, gb, 30, 2.0)], {ga: 1.0, gb: 3.0}, pid=7.0),
        train_reply(2, [(0, ga, 20, 3.0), (1, gb, 10, 0.5)], {ga: 4.0, gb: 6.0}, pid=8.0),
    ]
    outcome = s.aggregate_train(1, replies)
    # ga: (1*10 + 4*20) / 30 = 3;  gb: (3*30 + 6*10) / 40 = 3.75
    np.testing.assert_allclose(s.adapters[ga]["lora_A"], np.full((2, 3), 3.0))
    np.testing.assert_allclose(s.adapters[gb]["lora_B"], np.full(3, 3.75))
    assert outcome.num_examples == 70
    assert outcome.train_loss == pytest.approx((1 * 10 + 2 * 30 + 3 * 20 + 0.5 * 10) / 70)
    trained = outcome.trained  # one record per trained local cluster
    assert [(t["node"], t["local-cluster"], t["global-cluster"]) for t in trained] == [
        (1, 0, ga),
        (1, 1, gb),
        (2, 0, ga),
        (2, 1, gb),
    ]
    assert [t["num-examples"] for t in trained] == [10, 30, 20, 10]


def test_round_robin_trains_one_local_cluster_per_round():
    s, ga, gb = two_local_strategy("round_robin")
    for server_round, local, g in ((1, 1, gb), (2, 0, ga)):
        by_node = {m.metadata.dst_node_id: m for m in s.configure_train(server_round, *[None] * 3)}
        config = by_node[1].content[CONFIG]
        assert config["local-clusters"] == [local] and config["global-clusters"] == [g]
        assert list(sent_adapters(by_node[1])) == [g]


def test_schedule_all_sends_one_adapter_for_two_local_clusters_of_one_global_cluster():
    s, ga, gb = two_local_strategy("all")
    by_node = {m.metadata.dst_node_id: m for m in s.configure_train(1, None, None, None)}
    config = by_node[3].content[CONFIG]
    assert config["local-clusters"] == [0, 1] and config["global-clusters"] == [ga, ga]
    assert sent_adapters(by_node[3]) == {ga: 2.0}  # one adapter, not one per local cluster

    replies = [
        train_reply(1, [(0, ga, 10, 1.0)], {ga: 0.0}),
        train_reply(3, [(0, ga, 10, 1.0), (1, ga, 30, 1.0)], {ga: 5.0}, **{"seconds/x": 2.0}),
    ]
    outcome = s.aggregate_train(1, replies)
    # client 3's one adapter weighs its 10 + 30 examples: (0*10 + 5*40) / 50 = 4
    np.testing.assert_allclose(s.adapters[ga]["lora_A"], np.full((2, 3), 4.0))
    np.testing.assert_array_equal(s.adapters[gb]["lora_A"], np.full((2, 3), 5.0))  # untrained
    node3 = [t for t in outcome.trained if t["node"] == 3]
    assert [t["local-cluster"] for t in node3] == [0, 1]
    # a reply's process fields go with its first record only, so sums count the reply once
    assert [t.get("seconds/x") for t in node3] == [2.0, None]


def eval_reply(node, n, rouge1, routing):
    metrics = {
        "num-examples": float(n), "rouge1": rouge1, "rouge2": 0.0, "rougeL": rouge1,
        "routing-accuracy": routing, "pid": 9.0,
    }  # fmt: skip
    return mock_reply(node, RecordDict({METRICS: MetricRecord(metrics)}))


def test_aggregate_evaluate_returns_clients_failures_and_example_weighted_mean(strategy):
    replies = [eval_reply(3, 30, 0.5, 1.0), eval_reply(1, 10, 0.1, 0.0), mock_reply(2, error="x")]
    outcome = strategy.aggregate_evaluate(2, replies)
    assert [e["partition_id"] for e in outcome.clients] == [0, 2]  # in partition order
    assert [f["node"] for f in outcome.failures] == [2]
    # rouge1: (0.1*10 + 0.5*30) / 40 = 0.4;  routing: (0*10 + 1*30) / 40 = 0.75
    assert outcome.mean["rouge1"] == pytest.approx(0.4)
    assert outcome.mean["routing-accuracy"] == pytest.approx(0.75)
    assert set(outcome.mean) == {"rouge1", "rouge2", "rougeL", "routing-accuracy"}
    assert strategy.aggregate_evaluate(2, [mock_reply(1, error="x")]).mean is None


def test_client_hooks_travel_as_message_fields_and_only_when_set():
    from fedrouter.methods import ClientHooks
    from fedrouter.protocol import EvalInstruction, TrainInstruction

    plain = ClusteredStrategy(make_cfg(n_clusters=1, feddpa_alpha=0.25))
    hooked = ClusteredStrategy(
        make_cfg(n_clusters=1, feddpa_alpha=0.25),
        ClientHooks(cluster_by_task=True, route_by_task=True, local_adapter=True),
    )
    for s in (plain, hooked):
        s.setup(clients_two_tasks(), adapter(0.0))
    assert not plain.cluster_query().oracle and hooked.cluster_query().oracle
    train = [next(iter(s.configure_train(1, None, None, None))).content for s in (plain, hooked)]
    assert "train-local-adapter" not in train[0][CONFIG]  # no field: the message is as before
    assert TrainInstruction.parse(train[1]).train_local_adapter
    evals = [next(iter(s.configure_evaluate(1, None, None, None))).content for s in (plain, hooked)]
    assert set(evals[0][CONFIG]) == {"server-round", "cluster-tasks"}
    parsed = EvalInstruction.parse(evals[1])
    assert parsed.route_by_task and parsed.local_adapter_weight == pytest.approx(0.75)


def test_cfl_groups_clients_by_update_direction_and_averages_within_groups():
    from fedrouter.strategies.baselines import CFLStrategy

    s = CFLStrategy(make_cfg(sim_round=2, n_clusters=1))
    s.setup(clients_two_tasks(), adapter(0.0))
    assert all(s.assignment[n].tolist() == [0] for n in (1, 2, 3, 4))

    def update(node, a, b):  # lora_B moves along (a, b, 0) from the global adapter's zeros
        arrays = {"lora_A": np.zeros((2, 3), np.float32), "lora_B": np.array([a, b, 0.0])}
        content = RecordDict({adapter_key(0): to_record(arrays)})
        reply = train_reply(node, [(0, 0, 10, 1.0)], {})
        content[METRICS] = reply.content[METRICS]
        return mock_reply(node, content)

    # round 1 is plain FedAvg: one group
    s.aggregate_train(1, [update(1, 1.0, 0.0), update(2, 0.0, 1.0)])
    assert not s.groups_formed and all(s.assignment[n].tolist() == [0] for n in (1, 2, 3, 4))
    start = s.adapters[0]["lora_B"].copy()  # (0.5, 0.5, 0)
    # round 2 = sim_round: clients 1 and 3 move along x, client 2 along y, client 4 is absent
    replies = [update(1, 2.0, 0.5), update(2, 0.5, 2.0), update(3, 3.0, 0.5)]
    s.aggregate_train(2, replies)
    g = {n: int(s.assignment[n][0]) for n in (1, 2, 3, 4)}
    assert g[1] == g[3] != g[2]
    assert g[4] == g[1]  # a client without an update joins the largest group
    # each group averages its own updates (equal weights); the other keeps nothing else
    np.testing.assert_allclose(s.adapters[g[1]]["lora_B"], [2.5, 0.5, 0.0])
    np.testing.assert_allclose(s.adapters[g[2]]["lora_B"], [0.5, 2.0, 0.0])
    np.testing.assert_allclose(start, [0.5, 0.5, 0.0])
    assert s.groups_formed
