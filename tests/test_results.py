"""The run directory's owner: opening and resuming a run, reading its files, atomic writes."""

import json

import numpy as np
import pytest

import fedrouter.checkpoint as checkpoint_module
from fedrouter.atomic import atomic_folder, atomic_write, atomic_write_json
from fedrouter.checkpoint import CheckpointError, save_checkpoint
from fedrouter.config import Config
from fedrouter.results import (
    RunFileError,
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
