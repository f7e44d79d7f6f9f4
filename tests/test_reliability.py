"""Determinism, resume after a real SIGKILL, and client failures, on the tiny 4-bit model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedrouter.checkpoint import load_checkpoint
from fedrouter.results import read_metrics
from tests.conftest import SMALL_RUN, run_simulation

FOUR_ROUNDS = [*SMALL_RUN, "--num_rounds", "4", "--evaluation_rounds", "2,4"]
TIMING = ("time", "pid", "wall_seconds")


def command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedrouter.simulation",
        *FOUR_ROUNDS,
        "--output_dir",
        str(out),
        *extra,
    ]


def only_run(out: Path) -> Path:
    [run] = [p for p in out.iterdir() if p.is_dir()]
    return run


def comparable(events: list[dict], kinds=("clustering", "train", "eval")) -> list[dict]:
    """Drop timing fields (and process ids), keep the events that carry results."""
    return [
        {
            k: v
            for k, v in e.items()
            if k not in TIMING and not k.startswith(("seconds", "phase/", "peak"))
        }
        for e in events
        if e["event"] in kinds
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_path):
    """An uninterrupted 4-round run."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(command(out), check=True, capture_output=True, timeout=900)
    return only_run(out)


def test_same_seed_gives_identical_metrics(small_run, tmp_path):
    _, first = small_run
    proc, again = run_simulation(tmp_path, "--sim_alias", "e2e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable(read_metrics(again)) == comparable(read_metrics(first))
    a = load_file(first / "adapters/round_2/cluster_0/adapter_model.safetensors")
    b = load_file(again / "adapters/round_2/cluster_0/adapter_model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three simulations
def test_resume_after_sigkill_equals_uninterrupted_run(reference, tmp_path):
    proc = subprocess.Popen(
        command(tmp_path), start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    killed_after = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = [p for p in tmp_path.iterdir() if (p / "checkpoint.npz").exists()]
        if runs and load_checkpoint(runs[0]).server_round >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_after = load_checkpoint(runs[0]).server_round
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert killed_after is not None and killed_after < 4, "the run ended before it was killed"
    run = only_run(tmp_path)
    assert not (run / "summary.json").exists()

    assert_resume_finishes_like(reference, tmp_path, run)


def assert_resume_finishes_like(reference: Path, out: Path, run: Path, *extra: str) -> None:
    """Resume the run in ``out`` and check it ends with the uninterrupted run's results."""
    again = command(out, "--resume", "True", *extra)
    resumed = subprocess.run(again, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert only_run(out) == run  # same run directory, continued
    events = read_metrics(run)
    assert any(e["event"] == "resume" for e in events)
    got = comparable(events, ("train", "eval"))
    want = comparable(read_metrics(reference), ("train", "eval"))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in g:
            if isinstance(w[key], float):
                assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-5), key
            else:
                assert g[key] == w[key], key
    for g in range(4):
        name = f"adapters/round_4/cluster_{g}/adapter_model.safetensors"
        a, b = load_file(reference / name), load_file(run / name)
        assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_one_failing_client_does_not_end_the_run(tmp_path, tiny_path):
    helper = Path(__file__).with_name("faulty_run.py")
    args = [*SMALL_RUN, "--output_dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(helper), "1", "train", *args],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(helper.parents[1])},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(tmp_path)
    events = read_metrics(run)
    failures = [e for e in events if e["event"] == "failure"]
    assert {(e["phase"], e["round"]) for e in failures} == {("train", 1), ("train", 2)}
    assert all("injected failure in partition 1" in e["error"] for e in failures)
    trains = [e for e in events if e["event"] == "train"]
    assert {e["partition_id"] for e in trains} == {0, 2, 3}
    # the failing client's cluster was never trained: it kept its initial adapter (B = 0)
    failed_cluster = json.loads((run / "clustering.json").read_text())["clients"][1]
    g = failed_cluster["global_cluster"][0]
    weights = load_file(run / f"adapters/round_2/cluster_{g}/adapter_model.safetensors")
    assert all(not weights[k].any() for k in weights if "lora_B" in k)
    assert (run / "summary.json").exists()


@pytest.mark.slow
def test_too_many_failures_stop_the_round_loudly(tmp_path, tiny_path):
    helper = Path(__file__).with_name("faulty_run.py")
    args = [*SMALL_RUN, "--output_dir", str(tmp_path), "--min_fit_clients", "4"]
    proc = subprocess.run(
        [sys.executable, str(helper), "1", "train", *args],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(helper.parents[1])},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "fewer than min_fit_clients=4" in proc.stderr


@pytest.mark.slow  # two simulations per signal
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_within_seconds_and_the_run_resumes(reference, tmp_path, sig):
    import psutil

    log = tmp_path / "stop_seed111_log.txt"
    proc = subprocess.Popen(
        command(tmp_path, "--log_file", str(log)), start_new_session=True, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline, saved = time.monotonic() + 600, None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = [p for p in tmp_path.iterdir() if (p / "checkpoint.npz").exists()]
        if runs and load_checkpoint(runs[0]).server_round >= 1:
            saved = load_checkpoint(runs[0]).server_round
            break
        time.sleep(0.1)
    assert saved is not None and saved < 4, "the run ended before the signal"
    started = psutil.Process(proc.pid).children(recursive=True)
    assert any("raylet" in p.name() for p in started)  # Ray is up: its processes must go too
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 128 + sig
    assert "Traceback" not in stderr
    [line] = [s for s in stderr.splitlines() if s.startswith("fedrouter: stopped")]
    assert f"stopped by {sig.name} after round" in line and "--resume True" in line, stderr
    time.sleep(0.5)
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [p.name() for p in left]
    run = only_run(tmp_path)
    held = load_checkpoint(run).server_round  # loads: the checkpoint is intact
    assert f"holds round {held}" in line
    assert not [p.name for p in run.rglob(".*")]  # no temporary file of a write cut short
    assert line in log.read_text()  # the log says how it ended too
    assert_resume_finishes_like(reference, tmp_path, run, "--log_file", str(log))


def test_rounds_finished_reads_the_train_rounds_of_metrics_jsonl(tmp_path):
    from fedrouter.supervise import rounds_finished

    assert rounds_finished(tmp_path) == 0  # no metrics.jsonl yet
    lines = [
        {"event": "round", "round": 1, "stage": "train"},
        {"event": "round", "round": 2, "stage": "train"},
        {"event": "round", "round": 3, "stage": "evaluate"},  # not a trained round
        {"event": "train", "round": 4},  # a client's record, not the round's end
        {"event": "round", "round": "5", "stage": "train"},  # damaged: no round
    ]
    text = "".join(json.dumps(e) + "\n" for e in lines) + '{"event": "round", "ro\n'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert rounds_finished(tmp_path) == 2
