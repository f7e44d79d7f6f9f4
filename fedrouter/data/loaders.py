"""Load every task of a benchmark as rows `{"instruction", "response", "task"}`.

`multitask_synthetic` is generated in-process. `multitask` reads each task from the
Hugging Face Hub (ids in `registry.py`) or, with `local_data_dir`, from local files laid
out as

    <local_data_dir>/<task name>/*.parquet | *.jsonl | *.json | *.csv

one format per task folder, in the Hub's columns:

    qqp       question1, question2, label (0/1; -1 rows are dropped)
    webnlg    input (list of "subject | property | object" strings), target
    samsum    dialogue, summary
    gigaword  document, summary

Extra columns are ignored. With `local_data_dir`, every task must be present locally.
Unusable rows are dropped; a task that keeps none of its rows is an error, and one that keeps
fewer than half gets a warning, each naming the file, the column and the type found.
"""

from __future__ import annotations

import codecs
import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedrouter.data.errors import DataError
from fedrouter.data.registry import INSTRUCTION_FORMATS, POOL_ORDER, TaskSpec, tasks_for
from fedrouter.data.sampling import balanced_quotas, permuted
from fedrouter.data.synthetic import SYNTHETIC_BENCHMARK, generate_synthetic

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

Row = dict[str, str]

# File suffix -> `datasets` packaged builder. JSON and JSON Lines share the "json" builder.
LOCAL_FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
}
_FORMATS_HINT = "*.parquet, *.jsonl, *.json or *.csv"


class _Source(Protocol):
    """A task's examples, addressable by index without materialising them all."""

    def __len__(self) -> int:
        """Return the number of examples."""
        ...

    def rows(self, indices: Sequence[int]) -> list[Row]:
        """Return the usable rows among the examples at `indices`, in that order."""
        ...

    def why_dropped(self, indices: Sequence[int]) -> str:
        """Say which file, column and type made the examples at `indices` unusable."""
        ...


class _RowSource:
    """Rows that are already in memory (the synthetic benchmark)."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, indices: Sequence[int]) -> list[Row]:
        return [self._rows[i] for i in indices]

    def why_dropped(self, indices: Sequence[int]) -> str:
        return "generated rows are never dropped"


class _DatasetSource:
    """One or more `datasets.Dataset` parts of a task, mapped to rows on demand.

    `names` says where each part came from (a file, or the Hub id), for messages.
    """

    def __init__(self, spec: TaskSpec, parts: list[Dataset], names: list[str]) -> None:
        self._spec = spec
        self._parts = parts
        self._names = names

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    def _examples(self, indices: Sequence[int]) -> list[tuple[str, dict]]:
        """Return (where from, example) for each index, in the order of `indices`."""
        examples: dict[int, tuple[str, dict]] = {}
        offset = 0
        for part, name in zip(self._parts, self._names, strict=True):
            wanted = [i for i in indices if offset <= i < offset + len(part)]
            # `select` + `to_list` converts only the requested examples, not the whole split.
            if wanted:
                selected = part.select([i - offset for i in wanted]).to_list()
                examples.update((i, (name, ex)) for i, ex in zip(wanted, selected, strict=True))
            offset += len(part)
        return [examples[i] for i in indices]

    def rows(self, indices: Sequence[int]) -> list[Row]:
        mapped = (self._spec.to_row(example) for _, example in self._examples(indices))
        return [row for row in mapped if row is not None]  # unusable examples are dropped

    def why_dropped(self, indices: Sequence[int]) -> str:
        causes: Counter[tuple[str, str, str]] = Counter()
        for name, example in self._examples(indices):
            if self._spec.to_row(example) is None:
                causes[(name, *self._spec.why_unusable(example))] += 1
        return "; ".join(
            f"{count} in {name}: column {column!r} holds {found}"
            if column
            else f"{count} in {name}: {found}"
            for (name, column, found), count in causes.most_common(3)
        )


def _synthetic_sources(
    specs: list[TaskSpec], local_data_dir: str | None, overlap: float = 0.0
) -> dict[str, _Source]:
    """Generate the synthetic benchmark, at the given overlap, and group it by task."""
    if local_data_dir is not None:
        logger.warning("local_data_dir is ignored for the generated multitask_synthetic data")
    by_task: dict[str, list[Row]] = {spec.name: [] for spec in specs}
    for row in generate_synthetic(overlap=overlap):
        by_task[row["task"]].append(row)
    return {task: _RowSource(rows) for task, rows in by_task.items()}


def _hub_or_local_sources(
    specs: list[TaskSpec], local_data_dir: str | None, overlap: float = 0.0
) -> dict[str, _Source]:
    """Open every task from local files when a directory is given, else from the Hub.

    `overlap` is the synthetic benchmark's alone; _load_cached lets only 0 through.
    """
    if local_data_dir is None:
        return {
            spec.name: _DatasetSource(spec, [_read_hub(spec)], [spec.describe_source()])
            for spec in specs
        }
    root = Path(local_data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"local_data_dir {str(root)!r} does not exist or is not a directory; expected "
            f"{root}/<task>/{_FORMATS_HINT} for tasks {', '.join(s.name for s in specs)}"
        )
    sources = {}
    for spec in specs:
        files = _local_files(spec, root)
        parts = [_read_local_file(spec, path) for path in files]
        sources[spec.name] = _DatasetSource(spec, parts, [str(path) for path in files])
    return sources


_SOURCE_READERS: dict[str, Callable[[list[TaskSpec], str | None, float], dict[str, _Source]]] = {
    "multitask": _hub_or_local_sources,
    "multitask_synthetic": _synthetic_sources,
}


def _columns_hint(spec: TaskSpec) -> str:
    """Name the columns a task's files must have."""
    return ", ".join(spec.required_columns)


def _read_hub(spec: TaskSpec) -> Dataset:
    """Load a task's split from the Hub, turning any failure into an actionable DataError."""
    import datasets  # lazy: the synthetic path should not pay for importing `datasets`

    logger.info("Loading task %s from the Hub (%s)", spec.name, spec.describe_source())
    data_files = dict(spec.hub_data_files) if spec.hub_data_files else None
    try:
        dataset = datasets.load_dataset(
            spec.hub_id,
            spec.hub_config,
            split=spec.split,
            revision=spec.revision,
            data_files=data_files,
        )
    except Exception as err:  # offline, moved, gated, script-based: all need the same advice
        raise DataError(
            f"Could not load task {spec.name!r} from the Hugging Face Hub "
            f"({spec.describe_source()}): {type(err).__name__}: {err}. "
            f"If you are offline or the dataset has moved, pass --local_data_dir DIR with "
            f"DIR/{spec.name}/{_FORMATS_HINT} in the Hub's columns ({_columns_hint(spec)}), "
            f"or change the id in fedrouter/data/registry.py."
        ) from err
    _check_columns(spec, dataset.column_names, f"Hub dataset {spec.describe_source()}")
    return dataset.select_columns(list(spec.required_columns))


def _local_files(spec: TaskSpec, root: Path) -> list[Path]:
    """Return the files of one task folder, all of one format."""
    task_dir = root / spec.name
    files = (
        sorted(p for p in task_dir.iterdir() if p.suffix in LOCAL_FORMATS)
        if task_dir.is_dir()
        else []
    )
    if not files:
        raise DataError(
            f"No files for task {spec.name!r}: expected {task_dir}/{_FORMATS_HINT} "
            f"with columns {_columns_hint(spec)}"
        )
    builders = {LOCAL_FORMATS[p.suffix] for p in files}
    if len(builders) > 1:
        raise DataError(f"{task_dir} mixes file formats ({', '.join(sorted(builders))}); use one")
    logger.info("Loading task %s from %d local file(s) in %s", spec.name, len(files), task_dir)
    return files


def _check_utf8(path: Path) -> None:
    """Raise a DataError naming the line of a text file's first byte that is not UTF-8.

    pyarrow reads such bytes without complaint and fails only when a row is converted.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as stream:
        try:
            while chunk := stream.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return
        except UnicodeDecodeError:
            pass  # rare: find the line, reading the file again line by line
        stream.seek(0)
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}, line {number}: byte 0x{line[err.start]:02x} is not UTF-8; "
                    "save the file as UTF-8"
                ) from None
        raise DataError(f"{path} ends inside a UTF-8 character; save the file as UTF-8")


def _holds_no_rows(path: Path) -> bool:
    """Return whether a text file is blank, or a CSV holds at most its header."""
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    return len(text.splitlines()) <= 1 if path.suffix == ".csv" else text in ("", "[]")


def _read_local_file(spec: TaskSpec, path: Path) -> Dataset:
    """Load one local file and keep the task's columns."""
    import datasets  # lazy, as in _read_hub

    empty = f"{path} (task {spec.name!r}) is empty: no rows; expected columns {_columns_hint(spec)}"
    if path.stat().st_size == 0:
        raise DataError(empty)
    if path.suffix != ".parquet":
        _check_utf8(path)
    try:
        dataset = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path))["train"]
    except Exception as err:
        if path.suffix != ".parquet" and _holds_no_rows(path):
            raise DataError(empty) from err
        reason = str(err).strip() or type(err).__name__
        raise DataError(f"Could not read {path} for task {spec.name!r}: {reason}") from err
    if len(dataset) == 0:
        raise DataError(empty)
    _check_columns(spec, dataset.column_names, str(path))
    return dataset.select_columns(list(spec.required_columns))


def _check_columns(spec: TaskSpec, columns: Sequence[str], where: str) -> None:
    """Raise a DataError naming the columns `where` lacks."""
    missing = [column for column in spec.required_columns if column not in columns]
    if missing:
        raise DataError(
            f"{where} (task {spec.name!r}) lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(columns) or 'none'}. Expected the Hub's columns: "
            f"{_columns_hint(spec)}"
        )


def _pool(spec: TaskSpec, source: _Source) -> list[Row]:
    """Return a task's pool: its first `pool_size` rows after a seed-0 shuffle, else all."""
    n = len(source)
    if spec.pool_size is not None and n > spec.pool_size:
        # datasets' `shuffle(seed=0).select(range(k))` draws this very permutation
        indices = permuted(range(n), 0)[: spec.pool_size]
    else:
        indices = list(range(n))
    rows = source.rows(indices)
    logger.info("Task %s: %d of %d examples in the pool", spec.name, len(rows), n)
    if not rows:
        raise DataError(
            f"Task {spec.name!r} keeps none of its {len(indices)} rows; dropped "
            f"{source.why_dropped(indices)}"
        )
    if 2 * len(rows) < len(indices):
        logger.warning(
            "Task %s keeps only %d of %d rows; dropped %s",
            spec.name,
            len(rows),
            len(indices),
            source.why_dropped(indices),
        )
    return rows


def _cap_balanced(rows: list[Row], dataset_sample: int) -> list[Row]:
    """Keep at most `dataset_sample` rows, spread evenly over tasks, in their order."""
    if dataset_sample == -1 or dataset_sample >= len(rows):
        return rows
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row["task"]] = sizes.get(row["task"], 0) + 1
    quotas = balanced_quotas(sizes, dataset_sample)
    kept = []
    for row in rows:
        if quotas[row["task"]] > 0:
            quotas[row["task"]] -= 1
            kept.append(row)
    return kept


@dataclass(frozen=True)
class Pools:
    """A benchmark after the global train/test split, before any client split."""

    train: tuple[Row, ...]
    test: tuple[Row, ...]


@functools.lru_cache(maxsize=8)
def _load_cached(
    dataset_name: str,
    local_data_dir: str | None,
    dataset_sample: int,
    train_split: float,
    instruction_format: str,
    synthetic_overlap: float = 0.0,
) -> Pools:
    """Load a benchmark once per process and argument set."""
    specs = tasks_for(dataset_name)
    if dataset_sample == 0 or dataset_sample < -1:
        raise DataError(f"dataset_sample must be positive or -1 (all), got {dataset_sample}")
    if not 0.0 < train_split < 1.0:
        raise DataError(f"train_split must be in (0, 1), got {train_split}")
    if instruction_format not in INSTRUCTION_FORMATS:
        raise DataError(
            f"Unknown instruction_format {instruction_format!r}; "
            f"valid: {', '.join(INSTRUCTION_FORMATS)}"
        )
    if not 0.0 <= synthetic_overlap <= 1.0:
        raise DataError(f"synthetic_overlap must be in [0, 1], got {synthetic_overlap}")
    if synthetic_overlap and dataset_name != SYNTHETIC_BENCHMARK:
        raise DataError(
            f"synthetic_overlap={synthetic_overlap} applies to {SYNTHETIC_BENCHMARK} only, "
            f"not {dataset_name}"
        )
    sources = _SOURCE_READERS[dataset_name](specs, local_data_dir, synthetic_overlap)
    by_name = {spec.name: spec for spec in specs}
    # The reference's get_dataset: the pools, concatenated in its order, shuffled with seed 0.
    rows = permuted(
        [row for name in POOL_ORDER[dataset_name] for row in _pool(by_name[name], sources[name])],
        0,
    )
    if not rows:
        raise DataError(f"Benchmark {dataset_name!r} has no usable rows")
    rows = _cap_balanced(rows, dataset_sample)
    if instruction_format == "phrased":
        rows = [
            {**row, "instruction": by_name[row["task"]].phrase(row["instruction"])} for row in rows
        ]
    # One global train/test split with seed 0, as `train_test_split(test_size, seed=0)` does.
    n_test = math.ceil((1.0 - train_split) * len(rows))
    order = permuted(range(len(rows)), 0)
    return Pools(
        train=tuple(rows[i] for i in order[n_test:]), test=tuple(rows[i] for i in order[:n_test])
    )


def load_benchmark(
    dataset_name: str,
    *,
    local_data_dir: str | Path | None = None,
    dataset_sample: int = 400_000,
    train_split: float = 0.8,
    instruction_format: str = "raw",
    synthetic_overlap: float = 0.0,
) -> Pools:
    """Return a benchmark's global train and test pools, as the reference builds them.

    Each task's pool (QQP and Gigaword: 30,000 rows after a seed-0 shuffle; the others whole)
    is mapped to rows, the pools are concatenated and shuffled with seed 0, capped at
    `dataset_sample` rows (task-balanced; the default is above the pools' size, so a no-op,
    as in the reference), and split once into train and test with seed 0. Nothing here
    depends on the run seed. `synthetic_overlap` (multitask_synthetic only) makes its tasks'
    inputs harder to tell apart. Loading is cached per process; treat the rows as read-only.
    """
    local = None if local_data_dir is None else str(local_data_dir)
    return _load_cached(
        dataset_name,
        local,
        dataset_sample,
        train_split,
        instruction_format,
        float(synthetic_overlap),
    )
