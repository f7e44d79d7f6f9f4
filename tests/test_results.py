"""The run directory's owner: opening and resuming a run, reading its files, atomic writes."""

import json

import numpy as np
import pytest

import fedrouter.checkpoint as checkpoint_module
from fedrouter.atomic import atomic_folder, atomic_write, atomic_write_json
from fedrouter.checkpoint import CheckpointError, save_checkpoint
from fedrouter.config import Config
from fedrouter.events import KINDS, Failure, Start, Train, parse
from fedrouter.results import (
    RunFileError,
    RunRecorder,
    Summary,
    open_run,
    read_events,
    read_metrics,
    read_summary,
    run_name,
)


def config(tmp_path, **changes) -> Config:
    return Config(output_dir=str(tmp_path / "out"), sim_alias="r", seed=7, **changes)


def test_open_run_claims_fresh_folders_and_writes_config_once(tmp_path):
    cfg = config(tmp_path)
    first = open_run(cfg, base_path="/models/base", log_file=str(tmp_path / "out/r_seed7_log.txt"))
    second = open_run(cfg, log_file=str(tmp_path / "out/r_seed7_log.txt"))
    assert first.dir.name == run_name(cfg) == "r_clustered_seed7"
    assert second.dir.name == "r_clustered_seed7_2"
    assert (first.log.name, second.log.name) == ("r_seed7_log.txt", "r_seed7_2_log.txt")
    saved = json.loads((first.dir / "config.json").read_text())
    assert saved["config"] == cfg.to_dict() and saved["base_model_path"] == "/models/base"
    assert first.checkpoint is None and first.recorder().events == []


def test_resume_reads_the_checkpoint_once_and_keeps_events_up_to_it(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    run = open_run(cfg)
    config_bytes = (run.dir / "config.json").read_bytes()
    events = [{"event": "start"}, {"event": "train", "round": 1}, {"event": "train", "round": 2}]
    (run.dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    arrays = {"global_centroids": np.ones((2, 3), dtype=np.float32)}
    save_checkpoint(run.dir, 1, arrays, {"server_round": 1, "n_events": 2})
    reads = []
    real = checkpoint_module.load_checkpoint
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", lambda d: reads.append(d) or real(d))
    resumed = open_run(cfg.replace(resume=True), log_file=str(tmp_path / "out/r_seed7_log.txt"))
    assert resumed.dir == run.dir and len(reads) == 1
    assert resumed.checkpoint.server_round == 1
    assert np.array_equal(resumed.checkpoint.arrays["global_centroids"], arrays["global_centroids"])
    assert resumed.log.name == "r_seed7_log.txt"
    assert resumed.recorder().events == events[:2]  # round 2 never reached a checkpoint
    assert (run.dir / "config.json").read_bytes() == config_bytes  # not rewritten


def test_resume_of_another_config_or_without_a_run_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        open_run(config(tmp_path, resume=True))
    open_run(config(tmp_path))
    with pytest.raises(CheckpointError, match="num_rounds"):
        open_run(config(tmp_path, resume=True, num_rounds=3))


def test_read_events_skips_bad_lines_and_strict_reading_refuses_them(tmp_path):
    lines = [b'{"event": "train", "round": 1}', b"not json", b'{"event": "eval"}', b"\xff\xfe"]
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    log = read_events(tmp_path)
    assert [e["event"] for e in log.events] == ["train", "eval"]
    assert log.unreadable == [2, 4] and "2 unreadable line(s) skipped (2, 4)" in log.note()
    assert log.of("eval") == [{"event": "eval"}]
    with pytest.raises(RunFileError, match="metrics.jsonl:2"):
        read_metrics(tmp_path)
    assert read_events(tmp_path / "nowhere").events == []


def test_summary_round_trips_and_reads_damage_as_absent_fields(tmp_path):
    summary = Summary(
        fed_alg="clustered", seed=1, num_rounds=2, wall_seconds=3.5, final_round=2,
        final={"rouge1": 0.5}, final_per_client={"0": {"rouge1": 0.5}},
        by_round={1: {"rouge1": 0.25}, 2: {"rouge1": 0.5}}, model_loads_per_process={"11": 1},
    )  # fmt: skip
    atomic_write_json(tmp_path / "summary.json", summary.to_json())
    assert json.loads((tmp_path / "summary.json").read_text())["by_round"]["2"] == {"rouge1": 0.5}
    assert read_summary(tmp_path) == summary
    odd = Summary.from_json(
        {"seed": "1", "final": {"rouge1": float("nan"), "x": True}, "by_round": {"a": {}}}
    )
    assert odd.seed is None and odd.final == {} and odd.by_round == {}
    (tmp_path / "summary.json").write_text('{"final": {"rouge1"')
    with pytest.raises(RunFileError, match="damaged"):
        read_summary(tmp_path)
    assert read_summary(tmp_path / "nowhere") is None


def test_a_failed_atomic_write_leaves_neither_file_nor_temporary(tmp_path):
    atomic_write(tmp_path / "a.txt", lambda handle: handle.write(b"old"))

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", fail)
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_folder_replaces_or_keeps_a_finished_one(tmp_path):
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "x").write_text("1")
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "x").write_text("2")
    assert (tmp_path / "f/x").read_text() == "2"
    with atomic_folder(tmp_path / "f", replace=False) as tmp:
        (tmp / "x").write_text("3")  # another process finished first: its folder stays
    assert (tmp_path / "f/x").read_text() == "2"
    with pytest.raises(ValueError), atomic_folder(tmp_path / "g") as tmp:
        (tmp / "x").write_text("cut short")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# One event of each kind, as the round loop writes them (from a quickstart run, shortened).
EVENTS = [
    {"event": "start", "time": 1.5},
    {"event": "clustering", "partition_id": 0, "local_purity": 1.0, "pid": 17, "model_loads": 1,
     "peak_rss_mb": 622.3, "seconds/model_load": 5.6, "phase/kmeans": 0.001, "time": 2.0},
    {"event": "setup", "seconds": 3.0, "messages_to_clients": 8, "bytes_to_clients": 900,
     "array_bytes_to_clients": 0, "server_peak_rss_mb": 400.0, "phase/server/serialization": 0.1,
     "time": 3.0},
    {"event": "resume", "from_round": 3, "time": 3.1},
    {"event": "train", "round": 3, "partition_id": 0, "local_cluster": 0.0, "global_cluster": 2.0,
     "num_examples": 200.0, "train_loss": 1.25, "cluster_size": 200.0, "seconds/train": 4.0,
     "phase/training": 3.5, "pid": 17, "model_loads": 1, "time": 4.0},
    {"event": "failure", "phase": "train", "round": 3, "node": 5, "error": "ValueError: x",
     "detail": "Traceback...\nValueError: x", "time": 4.1},
    {"event": "round", "round": 3, "stage": "train", "seconds": 5.0, "messages_to_clients": 8,
     "bytes_to_clients": 1000, "array_bytes_to_clients": 960, "messages_from_clients": 8,
     "bytes_from_clients": 1100, "array_bytes_from_clients": 960, "server_peak_rss_mb": 401.0,
     "phase/server/aggregation": 0.2, "time": 5.0},
    {"event": "round", "round": 3, "stage": "evaluate", "seconds": 6.0, "bytes_to_clients": 2000,
     "time": 6.0},
    {"event": "eval", "round": 3, "partition_id": 0, "num_examples": 64.0, "rouge1": 0.5,
     "rouge2": 0.25, "rougeL": 0.5, "routing_accuracy": 1.0, "count/c2": 64.0, "rouge1/c2": 0.5,
     "generated_tokens": 300.0, "phase/generation": 1.0, "pid": 17, "model_loads": 1,
     "time": 7.0},
    {"event": "failure", "phase": "clustering", "node": 6, "error": "E", "detail": "E",
     "time": 7.5},
    {"event": "finish", "seconds": 9.0, "server_peak_rss_mb": 402.0, "phase/server/file-io": 0.3,
     "time": 9.0},
]  # fmt: skip


def test_each_kind_of_event_reads_back_as_written(tmp_path):
    """A record written as JSON reads back equal, and writes the same keys in the same order."""
    assert {e["event"] for e in EVENTS} == set(KINDS)
    for data in EVENTS:
        record = parse(json.loads(json.dumps(data)))
        assert type(record) is KINDS[data["event"]] and record.time == data["time"]
        assert list(record.to_json().items()) == list(data.items()), data["event"]
        assert type(record).from_json(record.to_json()) == record
    train = parse(EVENTS[4])
    assert (train.round, train.global_cluster, train.pid) == (3, 2.0, 17)
    assert train.fields == {"seconds/train": 4.0, "phase/training": 3.5}
    assert parse({"event": "load", "x": 1}) is None  # a kind not written by the round loop


def test_records_are_written_as_the_round_loop_wrote_them(tmp_path):
    """What the recorder writes: the kind, the attributes in order, the fields, a timestamp."""
    recorder = RunRecorder(tmp_path)
    recorder.record(Start())
    recorder.record(
        Train.from_fields(
            {"partition_id": 1, "local_cluster": np.float32(0.0), "seconds/train": 2.0, "pid": 4,
             "model_loads": 1, "global_cluster": 1.0},
            round=2,
        )
    )  # fmt: skip
    recorder.record(Failure(phase="clustering", node=3, error="E", detail="D"))
    recorder.flush()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [list(e) for e in lines] == [
        ["event", "time"],
        ["event", "round", "partition_id", "local_cluster", "global_cluster", "seconds/train",
         "pid", "model_loads", "time"],
        ["event", "phase", "node", "error", "detail", "time"],  # no round: not in a round
    ]  # fmt: skip
    assert lines[1]["local_cluster"] == 0.0 and isinstance(lines[1]["local_cluster"], float)
    assert all(isinstance(e["time"], float) for e in lines) and recorder.events == lines


def test_event_log_gives_typed_records_and_reads_damage_as_absent(tmp_path):
    damaged = [
        b'{"event": "train", "round": "3", "global_cluster": true, "pid": 9}',  # wrong types
        b'{"event": "clustering", "partition_id": 1}',  # no purity: an older file
        b'{"event": "train", "round": 4',  # cut short
        b'["event", "eval"]',  # not an object
        b'{"round": 4}',  # no kind
    ]
    lines = [json.dumps(e).encode() for e in EVENTS] + damaged
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    log = read_events(tmp_path)
    assert log.unreadable == [len(EVENTS) + 3, len(EVENTS) + 4]
    assert [r.KIND for r in log.records()] == [e["event"] for e in EVENTS] + ["train", "clustering"]
    trains = log.trains()
    assert [t.round for t in trains] == [3, None] and trains[1].global_cluster is None
    assert trains[1].pid == 9 and trains[1].to_json() == {"event": "train", "pid": 9}
    assert [c.local_purity for c in log.clusterings()] == [1.0, None]
    assert [r.seconds for r in log.rounds()] == [5.0, 6.0]
    assert [r.bytes("to_clients") for r in log.rounds(stage="evaluate")] == [2000]
    assert [r.messages("from_clients") for r in log.rounds(stage="train")] == [8]
    assert [(f.phase, f.round, f.node) for f in log.failures()] == [
        ("train", 3, 5), ("clustering", None, 6)
    ]  # fmt: skip
    assert [e.rougeL for e in log.evals()] == [0.5]
    assert log.evals()[0].fields["generated_tokens"] == 300.0
    assert [s.time for s in log.starts()] == [1.5] and log.finishes()[0].seconds == 9.0
    assert log.setups()[0].fields["bytes_to_clients"] == 900
    assert [r.from_round for r in log.resumes()] == [3]
