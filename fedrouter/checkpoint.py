"""Server checkpoints: everything needed to continue a run after its last completed round.

One file, ``checkpoint.npz``, rewritten atomically at the end of every ``save_every`` rounds:
the adapter of every cluster, the global centroids, each client's local centroids and matched
clusters (by partition id, since node ids change between processes), the evaluation history
and how many events metrics.jsonl held. Client state is not stored: local clustering is
deterministic, so clients redo it on resume, and the server checks that they get the same
centroids.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrouter.atomic import atomic_write
from fedrouter.errors import FedRouterError

CHECKPOINT = "checkpoint.npz"
_META = "__meta__"
# Fields that may differ between a run and its resumption: they change how, not what, it runs.
RESUME_FREE_FIELDS = ("resume", "debug", "client_resources_cpus", "client_resources_gpus")


class CheckpointError(FedRouterError):
    """A checkpoint is missing, damaged, or belongs to another config."""


@dataclass
class Checkpoint:
    """What a checkpoint holds."""

    server_round: int
    arrays: dict[str, np.ndarray]
    meta: dict


def save_checkpoint(run_dir: Path, server_round: int, arrays: dict, meta: dict) -> Path:
    """Write the checkpoint of ``server_round`` atomically and return its path."""
    path = Path(run_dir) / CHECKPOINT
    meta_bytes = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
    payload = {**arrays, _META: meta_bytes}
    return atomic_write(path, lambda handle: np.savez(handle, **payload), suffix=".npz")


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read a run's checkpoint, with a clear error if it is missing or damaged."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from in {run_dir} (missing {CHECKPOINT})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key != _META}
            meta = json.loads(bytes(data[_META]).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged or truncated: {exc}") from exc
    return Checkpoint(int(meta["server_round"]), arrays, meta)


def read_checkpoint_round(run_dir: Path) -> int | None:
    """Return the round a run's checkpoint holds, reading its metadata only (None if unreadable)."""
    path = Path(run_dir) / CHECKPOINT
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(json.loads(bytes(data[_META]).decode())["server_round"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None


def config_differences(saved: dict, current: dict) -> list[str]:
    """List the config keys whose values differ, ignoring those free to change on resume."""
    keys = sorted((set(saved) | set(current)) - set(RESUME_FREE_FIELDS))
    return [
        f"{key}: {saved.get(key)!r} in the run, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def find_run_to_resume(
    output_dir: str | os.PathLike, name: str, current: dict
) -> tuple[Path, Checkpoint]:
    """Return the newest run folder ``name`` / ``name_<n>`` of this config, and its checkpoint.

    A missing, damaged or foreign checkpoint, or a finished run, is a CheckpointError.
    """
    root = Path(output_dir)
    named = [root / name, *root.glob(f"{name}_*")]
    candidates = [p for p in named if (p / "config.json").is_file()]
    if not candidates:
        raise CheckpointError(f"nothing to resume: no run '{name}' under {root}")
    run_dir = max(candidates, key=lambda p: (p / "config.json").stat().st_mtime)
    saved = json.loads((run_dir / "config.json").read_text()).get("config", {})
    diffs = config_differences(saved, current)
    if diffs:
        raise CheckpointError(f"cannot resume {run_dir}: config differs ({'; '.join(diffs)})")
    if (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir} has already finished (summary.json exists)")
    return run_dir, load_checkpoint(run_dir)
