"""A finished run as a router (fedrouter.router, fedrouter.predict), on the shared tiny run:
a client's own test rows are routed and scored as the run's evaluation did, an exported router
routes and answers exactly as the run directory's, and the CLI reads stdin lines and JSONL."""

import io
import json

import numpy as np
import pytest

from fedrouter import predict
from fedrouter.router import Router, RouterError


@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run[1]


@pytest.fixture(scope="module")
def run_cfg(run_dir):
    from fedrouter.config import Config
    from fedrouter.results import read_run_config

    return Config.from_dict(read_run_config(run_dir)["config"])


@pytest.fixture(scope="module")
def test_rows(run_cfg):
    """Each client's own test rows, as the run's clients load them."""
    from fedrouter.data import client_data_for

    return [part.test for part in client_data_for(run_cfg)]


@pytest.fixture(scope="module")
def router0(run_dir):
    return Router.from_run(run_dir, client=0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_predict(capsys, *argv):
    """Run the CLI in this process (the base model stays loaded); return its output lines."""
    predict.main([str(a) for a in argv])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def expected_routes(run_cfg, run_dir, router, client, rows):
    """Route rows as the run's evaluation does: the strategy's clusters for the client, and
    the client's embedding and routing of its test rows."""
    from fedrouter.client_logic import embed_instructions
    from fedrouter.clustering import route
    from fedrouter.results import read_clustering
    from fedrouter.strategies.fedrouter import ClusteredStrategy

    clustering = read_clustering(run_dir)
    strategy = ClusteredStrategy(run_cfg)
    strategy.assignment = {
        c["partition_id"]: np.asarray(c["global_cluster"]) for c in clustering["clients"]
    }
    model, tokenizer = router.model_and_tokenizer()
    points = embed_instructions(
        model, tokenizer, rows, batch_size=run_cfg.eval_batch_size, max_length=run_cfg.seq_length
    )
    centroids = np.asarray(clustering["global_centroids"], dtype=np.float32)
    return route(points, centroids, allowed=strategy.eval_clusters(client))


def test_client_rows_are_routed_and_scored_as_the_run_evaluated_them(
    run_dir, run_cfg, test_rows, router0, tmp_path, capsys
):
    from fedrouter.results import read_events

    last_round = max(run_cfg.evaluation_rounds)
    evals = {
        e["partition_id"]: e for e in read_events(run_dir).of("eval") if e["round"] == last_round
    }
    for client in (0, 2):
        rows = test_rows[client]
        records = run_predict(
            capsys, run_dir, "--input", write_jsonl(tmp_path / f"c{client}.jsonl", rows),
            "--client", client,
        )  # fmt: skip
        routes = np.array([r["cluster"] for r in records])
        want = expected_routes(run_cfg, run_dir, router0, client, rows)
        np.testing.assert_array_equal(routes, want)
        # the run recorded how many of the client's rows went to each cluster
        event = evals[client]
        counts = {int(k[len("count/c") :]): int(v) for k, v in event.items() if "count/c" in k}
        assert dict(zip(*np.unique(routes, return_counts=True), strict=True)) == counts
        # every input field is kept; ROUGE-1 matches the run's for the same rows
        assert all(r["task"] == row["task"] for r, row in zip(records, rows, strict=True))
        rouge1 = np.mean([r["rouge"]["rouge1"] for r in records])
        assert abs(rouge1 - event["rouge1"]) <= 0.02, (client, rouge1, event["rouge1"])


def test_local_routing_keeps_to_the_clients_own_clusters(run_dir, test_rows, router0):
    # client 2's rows (another task) sent with client 0: only client 0's clusters are allowed
    texts = [row["instruction"] for row in test_rows[2]]
    everywhere = Router.from_run(run_dir, routing="global").route(texts)
    own = router0.route(texts)
    assert {r.cluster for r in own} <= {int(g) for g in router0.allowed}
    assert {r.cluster for r in everywhere} != {r.cluster for r in own}  # the check means something
    for r in everywhere:
        assert r.second_distance is not None and r.distance <= r.second_distance


def test_export_round_trip_routes_and_answers_exactly_as_the_run(
    run_dir, test_rows, router0, tmp_path
):
    out = router0.export(tmp_path / "router")
    texts = [row["instruction"] for row in test_rows[0][:4] + test_rows[3][:4]]
    from_dir = Router.from_dir(out, client=0)
    routes = router0.route(texts)
    assert from_dir.route(texts) == routes
    assert from_dir.generate(texts, routes) == router0.generate(texts, routes)
    assert from_dir.generate(texts[:2]) == router0.generate(texts[:2])  # routing inside too
    # every client's matching travels: --client works after export
    for client in (1, 3):
        exported = Router.from_dir(out, client=client)
        np.testing.assert_array_equal(
            exported.allowed, Router.from_run(run_dir, client=client).allowed
        )
    settings = json.loads((out / "router.json").read_text())
    assert settings["cluster_tasks"] == router0.cluster_tasks
    assert {"base_model", "template", "embedding"} <= set(settings)
    for g in range(len(router0.cluster_tasks)):
        adapter = out / "adapters" / f"cluster_{g}"
        assert (adapter / "adapter_config.json").is_file()
        source = run_dir / "adapters" / f"round_{settings['source']['round']}" / f"cluster_{g}"
        weights = "adapter_model.safetensors"
        assert (adapter / weights).read_bytes() == (source / weights).read_bytes()


def test_export_refuses_a_non_empty_folder_and_leaves_nothing_when_cut_short(
    router0, tmp_path, monkeypatch
):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(RouterError, match="not empty"):
        router0.export(taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fedrouter.router.np.savez", crash)
    with pytest.raises(OSError):
        router0.export(tmp_path / "cut")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no folder, no hidden sibling


def test_cli_reads_stdin_lines_and_forces_a_cluster(run_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Ann: Hi Bo\n\nwho is the founder of Deltaline\n"))
    records = run_predict(capsys, run_dir, "--client", 1)
    assert [r["instruction"] for r in records] == ["Ann: Hi Bo", "who is the founder of Deltaline"]
    assert all("rouge" not in r and isinstance(r["answer"], str) for r in records)
    monkeypatch.setattr("sys.stdin", io.StringIO("Ann: Hi Bo\nwho founded it\n"))
    records = run_predict(capsys, run_dir, "--cluster", 2)
    assert [(r["cluster"], r["second_distance"]) for r in records] == [(2, None), (2, None)]


def test_cli_keeps_jsonl_fields_and_scores_rows_with_a_response(run_dir, tmp_path, capsys):
    rows = [
        {"id": 7, "instruction": "Ann: Hi Bo", "response": "Ann greets Bo."},
        {"instruction": "x"},
    ]
    out = tmp_path / "pred.jsonl"
    predict.main([str(run_dir), "--input", str(write_jsonl(tmp_path / "in.jsonl", rows)),
                  "--client", "2", "--output", str(out)])  # fmt: skip
    assert capsys.readouterr().out == ""
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["id"] == 7 and set(first["rouge"]) == {"rouge1", "rouge2", "rougeL"}
    assert "rouge" not in second
    keys = ["cluster", "cluster_task", "distance", "second_distance", "answer"]
    assert all(k in first for k in keys)


def test_input_readers_skip_blank_lines_and_name_the_bad_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "id": 1}\n\n{"instruction": "b"}\n')
    assert predict.read_jsonl(good) == [{"instruction": "a", "id": 1}, {"instruction": "b"}]
    assert predict.read_lines(io.StringIO("a\r\n \nb\n")) == [
        {"instruction": "a"},
        {"instruction": "b"},
    ]
    for n, text in enumerate(
        [b"[1, 2]\n", b'{"instruction": "\xff"}\n', b'{"instruction": " "}\n']
    ):
        bad = tmp_path / f"bad{n}.jsonl"
        bad.write_bytes(b'{"instruction": "fine"}\n' + text)
        with pytest.raises(predict.InputError, match=f"bad{n}.jsonl:2 "):
            predict.read_jsonl(bad)
    with pytest.raises(predict.InputError, match="standard input is empty"):
        predict.read_lines(io.StringIO("\n\n"))


@pytest.mark.slow  # two fresh processes, each importing torch and loading the model
def test_cli_in_its_own_process_exports_and_answers_from_the_folder(run_dir, tmp_path):
    import subprocess
    import sys

    def cli(*args, stdin=""):
        cmd = [sys.executable, "-m", "fedrouter.predict", *map(str, args)]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    exported = tmp_path / "router"
    cli(run_dir, "--export", exported)
    proc = cli(exported, "--client", "1", stdin="Ann: Hi Bo\nwho founded it\n")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["instruction"] for r in lines] == ["Ann: Hi Bo", "who founded it"]
    assert "routed: cluster" in proc.stderr  # logs go to stderr, under fedrouter's logger
    # a fresh process answers as this one does
    router = Router.from_run(run_dir, client=1)
    texts = ["Ann: Hi Bo", "who founded it"]
    routes, answers = router.route(texts), router.generate(texts)
    want = [
        {"instruction": t, **r.to_json(), "answer": a}
        for t, r, a in zip(texts, routes, answers, strict=True)
    ]
    assert lines == want
