"""The launcher's logs: a rerun never writes over a finished run's log, and two launchers of one
preset started together get a log and a run directory each, and each prints its own."""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedrouter.results import log_for_suffix, new_run_dir, run_suffix

LAUNCHER = Path(__file__).resolve().parents[1] / "training_scripts/run_flower_simulation_router.sh"
TINY = """
model_name_or_path='tiny'
dataset_name='multitask_synthetic'
num_clients=4
sample_clients=4
global_n_clusters=4
num_rounds=1
eval_round="1"
max_steps=2
batch_size=4
seq_length=128
template="alpaca_short"
max_data_per_client=40
max_eval_size=8
max_new_tokens=8
batch_size_eval=8
lora_r=8
lora_alpha=16
gpu=''
client_resources_cpus=1
client_resources_gpus=0
"""


def write_preset(tmp_path: Path, out: Path, **more: str) -> Path:
    lines = [TINY, f"output_dir='{out}'", "sim_alias='twin'", 'seeds="5"']
    lines += [f"{key}='{value}'" for key, value in more.items()]
    path = tmp_path / "preset.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(preset: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.Popen(
        ["sh", str(LAUNCHER), str(preset)], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )  # fmt: skip


def test_log_names_follow_the_run_directory_suffix(tmp_path):
    log = tmp_path / "a_seed1_log.txt"
    assert log_for_suffix(log, 1) == log
    assert log_for_suffix(log, 3) == tmp_path / "a_seed1_3_log.txt"
    assert log_for_suffix(tmp_path / "run.log", 2) == tmp_path / "run_2.log"
    assert run_suffix(tmp_path / "a_clustered_seed1", "a_clustered_seed1") == 1
    assert run_suffix(tmp_path / "a_clustered_seed1_12", "a_clustered_seed1") == 12


def test_a_stale_log_is_skipped_never_reused(tmp_path):
    (tmp_path / "x_log.txt").write_text("an earlier run's log")  # its run folder was deleted
    run = new_run_dir(tmp_path, "x", lambda n: log_for_suffix(tmp_path / "x_log.txt", n))
    assert run.name == "x_2" and (tmp_path / "x_2_log.txt").read_text() == ""
    assert (tmp_path / "x_log.txt").read_text() == "an earlier run's log"
    assert not (tmp_path / "x").exists()


def test_runs_claimed_at_once_get_distinct_folders_and_logs(tmp_path):
    claimed, barrier = [], threading.Barrier(6)

    def claim():
        barrier.wait()
        claimed.append(new_run_dir(tmp_path, "x", lambda n: tmp_path / f"log{n}.txt"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in claimed) == ["x", *(f"x_{n}" for n in range(2, 7))]
    assert sorted(p.name for p in tmp_path.glob("log*.txt")) == [f"log{n}.txt" for n in range(1, 7)]


def test_a_rerun_with_a_bad_flag_leaves_the_finished_runs_log_alone(tmp_path, tiny_path):
    out = tmp_path / "out"
    out.mkdir()
    log = out / "twin_seed5_log.txt"
    log.write_text("the log of a finished run\n")
    proc = launch(write_preset(tmp_path, out, extra_args="--bogus_flag 1"))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "bogus_flag" in stderr
    assert log.read_text() == "the log of a finished run\n"
    assert sorted(p.name for p in out.iterdir()) == ["twin_seed5_log.txt"]


@pytest.mark.slow  # two tiny runs at once
def test_two_launchers_at_once_keep_separate_logs_and_paths(tmp_path, tiny_path):
    out = tmp_path / "out"
    preset = write_preset(tmp_path, out)
    procs = [launch(preset), launch(preset)]
    results = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    assert sorted(p.name for p in out.glob("*_log.txt")) == [
        "twin_seed5_2_log.txt", "twin_seed5_log.txt"
    ]  # fmt: skip
    claimed = set()
    for stdout, _ in results:
        [(run, log)] = re.findall(r"runs in (\S+); log: (\S+)", stdout)
        [finished] = re.findall(r"finished; results in (\S+)", stdout)
        assert finished == run  # each launcher prints its own run's path
        suffix = run_suffix(Path(run), "twin_clustered_seed5")
        assert Path(log) == log_for_suffix(out / "twin_seed5_log.txt", suffix)
        assert (Path(run) / "summary.json").is_file()
        text = Path(log).read_text()
        assert f"results in {run}\n" in text  # the log is this run's
        assert "examples in the pool" in text  # with the lines logged before it was claimed
        claimed.add((run, log))
    assert len(claimed) == 2
