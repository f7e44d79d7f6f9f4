"""Run one seed in a child process that Ctrl-C and SIGTERM stop within seconds.

``python -m fedrouter.simulation`` runs here. The supervisor checks the config (preflight) and
claims the run directory; the simulation (Flower, Ray and its workers) runs in a child process
with its own session, so that a terminal's Ctrl-C reaches only the supervisor. On SIGINT or
SIGTERM the supervisor kills the child and every process it started (Ray's included), removes
the temporary files of writes cut short, and prints one line: the round the run reached and
how to resume it. Every file of the run directory is written atomically, so the last
checkpoint is intact.

With ``--log_file``, the run directory and the run's own log are claimed together (``name``,
``name_2``... beside ``X_log.txt``, ``X_2_log.txt``...), so concurrent or repeated runs never
write into another run's log; a resumed run appends to its run's log.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from pathlib import Path

from fedrouter.checkpoint import CHECKPOINT, read_checkpoint_round
from fedrouter.config import Config
from fedrouter.results import Run, read_events

STOP_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def send_output_to(log: Path) -> None:
    """Append everything this process (and any process it starts) writes to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _child(cfg: Config, base_path: str, run: Run, parent: int, simulate) -> None:
    """The child's body: its own session, its output to the log, then ``simulate``."""
    os.setsid()  # a terminal's Ctrl-C goes to the foreground group: the supervisor alone
    die_with(parent)  # ...and a supervisor killed outright takes the run (and Ray's) with it
    if run.log is not None:
        send_output_to(run.log)
    from fedrouter.config import report_errors
    from fedrouter.logs import setup_logging

    setup_logging(cfg.debug)
    report_errors(lambda: simulate(cfg, base_path, run), cfg.debug)


def descendants(pid: int) -> list:
    """Return the processes below ``pid``, children first."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL ``pid``, its process group and every descendant, and wait for them to go."""
    import psutil

    procs = descendants(pid)
    try:
        procs.insert(0, psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)  # the child leads its own group: catch late forks
    except (ProcessLookupError, PermissionError):
        pass
    psutil.wait_procs(procs, timeout=timeout)


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files and folders of atomic writes that a kill cut short."""
    removed = []
    folders = [run_dir, *sorted((run_dir / "adapters").glob("round_*"))]
    for folder in folders:
        for entry in folder.glob(".*"):
            if entry.is_dir():
                import shutil

                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def rounds_finished(run_dir: Path) -> int:
    """Return the last round that metrics.jsonl records as trained (0 if none)."""
    try:
        trained = read_events(run_dir).rounds(stage="train")
    except OSError:
        return 0
    return max((r.round for r in trained if r.round is not None), default=0)


def stop_message(signum: int, cfg: Config, run_dir: Path) -> str:
    """One line: which signal stopped the run, the round it reached, and how to resume."""
    name = signal.Signals(signum).name
    done = rounds_finished(run_dir)
    saved = read_checkpoint_round(run_dir)
    if saved is None:
        return (
            f"fedrouter: stopped by {name} in round {done + 1} of {cfg.num_rounds}, before the "
            f"first checkpoint; nothing to resume: rerun from the start ({run_dir})"
        )
    later = f" (rounds {saved + 1}..{done} rerun)" if done > saved else ""
    return (
        f"fedrouter: stopped by {name} after round {max(done, saved)} of {cfg.num_rounds}; "
        f"{run_dir}/{CHECKPOINT} holds round {saved}{later}. To resume, rerun the same "
        f"command with --resume True (in the launcher: resume=True)"
    )


def tail(path: Path, lines: int = 5) -> str:
    """Return the last lines of a text file, or an empty string."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def supervise(cfg: Config, log_file: str | None, *, prepare, simulate) -> int:
    """Open the run here (``prepare``), ``simulate`` it in a child process; return its exit code.

    ``prepare(cfg, log_file) -> (cfg, base_path, run)`` and ``simulate(cfg, base_path, run)``
    are ``fedrouter.simulation``'s. Bad input fails here, before any child starts. The exit
    code is the child's, or 130/143 when SIGINT/SIGTERM stopped the run.
    """
    ctx = multiprocessing.get_context("spawn")
    run: dict = {"dir": None, "log": None, "child": None}

    def stop(signum, _frame) -> None:
        for sig in STOP_EXIT:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        if run["child"] is not None and run["child"].pid is not None:
            kill_tree(run["child"].pid)
        if run["dir"] is None:
            line = f"fedrouter: stopped by {signal.Signals(signum).name} before the run started"
        else:
            remove_partial_writes(run["dir"])
            line = stop_message(signum, cfg, run["dir"])
        if run["log"] is not None:
            with open(run["log"], "a") as handle:
                handle.write(line + "\n")
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(STOP_EXIT[signal.Signals(signum)])

    previous = {sig: signal.signal(sig, stop) for sig in STOP_EXIT}
    try:
        cfg, base_path, opened = prepare(cfg, log_file)
        run_dir, log = run["dir"], run["log"] = opened.dir, opened.log
        if log is not None:
            sys.stdout.write(f"fedrouter: seed {cfg.seed} runs in {run_dir}; log: {log}\n")
            sys.stdout.flush()
        child = ctx.Process(
            target=_child,
            args=(cfg, base_path, opened, os.getpid(), simulate),
            name="fedrouter-run",
        )
        run["child"] = child
        child.start()
        while child.is_alive():
            child.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = child.exitcode if child.exitcode >= 0 else 128 - child.exitcode
    kill_tree(child.pid, timeout=2.0)  # nothing the run started outlives it
    remove_partial_writes(run_dir)
    if code == 0:
        sys.stdout.write(f"fedrouter: seed {cfg.seed} finished; results in {run_dir}\n")
    else:
        where = f"; the last lines of {log}:\n{tail(log)}" if log else ""
        sys.stderr.write(f"error: seed {cfg.seed} failed (exit {code}){where}\n")
    return code
