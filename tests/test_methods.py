"""Every fed_alg runs end to end (2 rounds, 4 clients, tiny 4-bit model) and behaves as itself."""

import json
from collections import Counter

import pytest

from fedrouter.config import Config
from fedrouter.data import client_data_for
from fedrouter.results import read_metrics
from tests.conftest import run_simulation

pytestmark = pytest.mark.slow  # six simulations, about 5 minutes on 2 cores: run with -m slow

METHOD_FLAGS = {
    "clustered": ["--split_strategy", "multitask_multi_domain", "--n_clusters", "2"],
    "router_oracle": ["--split_strategy", "multitask_multi_domain", "--n_clusters", "2"],
    "fedavg": [],
    "local": [],
    "cfl": ["--sim_round", "1"],
    "feddpa": ["--feddpa_alpha", "0.5"],
}
ADAPTER_SLOTS = {"clustered": 4, "router_oracle": 4, "fedavg": 1, "local": 4, "cfl": 4, "feddpa": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_path):
    """Run each method once; the tiny model is built once for all of them."""
    out = {}
    for method, flags in METHOD_FLAGS.items():
        proc, run_dir = run_simulation(
            tmp_path_factory.mktemp(method), "--fed_alg", method, "--sim_alias", method, *flags
        )
        out[method] = (proc, run_dir)
    return out


@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_method_runs_and_writes_the_run_directory(runs, method):
    proc, run_dir = runs[method]
    assert proc.returncode == 0, proc.stderr[-3000:]
    slots = sorted(p.name for p in (run_dir / "adapters" / "round_2").iterdir())
    assert slots == [f"cluster_{g}" for g in range(ADAPTER_SLOTS[method])]
    evals = [e for e in read_metrics(run_dir) if e["event"] == "eval"]
    assert {e["partition_id"] for e in evals if e["round"] == 2} == {0, 1, 2, 3}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["fed_alg"] == method and "rouge1" in summary["final"]


def clustering(runs, method):
    return json.loads((runs[method][1] / "clustering.json").read_text())


def test_local_gives_each_client_its_own_adapter(runs):
    clients = clustering(runs, "local")["clients"]
    assert [c["global_cluster"] for c in clients] == [[0], [1], [2], [3]]
    trains = [e for e in read_metrics(runs["local"][1]) if e["event"] == "train"]
    assert all(e["global_cluster"] == e["partition_id"] for e in trains)


def routed_counts(event: dict) -> dict[int, int]:
    """Return {global cluster: test samples} that a client's eval event reports."""
    return {int(k.split("/c")[1]): int(v) for k, v in event.items() if k.startswith("count/c")}


def test_fedavg_trains_and_evaluates_one_adapter(runs):
    # what the clients report having trained and routed to, not the server's own assignment
    events = read_metrics(runs["fedavg"][1])
    assert {e["global_cluster"] for e in events if e["event"] == "train"} == {0}
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(routed_counts(e) == {0: e["num_examples"]} for e in evals)


def test_oracle_routes_every_sample_to_its_task(runs):
    run_dir = runs["router_oracle"][1]
    report = clustering(runs, "router_oracle")
    # multi_domain: each client holds two tasks, so two local clusters, one per task
    assert all(len(c["local_tasks"]) == 2 for c in report["clients"])
    # each test row counted in the cluster its true task was matched to, from the data itself
    cfg = Config.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    parts = client_data_for(cfg)
    for c in report["clients"]:
        slot = dict(zip(c["local_tasks"], c["global_cluster"], strict=True))
        want = Counter(int(slot[row["task"]]) for row in parts[c["partition_id"]].test)
        evals = [
            e
            for e in read_metrics(run_dir)
            if e["event"] == "eval" and e["partition_id"] == c["partition_id"]
        ]
        assert evals and all(routed_counts(e) == want for e in evals), c["partition_id"]


def test_cfl_splits_clients_into_groups_after_sim_round(runs):
    trains = [e for e in read_metrics(runs["cfl"][1]) if e["event"] == "train"]
    assert {e["global_cluster"] for e in trains if e["round"] == 1} == {0}
    evals = [e for e in read_metrics(runs["cfl"][1]) if e["event"] == "eval" and e["round"] == 2]
    routed = {int(k.split("/c")[1]) for e in evals for k in e if k.startswith("count/c")}
    assert len(routed) >= 2  # clients now evaluate with different group adapters


def test_clustered_matches_two_local_clusters_per_client(runs):
    clients = clustering(runs, "clustered")["clients"]
    assert all(len(c["global_cluster"]) == 2 for c in clients)


def test_local_schedule_all_trains_every_local_cluster_every_round(tmp_path_factory, runs):
    proc, run_dir = run_simulation(
        tmp_path_factory.mktemp("all"),
        *METHOD_FLAGS["clustered"],
        "--sim_alias", "all", "--local_schedule", "all",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    clients = json.loads((run_dir / "clustering.json").read_text())["clients"]
    matched = {c["partition_id"]: c["global_cluster"] for c in clients}
    trains = [e for e in read_metrics(run_dir) if e["event"] == "train"]
    for server_round in (1, 2):
        for pid, clusters in matched.items():
            mine = [e for e in trains if e["round"] == server_round and e["partition_id"] == pid]
            assert sorted(e["local_cluster"] for e in mine) == [0, 1]
            assert [
                e["global_cluster"] for e in sorted(mine, key=lambda e: e["local_cluster"])
            ] == [float(g) for g in clusters]
    # round_robin, by contrast, trains one local cluster a round
    rr = [e for e in read_metrics(runs["clustered"][1]) if e["event"] == "train"]
    assert len(rr) == 2 * len(matched) and len(trains) == 2 * len(rr)
