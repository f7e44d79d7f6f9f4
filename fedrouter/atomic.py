"""Atomic writes: a file or a folder appears whole, under its final name, or not at all.

Everything the project writes goes through here: the run directory's files, checkpoints,
adapters, reports and plots, the built offline models. Each write fills a hidden sibling
(``.<name>.<random>``) and renames it into place, so a crash or a kill never leaves a
half-written file under the real name; ``fedrouter.supervise`` removes the hidden leftovers
of a run it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

SHARED_MODE = 0o644  # temporary files are created 0600; results are meant to be shared


def jsonable(value: Any) -> Any:
    """Turn numpy scalars and arrays (and mappings and sequences of them) into JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], suffix: str = "") -> Path:
    """Create ``path`` by calling ``write(handle)`` on a hidden sibling, then renaming it.

    ``suffix`` keeps the sibling's extension for writers that look at it (numpy, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, SHARED_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(jsonable(data), indent=2) + "\n")


@contextmanager
def atomic_folder(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; on success it becomes ``path``.

    With ``replace``, an existing ``path`` is swapped out; without it, an existing complete
    ``path`` (another process finished the same deterministic build first) is kept and the
    new folder dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists() and replace:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
