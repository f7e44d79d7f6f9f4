"""The report: seed statistics, relative gains, unfinished runs, CSV, plots and the CLI."""

import csv
import json
import os
import subprocess
import sys

import pytest

from fedrouter.events import EventLog
from fedrouter.report import (
    COMPLETE,
    FAILED,
    INCOMPLETE,
    aggregate,
    collect_runs,
    format_duration,
    format_gain,
    format_mean_std,
    main,
    relative_gain,
    rounds_trained,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["data2text", "headline"]
CLUSTERING = {
    "global_centroids": [[0.0, 1.0], [1.0, 0.0]],
    "cluster_tasks": TASKS,
    "clients": [
        {"partition_id": 1, "local_tasks": ["headline"], "local_sizes": [300],
         "global_cluster": [1], "local_centroids": [[1.0, 0.0]]},
        {"partition_id": 0, "local_tasks": ["data2text", "headline"], "local_sizes": [600, 200],
         "global_cluster": [0, 1], "local_centroids": [[0.0, 1.0], [1.0, 0.0]]},
    ],
}  # fmt: skip


def write_run(
    root,
    name,
    method,
    seed,
    scenario="single",
    final=None,
    events=(),
    clustering=None,
    wall=1.0,
    overlap=None,
):
    """Write a run directory; ``final`` = (rouge1, rougeL, routing) makes it complete."""
    run = root / name
    run.mkdir(parents=True)
    config = {"fed_alg": method, "seed": seed, "num_rounds": 4, "sim_alias": "t"}
    if overlap is not None:
        config["synthetic_overlap"] = overlap
    if scenario is not None:
        config["scenario"] = scenario
    (run / "config.json").write_text(json.dumps({"fedrouter_version": "0.1.0", "config": config}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if clustering is not None:
        (run / "clustering.json").write_text(json.dumps(clustering))
    if final is not None:
        r1, rl, routing = final
        metrics = {"rouge1": r1, "rouge2": r1 / 2, "rougeL": rl, "routing-accuracy": routing}
        half = {k: v / 2 for k, v in metrics.items()}
        summary = {
            "fed_alg": method,
            "seed": seed,
            "num_rounds": 4,
            "wall_seconds": wall,
            "final_round": 4,
            "final": metrics,
            "final_per_client": {"0": {"rouge1": r1, "rouge2": r1 / 2, "rougeL": rl}},
            "by_round": {"2": half, "4": metrics},
            "model_loads_per_process": {"1": 1},
        }
        (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    """An output folder: clustered and fedavg × 2 seeds, local, generalization, 2 unfinished."""
    root = tmp_path_factory.mktemp("output")
    # Global cluster 0 trained in rounds 1 and 2 (by two clients in round 1), cluster 1 in 1.
    trained = [
        # two clients' local k-means purity; -1 is a client that did not report it
        {"event": "clustering", "partition_id": 0, "local_purity": 0.5},
        {"event": "clustering", "partition_id": 1, "local_purity": 1.0},
        {"event": "clustering", "partition_id": 2, "local_purity": -1.0},
        {"event": "train", "round": 1, "partition_id": 0, "global_cluster": 0.0},
        {"event": "train", "round": 1, "partition_id": 1, "global_cluster": 0.0},
        {"event": "train", "round": 2, "partition_id": 0, "global_cluster": 0.0},
        {"event": "train", "round": 2, "partition_id": 1, "global_cluster": 1.0},
        {"event": "eval", "round": 2, "partition_id": 0, "rouge1": 0.3},
    ]
    write_run(
        root,
        "a/clustered_s1",
        "clustered",
        1,
        final=(0.6, 0.5, 0.9),
        clustering=CLUSTERING,
        events=trained,
    )
    write_run(
        root,
        "a/clustered_s2",
        "clustered",
        2,
        final=(0.8, 0.7, 1.0),
        clustering=CLUSTERING,
        wall=7200.0,
    )
    write_run(root, "a/fedavg_s1", "fedavg", 1, final=(0.5, 0.4, 0.25), clustering=CLUSTERING)
    write_run(root, "a/fedavg_s2", "fedavg", 2, final=(0.7, 0.6, 0.75))
    write_run(root, "a/local_s1", "local", 1, final=(0.8, 0.7, 1.0))
    write_run(root, "b/gen_s1", "clustered", 1, "generalization", final=(0.55, 0.45, 0.5))
    write_run(
        root,
        "c/crashed",
        "clustered",
        3,
        events=[
            {"event": "train", "round": 1, "partition_id": 0},
            {"event": "eval", "round": 2, "partition_id": 0, "rouge1": 0.3, "rouge2": 0.1,
             "rougeL": 0.2, "routing_accuracy": 1.0, "num_examples": 10},
            {"event": "train", "round": 3, "partition_id": 0},
        ],
    )  # fmt: skip
    write_run(
        root,
        "c/failed",
        "fedavg",
        3,
        events=[
            {"event": "failure", "phase": "train", "round": 1, "error": "CUDA | out of memory"}
        ],
    )
    # A model folder also has a config.json, without our "config" key: not a run.
    (root / "a/clustered_s1/tiny_model").mkdir()
    (root / "a/clustered_s1/tiny_model/config.json").write_text('{"model_type": "llama"}')
    return root


@pytest.fixture(scope="module")
def report(output_dir, tmp_path_factory):
    """Run the CLI once (plots are the slow part) into a separate --out folder."""
    out = tmp_path_factory.mktemp("report")
    written = main([str(output_dir), "--out", str(out)])
    return out, written


def table(markdown: str, title: str) -> dict[str, list[str]]:
    """Return the rows of the table under ``## title``, keyed by their first cell."""
    section = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header, *body = rows
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in [header, *body]]
    return {c[0]: c[1:] for c in cells}


def test_relative_gain_and_formatting():
    assert relative_gain(0.7, 0.6) == pytest.approx(100 / 6)
    assert relative_gain(0.5, None) is None
    assert relative_gain(0.5, 0.0) is None
    assert format_gain(100 / 6) == "+16.7%"
    assert format_gain(-25.0) == "-25.0%"
    assert format_gain(None) == "n/a"
    assert format_mean_std(0.7, 0.1414213, 2) == "0.7000 ± 0.1414 (n=2)"
    assert format_mean_std(0.55, None, 1) == "0.5500 (n=1)"


def test_collect_runs_statuses(output_dir):
    runs = {r.path.relative_to(output_dir).as_posix(): r for r in collect_runs(output_dir)}
    assert len(runs) == 8  # the tiny model's config.json is not a run
    assert runs["a/clustered_s1"].status == COMPLETE
    assert runs["a/clustered_s1"].by_round[2]["rouge1"] == pytest.approx(0.3)
    assert runs["a/clustered_s1"].clustering["cluster_tasks"] == TASKS
    assert runs["a/fedavg_s2"].clustering is None
    crashed = runs["c/crashed"]
    assert (crashed.status, crashed.last_round) == (INCOMPLETE, 2)
    assert "last trained round 3 of 4" in crashed.note
    assert runs["c/failed"].status == FAILED
    assert runs["c/failed"].last_round is None


def test_missing_scenario_is_custom(tmp_path):
    write_run(tmp_path, "old", "fedavg", 7, scenario=None, final=(0.4, 0.3, 0.0))
    (run,) = collect_runs(tmp_path)
    assert (run.scenario, run.seed, run.status) == ("custom", 7, COMPLETE)


def test_aggregate_by_hand(output_dir):
    rows = {(r.method, r.scenario): r for r in aggregate(collect_runs(output_dir))}
    assert list(rows) == [
        ("clustered", "single"),
        ("clustered", "generalization"),
        ("fedavg", "single"),
        ("local", "single"),
    ]
    clustered = rows[("clustered", "single")]
    assert clustered.n_seeds == 2  # the crashed seed 3 is not averaged
    assert clustered.rouge1_mean == pytest.approx(0.7)
    assert clustered.rouge1_std == pytest.approx(0.1414214)  # |0.8 - 0.6| / sqrt(2)
    assert clustered.rougeL_mean == pytest.approx(0.6)
    assert clustered.routing_accuracy_mean == pytest.approx(0.95)
    assert clustered.rel_to_fedavg_pct == pytest.approx((0.7 - 0.6) / 0.6 * 100)
    assert clustered.rel_to_local_pct == pytest.approx(-12.5)
    gen = rows[("clustered", "generalization")]
    assert (gen.n_seeds, gen.rouge1_std, gen.rel_to_fedavg_pct) == (1, None, None)


def test_markdown_tables(report):
    out, _ = report
    markdown = (out / "results.md").read_text()
    rouge1 = table(markdown, "Final ROUGE-1")
    assert rouge1["Method"] == ["single", "generalization"]
    assert list(rouge1)[1:] == ["FedRouter (clustered)", "fedavg", "local"]
    assert rouge1["FedRouter (clustered)"] == ["0.7000 ± 0.1414 (n=2)", "0.5500 (n=1)"]
    assert rouge1["fedavg"] == ["0.6000 ± 0.1414 (n=2)", "—"]
    assert rouge1["local"] == ["0.8000 (n=1)", "—"]
    assert table(markdown, "Final ROUGE-L")["FedRouter (clustered)"][0] == "0.6000 ± 0.1414 (n=2)"
    gains = table(markdown, "Relative ROUGE-1 gain")
    assert gains["Method"][:2] == ["single vs FedAvg", "single vs Local"]
    assert gains["FedRouter (clustered)"] == ["+16.7%", "-12.5%", "n/a", "n/a"]
    assert gains["fedavg"][:2] == ["+0.0%", "-25.0%"]
    routing = table(markdown, "Routing accuracy")
    assert routing["FedRouter (clustered)"] == ["0.9500", "0.5000"]
    # FedAvg and Local do not route among global adapters: their figure is left out, and said so
    assert list(routing) == ["Method", "FedRouter (clustered)"]
    assert "Left out: fedavg, local." in markdown
    # Only a/clustered_s1 reports purity (0.5 and 1.0; -1 is a client that did not): 0.75.
    purity = table(markdown, "Local cluster purity")
    assert purity == {"Method": ["single"], "FedRouter (clustered)": ["0.750"]}


def test_per_run_details_and_wall_time(report):
    out, _ = report
    markdown = (out / "results.md").read_text()
    details = table(markdown, "Per-run details")
    assert details["Path"][-2:] == ["Rounds trained per global adapter", "Note"]
    assert details["`a/clustered_s1`"] == [
        "FedRouter (clustered)", "single", "1", "0.6000", "0.9000", "0.750", "1", "2, 1", "—",
    ]  # fmt: skip
    # no clustering or train events: nothing invented
    assert details["`a/clustered_s2`"][5:] == ["—", "7200", "—", "—"]
    # Averaged runs only, ordered by scenario then method then seed; unfinished ones are not here.
    assert list(details)[1:] == [
        "`a/clustered_s1`", "`a/clustered_s2`", "`a/fedavg_s1`", "`a/fedavg_s2`",
        "`a/local_s1`", "`b/gen_s1`",
    ]  # fmt: skip
    # Six averaged runs: 7200 s + 5 x 1 s.
    assert "2h00m05s in all over 6 runs; per run 20m01s mean, 1s to 2h00m00s." in markdown


def test_rounds_trained_counts_rounds_not_clients():
    events = [
        {"event": "train", "round": 3, "global_cluster": 2},
        {"event": "train", "round": 3, "global_cluster": 2},
        {"event": "train", "round": 1, "global_cluster": 0.0},
        {"event": "train", "round": 1},  # no cluster: ignored
        {"event": "eval", "round": 2, "global_cluster": 0},  # not training: ignored
    ]
    trains = EventLog(events, []).trains()
    assert rounds_trained(trains) == {0: 1, 2: 1}
    # Cluster 1 of 4 never trained: it counts 0, and so does cluster 3, rather than vanish.
    assert rounds_trained(trains, n_clusters=4) == {0: 1, 1: 0, 2: 1, 3: 0}
    assert rounds_trained([]) == {}
    assert rounds_trained([], n_clusters=4) == {}  # no train events: nothing is known


def test_untrained_adapter_shows_zero(tmp_path):
    clustering = dict(CLUSTERING, global_centroids=[[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    events = [{"event": "train", "round": r, "global_cluster": r % 2} for r in (1, 2, 3)]
    write_run(tmp_path, "r", "clustered", 1, final=(0.5, 0.4, 1.0), clustering=clustering,
              events=events)  # fmt: skip
    (run,) = collect_runs(tmp_path)
    assert run.rounds_trained == {0: 1, 1: 2, 2: 0}


def test_format_duration():
    assert format_duration(3) == "3s"
    assert format_duration(125.4) == "2m05s"
    assert format_duration(3 * 3600 + 62) == "3h01m02s"


def test_unfinished_runs_listed(report):
    out, _ = report
    unfinished = table(
        (out / "results.md").read_text(), "Incomplete and failed runs (not averaged)"
    )
    assert unfinished["`c/crashed`"][:5] == [
        "FedRouter (clustered)",
        "single",
        "3",
        "incomplete",
        "2",
    ]
    failed = unfinished["`c/failed`"]
    assert failed[:5] == ["fedavg", "single", "3", "failed", "—"]
    assert "train round 1: CUDA \\| out of memory" in failed[5]  # a pipe would split the row


def test_csv(report):
    out, _ = report
    with open(out / "results.csv", newline="") as handle:
        rows = {(r["method"], r["scenario"]): r for r in csv.DictReader(handle)}
    clustered = rows[("clustered", "single")]
    assert clustered["n_seeds"] == "2"
    assert float(clustered["rouge1_mean"]) == pytest.approx(0.7)
    assert float(clustered["rouge1_std"]) == pytest.approx(0.141421, abs=1e-6)
    assert float(clustered["rougeL_mean"]) == pytest.approx(0.6)
    assert float(clustered["routing_accuracy_mean"]) == pytest.approx(0.95)
    assert float(clustered["rel_to_fedavg_pct"]) == pytest.approx(16.6667, abs=1e-4)
    assert float(clustered["rel_to_local_pct"]) == pytest.approx(-12.5)
    assert float(clustered["local_purity_mean"]) == pytest.approx(0.75)
    assert float(rows[("fedavg", "single")]["routing_accuracy_mean"]) == pytest.approx(0.5)
    gen = rows[("clustered", "generalization")]
    assert (gen["rouge1_std"], gen["rel_to_fedavg_pct"], gen["rel_to_local_pct"]) == ("", "", "")


def test_plots(report, output_dir):
    out, written = report
    expected = {
        "results.md",
        "results.csv",
        "rouge1_by_round_single.png",
        "rouge1_by_round_generalization.png",
        "cluster_map_clustered_single_seed1.png",  # first seed only
        "cluster_map_fedavg_single_seed1.png",
    }
    assert set(written) == expected
    assert {p.name for p in out.iterdir()} == expected  # no temporary files left behind
    for name in expected - {"results.md", "results.csv"}:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert not (output_dir / "results.md").exists()  # --out was honoured


@pytest.mark.parametrize("make_dir", [False, True])
def test_cli_error_on_missing_or_empty_dir(tmp_path, make_dir):
    target = tmp_path / "runs"
    if make_dir:
        target.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "fedrouter.report", str(target)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def run_report(root):
    """Run the report CLI on ``root``; return the process and results.md's text."""
    proc = subprocess.run(
        [sys.executable, "-m", "fedrouter.report", str(root)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc, (root / "results.md").read_text()


def test_bad_byte_in_metrics_is_skipped_and_noted(tmp_path):
    run = write_run(tmp_path, "fedavg_s1", "fedavg", 1, final=(0.4, 0.3, 0.0))
    with (run / "metrics.jsonl").open("ab") as stream:
        stream.write(b'{"event": "train", "round": 1}\n{"event": "tr\xffin"}\n')
    (record,) = collect_runs(tmp_path)
    assert record.status == COMPLETE
    assert record.note == "metrics.jsonl: 1 unreadable line(s) skipped (2)"
    _, markdown = run_report(tmp_path)
    assert table(markdown, "Per-run details")["`fedavg_s1`"][-1] == record.note


@pytest.mark.parametrize(
    "clustering",
    ['{"clients": "abc"}', '{"clients": [{"global_cluster": ["x"]}]}', "[1, 2]", '{"clie'],
)
def test_malformed_clustering_is_noted_not_drawn(tmp_path, clustering):
    run = write_run(tmp_path, "clustered_s1", "clustered", 1, final=(0.4, 0.3, 1.0))
    (run / "clustering.json").write_text(clustering)
    (record,) = collect_runs(tmp_path)
    assert record.status == COMPLETE and record.clustering is None
    assert record.note.startswith("clustering.json is")
    _, markdown = run_report(tmp_path)
    assert "clustering.json is" in table(markdown, "Per-run details")["`clustered_s1`"][-1]
    assert not list(tmp_path.glob("cluster_map_*.png"))


def test_truncated_config_lists_the_run_as_failed(tmp_path):
    run = write_run(tmp_path, "fedavg_s1", "fedavg", 1, final=(0.4, 0.3, 0.0))
    (run / "config.json").write_text('{"fedrouter_version": "0.1.0", "config": {"fed_')
    model = tmp_path / "some_model"  # a model folder's unreadable config.json is not a run
    model.mkdir()
    (model / "config.json").write_text("{")
    (record,) = collect_runs(tmp_path)
    assert (record.path, record.status) == (run, FAILED)
    assert "config.json is damaged" in record.note
    _, markdown = run_report(tmp_path)
    row = table(markdown, "Incomplete and failed runs (not averaged)")["`fedavg_s1`"]
    assert row[3] == "failed" and "config.json is damaged" in row[5]


def test_truncated_summary_is_damaged_not_missing(tmp_path):
    run = write_run(tmp_path, "fedavg_s1", "fedavg", 1, final=(0.4, 0.3, 0.0))
    (run / "summary.json").write_text('{"fed_alg": "fedavg", "fin')
    (record,) = collect_runs(tmp_path)
    assert record.status == FAILED
    assert "summary.json is damaged" in record.note and "no summary.json" not in record.note


def test_repeated_seed_keeps_newest(tmp_path):
    old = write_run(tmp_path, "fedavg_seed1", "fedavg", 1, final=(0.2, 0.1, 0.0))
    write_run(tmp_path, "fedavg_seed1_2", "fedavg", 1, final=(0.4, 0.3, 0.0))
    os.utime(old / "summary.json", (1, 1))  # the first folder is the older run
    (row,) = aggregate(collect_runs(tmp_path))
    assert (row.n_seeds, row.rouge1_mean) == (1, pytest.approx(0.4))


def purity_events(*values):
    """Return clustering events that report these local purities, one client each."""
    return [
        {"event": "clustering", "partition_id": i, "local_purity": v} for i, v in enumerate(values)
    ]


@pytest.fixture(scope="module")
def difficulty_report(tmp_path_factory):
    """A difficulty study: FedRouter at two knob values x 2 seeds, FedAvg at both x 1 seed."""
    root = tmp_path_factory.mktemp("difficulty")
    for knob, (r1, r2), (route1, route2), purity in (
        (0, (0.6, 0.7), (0.9, 0.8), (0.9, 1.0)),
        (1, (0.4, 0.5), (0.6, 0.5), (0.5, 0.6)),
    ):
        for seed, rouge, routing in ((111, r1, route1), (222, r2, route2)):
            write_run(root, f"overlap_{knob}/i_clustered_seed{seed}", "clustered", seed,
                      "interference", final=(rouge, rouge, routing), overlap=knob,
                      events=purity_events(*purity))  # fmt: skip
        write_run(root, f"overlap_{knob}/i_fedavg_seed111", "fedavg", 111, "interference",
                  final=(0.3 - 0.1 * knob, 0.3, 0.25), overlap=knob)  # fmt: skip
    out = root / "report"
    return out, main([str(root), "--out", str(out)])


def test_difficulty_table_has_one_row_per_method_and_knob(difficulty_report):
    out, written = difficulty_report
    text = (out / "results.md").read_text()
    table = text.split("## Difficulty (synthetic_overlap)", 1)[1].split("\n## ", 1)[0]
    cells = {}
    for line in table.splitlines():
        row = [c.strip() for c in line.strip("|").split("|")]
        if len(row) == 6 and row[2] in ("0", "1"):
            cells[(row[0], row[2])] = row[3:]
    label = "FedRouter (clustered)"
    assert cells[(label, "0")] == ["0.6500 ± 0.0707 (n=2)", "0.8500", "0.950"]
    assert cells[(label, "1")] == ["0.4500 ± 0.0707 (n=2)", "0.5500", "0.550"]
    assert cells[("fedavg", "0")] == ["0.3000 (n=1)", "—", "—"]  # fedavg routes nothing
    assert cells[("fedavg", "1")] == ["0.2000 (n=1)", "—", "—"]
    # the knob values are separate settings, never seeds of one another
    assert "Repeated seeds" not in text
    assert "| Method | interference | interference, overlap 1 |" in text  # ROUGE-1 columns
    assert (out / "difficulty.png").read_bytes()[:8] == PNG_MAGIC
    assert {"difficulty.png", "rouge1_by_round_interference.png",
            "rouge1_by_round_interference_overlap1.png"} <= set(written)  # fmt: skip


def test_csv_names_the_knob(difficulty_report):
    out, _ = difficulty_report
    with open(out / "results.csv", newline="") as handle:
        rows = {(r["method"], r["synthetic_overlap"]): r for r in csv.DictReader(handle)}
    assert float(rows[("clustered", "1")]["rouge1_mean"]) == pytest.approx(0.45)
    assert float(rows[("fedavg", "1")]["rel_to_fedavg_pct"]) == pytest.approx(0.0)
    assert float(rows[("clustered", "0")]["rel_to_fedavg_pct"]) == pytest.approx(116.6667)


def test_one_knob_value_draws_no_difficulty_figure(report):
    out, written = report
    assert "difficulty.png" not in written
    assert "## Difficulty" not in (out / "results.md").read_text()


def test_run_scenarios_skips_finished_runs(tmp_path):
    """An interrupted comparison continues: seeds with a summary.json are not run again."""
    import shutil

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = tmp_path / "training_scripts"
    scripts.mkdir()
    shutil.copy(os.path.join(repo, "training_scripts", "run_scenarios.sh"), scripts)
    calls = tmp_path / "calls.txt"
    # A stand-in launcher that records which method and seeds it was asked to run.
    (scripts / "run_flower_simulation_router.sh").write_text(
        f'. "$1"; echo "$fed_alg $seeds" >> {calls}\n'
    )
    out = tmp_path / "out"
    done = out / "single_fedavg_fedavg_seed222"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    (out / "single_local_local_seed111").mkdir()  # started but never finished: runs again
    env = {
        **os.environ,
        "methods": "fedavg local",
        "scenarios": "single",
        "seeds": "111 222",
        "output_root": str(out),
    }
    subprocess.run(
        ["sh", str(scripts / "run_scenarios.sh")],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    assert calls.read_text().splitlines() == ["fedavg 111", "local 111 222"]
    for name in ("fedavg_seed111", "fedavg_seed222"):
        (out / f"single_{name.split('_')[0]}_{name}").mkdir(exist_ok=True)
        (out / f"single_{name.split('_')[0]}_{name}" / "summary.json").write_text("{}")
    calls.write_text("")
    subprocess.run(
        ["sh", str(scripts / "run_scenarios.sh")],
        cwd=repo,
        env={**env, "methods": "fedavg"},
        check=True,
        capture_output=True,
    )
    assert calls.read_text() == ""  # everything done: nothing runs


def stub_scenarios(tmp_path, calls):
    """Copy run_scenarios.sh beside a stand-in launcher that records its method and seeds."""
    import shutil

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = tmp_path / "training_scripts"
    scripts.mkdir()
    shutil.copy(os.path.join(repo, "training_scripts", "run_scenarios.sh"), scripts)
    (scripts / "run_flower_simulation_router.sh").write_text(
        f'. "$1"; echo "$fed_alg $seeds" >> {calls}\n'
    )
    return repo, scripts / "run_scenarios.sh"


def test_run_scenarios_stops_on_a_misspelt_base_preset(tmp_path):
    calls = tmp_path / "calls.txt"
    repo, script = stub_scenarios(tmp_path, calls)
    env = {**os.environ, "methods": "fedavg", "scenarios": "single", "seeds": "111",
           "output_root": str(tmp_path / "out")}  # fmt: skip
    proc = subprocess.run(
        ["sh", str(script), "configs/quickstrat.sh"], cwd=repo, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "configs/quickstrat.sh" in proc.stderr and "not found" in proc.stderr
    assert not calls.exists()  # nothing ran


def test_run_scenarios_sees_a_synonym_as_finished(tmp_path):
    calls = tmp_path / "calls.txt"
    repo, script = stub_scenarios(tmp_path, calls)
    out = tmp_path / "out"
    # fedrouter is stored as clustered: the launcher names the run directory so
    done = out / "single_fedrouter_clustered_seed111"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    env = {**os.environ, "methods": "fedrouter", "scenarios": "single", "seeds": "111 222",
           "output_root": str(out)}  # fmt: skip
    subprocess.run(["sh", str(script)], cwd=repo, env=env, check=True, capture_output=True)
    assert calls.read_text().splitlines() == ["fedrouter 222"]


def test_run_scenarios_runs_every_registry_method_by_default(tmp_path):
    from fedrouter.methods import names

    calls = tmp_path / "calls.txt"
    repo, script = stub_scenarios(tmp_path, calls)
    env = {**os.environ, "PYTHON": sys.executable, "scenarios": "single", "seeds": "1",
           "output_root": str(tmp_path / "out")}  # fmt: skip
    env.pop("methods", None)
    subprocess.run(["sh", str(script)], cwd=repo, env=env, check=True, capture_output=True)
    assert [line.split()[0] for line in calls.read_text().splitlines()] == list(names())


def test_launcher_with_no_seeds_is_an_error(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    preset = tmp_path / "preset.sh"
    preset.write_text(f"seeds=\"\"\noutput_dir='{tmp_path / 'out'}'\n")
    proc = subprocess.run(
        ["sh", "training_scripts/run_flower_simulation_router.sh", str(preset)], cwd=repo,
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == f"Using preset {preset}\n"
    assert proc.stderr.startswith("error: seeds is empty")
    assert not (tmp_path / "out").exists()  # stopped before anything


def stub_study(tmp_path):
    """Copy difficulty_study.sh beside a stand-in run_scenarios.sh and a stand-in python that
    records its calls (the knob checks run the real fedrouter.config)."""
    import shutil

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in ("scripts", "training_scripts", "configs"):
        (tmp_path / folder).mkdir()
    shutil.copy(os.path.join(repo, "scripts", "difficulty_study.sh"), tmp_path / "scripts")
    (tmp_path / "configs" / "quickstart_all.sh").write_text("")
    calls = tmp_path / "calls.txt"
    (tmp_path / "training_scripts" / "run_scenarios.sh").write_text(
        f'echo "scenarios $output_root|$methods|$scenarios|$seeds|$1" >> {calls}\n'
    )
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "python $*" >> {calls}\n'
        f'[ "$2" = fedrouter.config ] && exec {sys.executable} "$@"\nexit 0\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "PYTHONPATH": repo}
    return tmp_path / "scripts" / "difficulty_study.sh", calls, env


def test_difficulty_study_runs_each_knob_into_its_folder_then_reports(tmp_path):
    from fedrouter.config import parse_args
    from fedrouter.launcher import config_flags, launcher_variables

    script, calls, env = stub_study(tmp_path)
    env.update(overlaps="0 0.5", output_root="out")
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=120)
    lines = calls.read_text().splitlines()
    runs = [line for line in lines if line.startswith("scenarios ")]
    assert runs == [
        f"scenarios out/overlap_{v}|clustered router_oracle fedavg|interference|111 222|"
        f"out/overlap_{v}/base_preset.sh"
        for v in ("0", "0.5")
    ]
    assert lines[-1] == "python -m fedrouter.report out"
    # the written preset, read as the launcher reads it against this project's presets
    preset = tmp_path / "out" / "overlap_0.5" / "base_preset.sh"
    variables = launcher_variables(preset)
    assert (variables["num_rounds"], variables["eval_round"], variables["max_steps"]) == (
        "8",
        "8",
        "25",
    )
    assert (variables["local_schedule"], variables["synthetic_overlap"]) == ("all", "0.5")
    cfg = parse_args(config_flags(variables))
    assert (cfg.dataset_name, cfg.synthetic_overlap) == ("multitask_synthetic", 0.5)


def test_difficulty_study_stops_on_a_bad_knob_before_running(tmp_path):
    script, calls, env = stub_study(tmp_path)
    env.update(overlaps="0 1.5", output_root="out")
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "synthetic_overlap=1.5" in proc.stderr and "[0, 1]" in proc.stderr
    assert not any(line.startswith("scenarios") for line in calls.read_text().splitlines())
