"""The run directory, and its one owner: naming, opening, and every file in it.

A run directory ``<output_dir>/<sim_alias>_<fed_alg>_seed<seed>[_<n>]`` holds the resolved
config, metrics.jsonl, adapters, clustering.json, the checkpoint and summary.json.
``open_run`` serves both runtimes (the simulation and ``flwr run``'s ServerApp): it claims a
fresh directory and writes config.json, or finds the run to resume and reads its checkpoint,
once. Every file is written atomically (``fedrouter.atomic``), so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedrouter.atomic import atomic_folder, atomic_write_json, atomic_write_text, jsonable
from fedrouter.checkpoint import Checkpoint, find_run_to_resume
from fedrouter.errors import FedRouterError
from fedrouter.events import Event, EventLog
from fedrouter.version import __version__

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTERS = (
    "adapters"  # adapters/round_<r>/cluster_<g>/: one PEFT folder per saved round and cluster
)


def adapter_dir(run_dir: str | os.PathLike, server_round: int, cluster: int) -> Path:
    """Return the folder of one cluster's adapter saved after one round."""
    return Path(run_dir) / ADAPTERS / f"round_{server_round}" / f"cluster_{cluster}"


def _numbered(folder: Path, prefix: str) -> list[int]:
    """Return the sorted n of the subfolders ``<prefix>_<n>`` of ``folder``."""
    if not folder.is_dir():
        return []
    names = (p.name[len(prefix) + 1 :] for p in folder.iterdir() if p.is_dir())
    return sorted(int(n) for n in names if n.isdigit())


def saved_rounds(run_dir: str | os.PathLike) -> list[int]:
    """Return the rounds whose adapters the run saved, in order."""
    return [r for r in _numbered(Path(run_dir) / ADAPTERS, "round") if saved_clusters(run_dir, r)]


def saved_clusters(run_dir: str | os.PathLike, server_round: int) -> list[int]:
    """Return the clusters with a complete adapter folder saved after ``server_round``."""
    folder = Path(run_dir) / ADAPTERS / f"round_{server_round}"
    return [
        g
        for g in _numbered(folder, "cluster")
        if (adapter_dir(run_dir, server_round, g) / ADAPTER_WEIGHTS).is_file()
    ]


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


def run_name(cfg) -> str:
    """Name a run folder after the alias, method and seed (a suffix _2, _3... may follow)."""
    return f"{cfg.sim_alias}_{cfg.fed_alg}_seed{cfg.seed}"


def run_suffix(run_dir: Path, name: str) -> int:
    """Return ``n`` of a run folder named ``name`` (1) or ``name_<n>``."""
    if run_dir.name == name:
        return 1
    tail = run_dir.name[len(name) + 1 :]
    return int(tail) if tail.isdigit() else 1


def log_for_suffix(log_file: str | os.PathLike, n: int) -> Path:
    """Return the log of the ``n``-th run of a name: ``X_log.txt``, then ``X_2_log.txt``..."""
    path = Path(log_file)
    if n == 1:
        return path
    if path.name.endswith("_log.txt"):
        return path.with_name(f"{path.name[: -len('_log.txt')]}_{n}_log.txt")
    return path.with_name(f"{path.stem}_{n}{path.suffix}")


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

    with atomic_folder(path) as tmp:
        lora_config.save_pretrained(str(tmp))
        tensors = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS))


@dataclass
class Run:
    """An open run directory: where it is, the run's own log, the checkpoint it resumes from."""

    dir: Path
    log: Path | None = None
    checkpoint: Checkpoint | None = None

    def recorder(self) -> RunRecorder:
        """Return the run's recorder; resuming, it holds the events up to the checkpoint.

        Events after the checkpoint belong to a round that never finished: they are dropped.
        """
        recorder = RunRecorder(self.dir)
        if self.checkpoint is not None:
            recorder.events = read_metrics(self.dir)[: self.checkpoint.meta["n_events"]]
        return recorder


def open_run(
    cfg,
    *,
    base_path: str | None = None,
    model_source: Mapping[str, Any] | None = None,
    log_file: str | None = None,
) -> Run:
    """Claim a fresh run directory and write its config.json, or open the run to resume.

    ``model_source`` (``ModelSource.record()``: what ``model_name_or_path`` resolved to, a
    GGUF's file and sha256 included) is recorded in config.json, and from there in summary.json.

    With ``log_file``, the run gets its own log: ``log_file`` for the first run of a name,
    ``..._<n>_log.txt`` beside run directory ``..._<n>`` after it (claimed together, so that
    concurrent runs never share one). Resuming reads the checkpoint here, once, and fails
    (CheckpointError) on a missing, damaged or foreign one.
    """
    name = run_name(cfg)
    if cfg.resume:
        run_dir, checkpoint = find_run_to_resume(cfg.output_dir, name, cfg.to_dict())
        log = log_for_suffix(log_file, run_suffix(run_dir, name)) if log_file else None
        return Run(run_dir, log, checkpoint)
    log_for = (lambda n: log_for_suffix(log_file, n)) if log_file else None
    run_dir = new_run_dir(cfg.output_dir, name, log_for)
    extra: dict[str, Any] = {"base_model_path": base_path} if base_path is not None else {}
    if model_source is not None:
        extra["model_source"] = dict(model_source)
    RunRecorder(run_dir).write_config(cfg.to_dict(), extra)
    return Run(run_dir, log_for(run_suffix(run_dir, name)) if log_for else None)


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

    def model_source(self) -> dict | None:
        """Return the model source recorded in the run's config.json (None if it has none)."""
        path = self.run_dir / "config.json"
        source = _read_json_file(path).get("model_source") if path.is_file() else None
        return source if isinstance(source, dict) else None

    def record(self, event: Event) -> dict:
        """Record one event (fedrouter.events) with a wall-clock timestamp; return its JSON."""
        stamped = replace(event, time=round(time.time(), 3))
        data = jsonable(stamped.to_json())
        self.events.append(data)
        return data

    def flush(self) -> None:
        """Rewrite metrics.jsonl atomically with every event so far."""
        lines = "".join(json.dumps(event) + "\n" for event in self.events)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)

    def write_json(self, name: str, data: Any) -> None:
        """Write a JSON file of the run directory atomically."""
        atomic_write_json(self.run_dir / name, data)

    def save_adapter(self, server_round: int, cluster: int, arrays, lora_config) -> Path:
        """Save one cluster's adapter under adapters/round_<r>/cluster_<g>/."""
        path = adapter_dir(self.run_dir, server_round, cluster)
        save_adapter_dir(path, arrays, lora_config)
        return path


class RunFileError(FedRouterError):
    """A file of a run directory cannot be read as the project writes it."""


def read_events(run_dir: str | os.PathLike, *, strict: bool = False) -> EventLog:
    """Read a run's metrics.jsonl (no file: no events).

    A line that is not UTF-8 JSON of an object is skipped and counted, or with ``strict``
    (resuming, where every event must be kept) a RunFileError naming the file and line.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return EventLog([], [])
    events, bad = [], []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or not JSON
            event = None
        if not isinstance(event, dict):
            if strict:
                raise RunFileError(f"{path}:{n} is not a JSON event")
            logger.warning("%s:%d is not a JSON event; skipped", path, n)
            bad.append(n)
            continue
        events.append(event)
    return EventLog(events, bad)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Return every event of a run's metrics.jsonl; a damaged line is a RunFileError."""
    return read_events(run_dir, strict=True).events


def _finite(values: Any) -> dict[str, float]:
    """Keep the finite numbers of a metrics mapping (summary files are read defensively)."""
    if not isinstance(values, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


@dataclass
class Summary:
    """summary.json: the final ROUGE per client and its client-weighted mean, by round too."""

    fed_alg: str
    seed: int | None
    num_rounds: int | None
    wall_seconds: float | None
    final_round: int | None
    final: dict[str, float]
    final_per_client: dict[str, dict[str, float]]
    by_round: dict[int, dict[str, float]]
    model_loads_per_process: dict[str, int]
    model_source: dict | None = None  # what model_name_or_path resolved to (config.json's)

    def to_json(self) -> dict:
        """Return the JSON object written to summary.json (by_round keyed by strings)."""
        data = asdict(self)
        data["by_round"] = {str(r): m for r, m in self.by_round.items()}
        return data

    @classmethod
    def from_json(cls, data: Any) -> Summary:
        """Read a summary.json object; fields of the wrong type read as absent."""
        if not isinstance(data, Mapping):
            raise RunFileError("summary.json is not a JSON object")

        def integer(key):
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        wall = _finite({"w": data.get("wall_seconds")}).get("w")
        by_round = {}
        for key, metrics in (data.get("by_round") or {}).items():
            if str(key).isdigit():
                by_round[int(key)] = _finite(metrics)
        per_client = data.get("final_per_client")
        loads = data.get("model_loads_per_process")
        source = data.get("model_source")
        return cls(
            fed_alg=str(data.get("fed_alg") or ""),
            seed=integer("seed"),
            num_rounds=integer("num_rounds"),
            wall_seconds=wall,
            final_round=integer("final_round"),
            final=_finite(data.get("final")),
            final_per_client={str(c): _finite(m) for c, m in (per_client or {}).items()}
            if isinstance(per_client, Mapping)
            else {},
            by_round=dict(sorted(by_round.items())),
            model_loads_per_process=dict(loads) if isinstance(loads, Mapping) else {},
            model_source=source if isinstance(source, dict) else None,
        )


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFileError(f"{path} cannot be read ({exc})") from exc


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """Return a run's config.json: ``config`` (the resolved config) and ``base_model_path``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFileError(f"'{run_dir}' is not a run directory: it has no config.json")
    data = _read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise RunFileError(f"{path} holds no run config (no 'config' object)")
    return data


def read_clustering(run_dir: str | os.PathLike) -> dict:
    """Return a run's clustering.json: global centroids, cluster tasks, each client's matching."""
    path = Path(run_dir) / "clustering.json"
    if not path.is_file():
        raise RunFileError(f"run directory '{run_dir}' has no clustering.json")
    data = _read_json_file(path)
    keys = ("global_centroids", "cluster_tasks", "clients")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise RunFileError(f"{path} lacks one of {', '.join(keys)}")
    return data


def read_summary(run_dir: str | os.PathLike) -> Summary | None:
    """Return a run's summary (None when it has none); a damaged file is a RunFileError."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFileError(f"summary.json is damaged ({exc})") from exc
    return Summary.from_json(data)
