"""The same ServerApp/ClientApp on Flower's Deployment Engine: one SuperLink, two SuperNodes.

Runs training_scripts/run_flower_deployment.sh on 127.0.0.1 with free ports, a private work
root, and per-node working dirs, FLWR_HOME and FEDROUTER_CACHE, then checks the run directory,
that clients wrote no run outputs, and that no started process outlived the script. A second
run uses the script's TLS and SuperNode authentication mode, with a throwaway CA and keys.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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


@needs_tools
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"TLS_CA_CERT": "ca.crt"}, "set all of TLS_CA_CERT, TLS_SERVER_CERT and TLS_SERVER_KEY"),
        ({"SUPERNODE_KEYS_DIR": "keys"}, "SUPERNODE_KEYS_DIR needs TLS"),
        (
            {
                "TLS_CA_CERT": "ca.crt",
                "TLS_SERVER_CERT": "s.pem",
                "TLS_SERVER_KEY": "s.key",
                "SUPERNODE_KEYS_DIR": "keys",
            },
            "/keys/supernode-0 for SuperNode 0",
        ),
    ],
)
def test_rejects_incomplete_security_settings(work, tmp_path, settings, message):
    (tmp_path / "keys").mkdir()
    for name in ("ca.crt", "s.pem", "s.key"):  # the script checks that they exist, no more
        (tmp_path / name).touch()
    paths = {key: str(tmp_path / value) for key, value in settings.items()}
    env = script_env(
        work, SUPERLINK_PORT=str(free_ports(1)), SUPERNODE_PORT_BASE=str(free_ports(2)), **paths
    )
    result = run_script(env, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
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


# ---- TLS and SuperNode authentication --------------------------------------------------------

# SMALL_RUN, changed for one SuperNode and one round (clustering, training, evaluation).
ONE_NODE_ONE_ROUND = {
    "sample_clients": "1",
    "global_n_clusters": "1",
    "num_rounds": "1",
    "evaluation_rounds": '"1"',
}


def with_changes(run_config: str, changes: dict[str, str]) -> str:
    """Return ``run_config`` (``key=value`` pairs) with the values of ``changes`` replaced."""
    pairs = dict(item.split("=", 1) for item in run_config.split())
    assert set(changes) <= set(pairs), set(changes) - set(pairs)
    return " ".join(f"{key}={value}" for key, value in {**pairs, **changes}.items())


def write_tls_files(folder: Path) -> dict[str, Path]:
    """Write a throwaway CA and a SuperLink certificate for 127.0.0.1 that it signed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("fedrouter test CA"))
        .issuer_name(name("fedrouter test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(name("superlink"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def write_supernode_key(path: Path) -> Path:
    """Write a P-384 key pair in OpenSSH format, as Flower wants: ``path`` and ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.with_name(path.name + ".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return path


def collect_lines(stream, lines: list[str]) -> threading.Thread:
    """Append the lines of ``stream`` to ``lines`` as they arrive, in a daemon thread."""

    def read() -> None:
        for line in stream:
            lines.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def wait_for_line(proc: subprocess.Popen, lines: list[str], text: str, timeout: float) -> str:
    """Return the first line holding ``text``; fail if ``proc`` ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in list(lines) if text in line]
        if found:
            return found[0]
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no line with {text!r} (exit code {proc.poll()}):\n{''.join(lines)}")
        time.sleep(0.5)


def try_supernode(work: Path, name: str, superlink: str, *options: str) -> str:
    """Start a SuperNode that is not part of the deployment; return its output once it exits."""
    home = work / name
    home.mkdir(parents=True)
    env = script_env(work, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0")
    env[MARKER] = str(work)  # so that the sweeps below and the fixture see it too
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "flower-supernode"), "--superlink", superlink, *options]
    command += ["--isolation", "process", "--port", str(free_ports(1)), "--max-wait-time", "30"]
    try:
        result = subprocess.run(
            command, cwd=home, env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as stopped:  # run() has killed it
        output = stopped.stdout or b""
        pytest.fail(
            f"{name} was let in: still running after 60s\n{output.decode(errors='replace')}"
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{name} did not fail:\n{output}"
    return output


def list_supernodes(flwr_home: Path, connection: str) -> dict:
    """Return the JSON answer of ``flwr supernode ls`` for ``connection`` in ``flwr_home``."""
    flwr = Path(sys.executable).parent / "flwr"
    env = dict(os.environ, FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0")
    result = subprocess.run(
        [str(flwr), "supernode", "ls", connection, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(result.stdout)


@pytest.mark.slow  # about 1 min on 2 cores: three ClientApp processes, one ServerApp
@needs_tools
def test_tls_and_supernode_auth(work, tmp_path):
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("cryptography")
    if shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("flower-superlink is not installed next to this Python")
    tls = write_tls_files(tmp_path / "tls")
    keys = tmp_path / "keys"
    registered = write_supernode_key(keys / "supernode-0")
    unregistered = write_supernode_key(tmp_path / "other-keys" / "supernode-0")
    output_dir = work / "server" / "output"
    superlink = f"127.0.0.1:{free_ports(1)}"
    env = script_env(
        work,
        NUM_SUPERNODES="1",
        SUPERLINK_PORT=superlink.rsplit(":", 1)[1],
        SUPERNODE_PORT_BASE=str(free_ports(1)),
        OUTPUT_DIR=str(output_dir),
        RUN_CONFIG=with_changes(SMALL_RUN, ONE_NODE_ONE_ROUND),
        START_TIMEOUT="180",
        RUN_TIMEOUT="600",
        TLS_CA_CERT=str(tls["ca"]),
        TLS_SERVER_CERT=str(tls["cert"]),
        TLS_SERVER_KEY=str(tls["key"]),
        SUPERNODE_KEYS_DIR=str(keys),
    )
    start = time.perf_counter()
    script = subprocess.Popen(
        ["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = collect_lines(script.stdout, lines)
    started: set = set()
    try:
        line = wait_for_line(script, lines, "registered the public key of SuperNode 0", 240)
        node_id = line.split()[-1]
        wait_for_line(script, lines, "SuperLink and 1 SuperNode(s) are up", 240)
        started.add(psutil.Process(script.pid))
        started.update(psutil.Process(script.pid).children(recursive=True))

        # While the run goes on: a SuperNode whose key was never registered is refused, ...
        ca = ("--root-certificates", str(tls["ca"]))
        key = "--auth-supernode-private-key"
        refused = try_supernode(work, "unregistered", superlink, *ca, key, str(unregistered))
        assert "Exit Code: 305" in refused and "Failed to activate SuperNode" in refused, refused
        superlink_log = (work / "logs" / "superlink.log").read_text()
        assert "No SuperNode found with the given public key" in superlink_log
        # ... so is one without a key, which registers itself where authentication is off, ...
        keyless = try_supernode(work, "keyless", superlink, *ca)
        assert "SuperNode authentication is enabled" in keyless, keyless
        # ... the registered key without the CA certificate fails the TLS handshake, ...
        untrusted = try_supernode(work, "no-ca", superlink, key, str(registered))
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted, untrusted
        # ... and so does the CLI without the CA certificate, while it works with it.
        (tmp_path / "cli-no-ca").mkdir()
        (tmp_path / "cli-no-ca" / "config.toml").write_text(
            f'[superlink]\ndefault = "plain"\n\n[superlink.plain]\naddress = "{superlink}"\n'
        )
        assert list_supernodes(tmp_path / "cli-no-ca", "plain")["success"] is False
        nodes = list_supernodes(work / "cli", "local-deployment")
        assert nodes["success"], f"the SuperLink stopped answering early: {nodes}"
        assert [(n["node-id"], n["status"]) for n in nodes["nodes"]] == [(node_id, "online")]
        started.update(psutil.Process(script.pid).children(recursive=True))

        script.wait(timeout=900)
    except BaseException:
        script.terminate()  # its trap stops everything it started
        try:
            script.wait(timeout=120)
        except subprocess.TimeoutExpired:
            script.kill()
        raise
    finally:
        reader.join(timeout=10)
    elapsed = time.perf_counter() - start
    output = "".join(lines)
    assert script.returncode == 0, output[-6000:]
    assert "finished:completed" in output, output[-6000:]

    # The run went through: one client trained round 1 and was evaluated.
    (run_dir,) = [p for p in output_dir.iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {(e["partition_id"], e["round"]) for e in events if e["event"] == "train"} == {(0, 1)}
    assert {e["partition_id"] for e in events if e["event"] == "eval"} == {0}

    # Nothing the script or this test started is still running.
    assert len(started) >= 5, started  # script, SuperLink and its SuperExec, SuperNode, SuperExec
    left = []
    for process in started:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            pass
    assert left == [], left
    assert marked_pids(work) == []
    print(f"TLS + SuperNode auth test: script wall time {elapsed:.0f}s")
