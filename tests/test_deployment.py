"""The same ServerApp/ClientApp on Flower's Deployment Engine: one SuperLink, two SuperNodes.

Runs training_scripts/run_flower_deployment.sh on 127.0.0.1 with free ports, a private work
root, and per-node working dirs, FLWR_HOME and FEDROUTER_CACHE, then checks the run directory,
that clients wrote no run outputs, and that no started process outlived the script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training_scripts" / "run_flower_deployment.sh"
MARKER = "FEDROUTER_DEPLOYMENT"  # the script puts MARKER=<work root> in every process it starts
RUN_OUTPUT_NAMES = {"metrics.jsonl", "summary.json", "clustering.json", "checkpoint.npz"}
SMALL_RUN = (
    'sample_clients=2 global_n_clusters=2 split_strategy="multitask_iid" '
    'num_rounds=2 evaluation_rounds="2" model_name_or_path="tiny" '
    'dataset_name="multitask_synthetic" client_resources_gpus=0 '
    "max_steps=2 batch_size=4 seq_length=128 max_data_per_client=40 max_eval_size=8 "
    'max_new_tokens=8 eval_batch_size=8 peft_lora_r=8 template="alpaca_short" sim_alias="deploy"'
)

needs_tools = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or shutil.which("bash") is None
    or shutil.which("setsid") is None,
    reason="the deployment script needs Linux, bash and setsid",
)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """Return a base port such that base .. base+count-1 are free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count < 65535 and all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free ports")


def script_env(work: Path, **extra: str) -> dict[str, str]:
    """Return the environment for the script: the venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FEDROUTER_CACHE", None)  # the script gives every process its own cache
    env.update(WORK_ROOT=str(work), PYTHON=sys.executable, STOP_GRACE="10", **extra)
    return env


def is_running(pid: int) -> bool:
    """Return True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def marked_pids(work: Path) -> list[int]:
    """Return running processes whose environment carries the script's marker for ``work``."""
    needle = f"{MARKER}={work}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def run_script(env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run the script; on timeout send SIGTERM first so that its trap stops everything."""
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"deployment script timed out after {timeout}s\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture()
def work(tmp_path):
    """Return a fresh work root; afterwards kill anything the script left behind."""
    root = tmp_path / "work"
    yield root
    if sys.platform.startswith("linux"):
        for pid in marked_pids(root):  # only reached if the script failed to clean up
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@needs_tools
def test_rejects_run_config_that_sets_num_clients(work):
    env = script_env(work, RUN_CONFIG="num_clients=3 num_rounds=1")
    result = run_script(env, timeout=60)
    assert result.returncode != 0
    assert "must not set num_clients" in result.stderr
    assert not (work / "pids").exists() or not (work / "pids").read_text().strip()


@needs_tools
def test_refuses_a_busy_port(work):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = script_env(work, SUPERLINK_PORT=str(port), SUPERNODE_PORT_BASE=str(free_ports(2)))
        result = run_script(env, timeout=60)
    assert result.returncode != 0
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr
    assert marked_pids(work) == []


@pytest.mark.slow  # about 3 min on 2 busy cores: each message starts a fresh ClientApp process
@needs_tools
def test_two_supernodes_two_rounds(work):
    if shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("flower-superlink is not installed next to this Python")
    output_dir = work / "server" / "output"
    env = script_env(
        work,
        NUM_SUPERNODES="2",
        SUPERLINK_PORT=str(free_ports(1)),
        SUPERNODE_PORT_BASE=str(free_ports(2)),
        OUTPUT_DIR=str(output_dir),
        RUN_CONFIG=SMALL_RUN,
        START_TIMEOUT="180",
        RUN_TIMEOUT="600",
    )
    start = time.perf_counter()
    result = run_script(env, timeout=900)
    elapsed = time.perf_counter() - start
    logs = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, logs
    assert "finished:completed" in result.stdout, logs

    # The run directory exists once, under the server's output_dir, and is complete.
    (run_dir,) = [p for p in output_dir.iterdir() if p.is_dir()]
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    clusters = sorted((run_dir / "adapters" / "round_2").glob("cluster_*"))
    assert clusters, "no adapters for round 2"
    for cluster in clusters:
        assert (cluster / "adapter_config.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["config"]["num_clients"] == 2
    assert [p.parent for p in work.rglob("metrics.jsonl")] == [run_dir]

    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    assert {e["partition_id"] for e in train} == {0, 1}
    assert {e["round"] for e in train} == {1, 2}
    assert {e["partition_id"] for e in evals} == {0, 1}
    # The base model is loaded once per ClientApp process, however many messages it served.
    replies = [e for e in events if "pid" in e]
    loads: dict[int, int] = {}
    for e in replies:
        loads[e["pid"]] = max(loads.get(e["pid"], 0), e["model_loads"])
    assert set(loads.values()) == {1}, loads

    # Clients share no filesystem with the server: their folders hold no run outputs.
    for node in sorted(work.glob("node-*")):
        written = [p for p in node.rglob("*") if p.name in RUN_OUTPUT_NAMES or p.name == "adapters"]
        assert written == [], written
        assert not list(node.rglob(run_dir.name)), node
    assert sorted(p.name for p in work.glob("node-*")) == ["node-0", "node-1"]

    # No process started by the script outlived it.
    pids = [int(line.split()[1]) for line in (work / "pids").read_text().splitlines()]
    assert len(pids) == 1 + 2 * 2 + 1  # SuperLink, 2 x (SuperNode + SuperExec), flwr run
    assert [p for p in pids if is_running(p)] == []
    assert marked_pids(work) == []
    print(f"deployment test: script wall time {elapsed:.0f}s")
