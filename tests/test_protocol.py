"""The message protocol: typed messages round-trip, reply records, metric names, imports."""

import ast
from pathlib import Path

import numpy as np
import pytest

from fedrouter import protocol as p

PACKAGE = Path(__file__).resolve().parent.parent / "fedrouter"


def record(value):
    return p.to_record({"lora_A": np.full((2, 3), value, np.float32)})


def test_train_instruction_and_reply_round_trip():
    sent = p.TrainInstruction(3, [0, 1], [2, 2], 1e-3, {2: record(1.5)}, train_local_adapter=True)
    got = p.TrainInstruction.parse(sent.content())
    assert (got.server_round, got.local_clusters, got.global_clusters) == (3, [0, 1], [2, 2])
    assert got.lr == 1e-3 and got.train_local_adapter and list(got.adapters) == [2]
    assert p.from_record(got.adapters[2])["lora_A"][0, 0] == 1.5

    clusters = [p.ClusterTrained(0, 2, 10, 1.0, 50, 0.5), p.ClusterTrained(1, 2, 30, 3.0, 70, 0.7)]
    reply = p.TrainReply({2: record(0.0)}, clusters, {"pid": 7.0, "phase/training": 2.0})
    content = reply.content()
    metrics = content[p.METRICS]
    assert metrics["num-examples"] == 40.0
    assert metrics["train-loss"] == pytest.approx((1.0 * 10 + 3.0 * 30) / 40)  # = 2.5
    parsed = p.TrainReply.parse(content)
    assert parsed.weights() == {2: 40.0}
    first, second = parsed.records(node=5, partition_id=1)
    assert first["local-cluster"] == 0.0 and second["train-loss"] == 3.0
    assert first["phase/training"] == 2.0 and "phase/training" not in second  # counted once
    assert second["pid"] == 7.0 and second["cluster-size"] == 70.0


def test_cluster_and_eval_messages_round_trip():
    query = p.ClusterQuery.parse(p.ClusterQuery(3, oracle=True, send_adapter=True).content())
    assert query == p.ClusterQuery(3, True, True)

    reply = p.ClusterReply(4, np.ones((2, 3), np.float32), np.array([5, 6]), ("a", "b"))
    reply.metrics = {"local-purity": 1.0}
    got = p.ClusterReply.parse(reply.content())
    assert got.partition_id == 4 and got.local_tasks == ("a", "b") and got.adapter is None
    assert got.sizes.tolist() == [5, 6] and got.metrics == {"local-purity": 1.0}

    adapters = {0: record(0.0), 3: record(3.0)}
    tasks = ["a", "b", "c", "d"]
    sent = p.EvalInstruction(2, np.array([0, 3]), np.zeros((4, 3)), tasks, adapters, False, 0.0)
    got = p.EvalInstruction.parse(sent.content())
    assert got.clusters.tolist() == [0, 3] and sorted(got.adapters) == [0, 3]
    assert got.local_adapter_weight == 0.0  # set, even to zero, so it travels
    assert not got.route_by_task


def test_event_fields_rename_to_snake_case_with_integer_ids():
    fields = p.event_fields({"node": 1, "train-loss": 0.5, "pid": 7.0, "phase/data-load": 1.0},
                            drop=("node",))  # fmt: skip
    assert fields == {"train_loss": 0.5, "phase/data_load": 1.0, "pid": 7, "model_loads": -1}
    assert list(fields)[-2:] == ["pid", "model_loads"]


def imports_of(module: str) -> set[str]:
    """Return the fedrouter modules one module imports (inside functions too)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedrouter"):
            # `from a import b` imports the module a.b when there is one, else a's name b (the
            # package's lazy names, such as fedrouter.Router, import nothing until used)
            found.update(
                f"{node.module}.{a.name}" if _exists(f"{node.module}.{a.name}") else node.module
                for a in node.names
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fedrouter"))
    return {m for m in found if _exists(m)}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").exists()


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports_of(module))
    return seen


@pytest.mark.parametrize("client", ["fedrouter.client_app", "fedrouter.client_logic"])
def test_client_side_reaches_no_server_module(client):
    server = ("fedrouter.strategies", "fedrouter.federation", "fedrouter.server_app",
              "fedrouter.checkpoint")  # fmt: skip
    reached = reachable(client)
    assert "fedrouter.protocol" in reached
    assert not {m for m in reached if m.startswith(server)}


def test_protocol_and_methods_import_no_side():
    sides = ("fedrouter.client", "fedrouter.strategies", "fedrouter.federation",
             "fedrouter.server_app")  # fmt: skip
    for module in ("fedrouter.protocol", "fedrouter.methods"):
        assert not {m for m in reachable(module) if m.startswith(sides)}, module
