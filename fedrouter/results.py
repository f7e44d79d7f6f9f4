"""The run directory: resolved config, metrics.jsonl, adapters, clustering and summary files.

Every file is written atomically (temporary file, then rename), so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedrouter import __version__
from fedrouter.errors import FedRouterError

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars and arrays into plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def check_writable(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and fail clearly if it cannot be written to."""
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise FedRouterError(f"output_dir '{root}' is not writable: {exc.strerror}") from exc
    return root


def new_run_dir(
    output_dir: str | os.PathLike, name: str, log_for: Callable[[int], Path] | None = None
) -> Path:
    """Create a fresh run folder ``name`` (or ``name_2``, ``name_3``...); never reuse one.

    With ``log_for``, the ``n``-th folder comes with the log ``log_for(n)``, created empty here:
    a number whose folder or log exists already is skipped, so that no run, concurrent or
    earlier, ever shares a log with another.
    """
    root = check_writable(output_dir)
    n = 1
    while True:
        candidate = root / (name if n == 1 else f"{name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            n += 1
            continue
        if log_for is None:
            return candidate
        try:
            log_for(n).parent.mkdir(parents=True, exist_ok=True)
            with open(log_for(n), "x"):
                return candidate
        except FileExistsError:
            candidate.rmdir()
            n += 1


def save_adapter_dir(path: Path, arrays: Mapping[str, np.ndarray], lora_config) -> None:
    """Write a standard PEFT adapter folder (loads with ``PeftModel.from_pretrained``)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        lora_config.save_pretrained(str(tmp))
        tensors = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class RunRecorder:
    """Collect a run's events and write the run directory's files."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.events: list[dict] = []

    def write_config(self, config: Mapping[str, Any], extra: Mapping[str, Any] | None = None):
        """Save the resolved config with the project version."""
        payload = {"fedrouter_version": __version__, "config": dict(config)}
        payload.update(extra or {})
        atomic_write_json(self.run_dir / "config.json", payload)

    def log_event(self, kind: str, **fields: Any) -> dict:
        """Record one event (train, eval, failure, load...) with a wall-clock timestamp."""
        event = {"event": kind, **_jsonable(fields), "time": round(time.time(), 3)}
        self.events.append(event)
        return event

    def flush(self) -> None:
        """Rewrite metrics.jsonl atomically with every event so far."""
        lines = "".join(json.dumps(event) + "\n" for event in self.events)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)

    def write_json(self, name: str, data: Any) -> None:
        """Write a JSON file of the run directory atomically."""
        atomic_write_json(self.run_dir / name, data)

    def save_adapter(self, server_round: int, cluster: int, arrays, lora_config) -> Path:
        """Save one cluster's adapter under adapters/round_<r>/cluster_<g>/."""
        path = self.run_dir / "adapters" / f"round_{server_round}" / f"cluster_{cluster}"
        save_adapter_dir(path, arrays, lora_config)
        return path


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Read a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
