"""Summarise every run under an output folder into results.md, results.csv and PNG plots.

Usage: ``python -m fedrouter.report OUTPUT_DIR [--out FOLDER]``.

A run directory is any folder under OUTPUT_DIR whose ``config.json`` has a "config" key.
Complete runs (summary.json with final metrics) are averaged over seeds per method and
scenario; incomplete and failed runs are listed in results.md, never averaged.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrouter import methods
from fedrouter.atomic import atomic_write, atomic_write_text
from fedrouter.checkpoint import CHECKPOINT
from fedrouter.errors import FedRouterError
from fedrouter.events import Clustering, Eval, EventLog, Train
from fedrouter.results import RunFileError, check_writable, read_events, read_summary

logger = logging.getLogger(__name__)

COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"
METHOD_ORDER = methods.report_order()
METHOD_LABELS = {m.name: m.label for m in methods.METHODS}
SCENARIO_ORDER = ("single", "interference", "generalization")
DEFAULT_SCENARIO = "custom"  # runs written before config had a scenario field
# relative gains are taken against these
BASELINES = {m.name: m.gain_label for m in methods.METHODS if m.gain_label}
ROUTING = "routing-accuracy"  # the key summary.json uses
# The methods that route each test sample among global adapters; the others report a routing
# accuracy too, but with one adapter per client (or one for all) it measures nothing.
ROUTED_METHODS = ("clustered", "router_oracle")
CSV_COLUMNS = (
    "method",
    "scenario",
    "n_seeds",
    "rouge1_mean",
    "rouge1_std",
    "rougeL_mean",
    "rougeL_std",
    "routing_accuracy_mean",
    "rel_to_fedavg_pct",
    "rel_to_local_pct",
    "synthetic_overlap",
    "local_purity_mean",
)
MISSING = "—"
# Files only a run directory holds: a folder with one of them and an unreadable config.json
# is a damaged run, not a model folder.
RUN_FILES = {"metrics.jsonl", "summary.json", "clustering.json", CHECKPOINT}
NOTE_CHARS = 120  # keeps the incomplete-runs table readable when an error is long


@dataclass
class RunRecord:
    """One run directory, as read from its files."""

    path: Path
    method: str
    scenario: str
    seed: int | None
    status: str
    final: dict[str, float] = field(default_factory=dict)
    by_round: dict[int, dict[str, float]] = field(default_factory=dict)
    last_round: int | None = None  # last evaluated round
    clustering: dict | None = None
    num_rounds: int | None = None
    note: str = ""  # why the run is not complete
    wall_seconds: float | None = None
    rounds_trained: dict[int, int] = field(default_factory=dict)  # global cluster -> rounds
    local_purity: float | None = None  # clients' mean local k-means purity (true tasks)
    overlap: float = 0.0  # the benchmark's synthetic_overlap (0 in runs from before the knob)


@dataclass
class Row:
    """Seed statistics of one (method, scenario) pair of complete runs."""

    method: str
    scenario: str
    n_seeds: int
    rouge1_mean: float | None
    rouge1_std: float | None  # None when n_seeds < 2
    rougeL_mean: float | None
    rougeL_std: float | None
    routing_accuracy_mean: float | None
    rel_to_fedavg_pct: float | None = None
    rel_to_local_pct: float | None = None
    seeds: tuple = ()
    overlap: float = 0.0
    local_purity_mean: float | None = None


# ----- reading ---------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    """Return the JSON in ``path``, or None (with a warning) when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        logger.warning("skipping unreadable %s: %s", path, exc)
        return None


def _last_round(records: Iterable[Train | Eval]) -> int | None:
    """Return the highest round among records."""
    rounds = [r.round for r in records if r.round is not None]
    return max(rounds) if rounds else None


def rounds_trained(trains: Iterable[Train], n_clusters: int = 0) -> dict[int, int]:
    """Return {global cluster: number of rounds in which at least one client trained it}.

    A global adapter that sits out rounds gets fewer updates; with a fixed step budget per
    round this explains differences between seeds that routing accuracy does not. Clusters
    ``0 .. n_clusters-1`` that no train event names count 0, as long as the run has train
    events at all (without any, nothing is known and the result is empty).
    """
    rounds: dict[int, set] = defaultdict(set)
    for t in trains:
        if t.global_cluster is not None and t.round is not None:
            rounds[int(t.global_cluster)].add(t.round)
    if rounds:
        for cluster in range(n_clusters):
            rounds.setdefault(cluster, set())
    return {cluster: len(rounds[cluster]) for cluster in sorted(rounds)}


def local_purity(clusterings: Iterable[Clustering]) -> float | None:
    """Return the clients' mean local-cluster purity from the clustering events, if any.

    A client's purity is the share of its training samples whose local cluster's majority
    task is their own: 1.0 when local k-means splits tasks exactly.
    """
    values = [
        c.local_purity
        for c in clusterings
        if c.local_purity is not None and c.local_purity >= 0  # -1: the client did not report it
    ]
    return sum(values) / len(values) if values else None


def _one_line(text: str) -> str:
    """Collapse whitespace and shorten to NOTE_CHARS characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…"


def _unfinished_status(log: EventLog, num_rounds: int | None, has_summary: bool):
    """Return (status, note) of a run that has no final metrics."""
    failures = log.failures()
    if failures:
        last = failures[-1]
        where = last.phase if last.phase is not None else "?"
        if last.round is not None:
            where += f" round {last.round}"
        error = last.error if last.error is not None else "unknown error"
        return FAILED, _one_line(f"{where}: {error}")
    trained = _last_round(log.trains())
    progress = f"last trained round {trained if trained is not None else '-'}"
    if num_rounds is not None:
        progress += f" of {num_rounds}"
    reason = "summary.json has no final metrics" if has_summary else "no summary.json"
    return INCOMPLETE, f"{reason} ({progress})"


def _clustering_fault(clustering: Any) -> str:
    """Return why clustering.json cannot be drawn, or an empty string when it can."""
    if not isinstance(clustering, dict):
        return "clustering.json is not a JSON object"
    try:
        cluster_matrix(clustering)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        return f"clustering.json is malformed ({type(exc).__name__}: {exc})"
    return ""


def load_run(run_dir: Path, config: dict) -> RunRecord:
    """Read one run directory whose config.json holds ``config``."""
    notes = []
    try:
        summary = read_summary(run_dir)
    except RunFileError as exc:
        notes.append(str(exc))
        summary, damaged = None, True
    else:
        damaged = False
    seed = config.get("seed", summary.seed if summary else None)
    num_rounds = config.get("num_rounds", summary.num_rounds if summary else None)
    record = RunRecord(
        path=run_dir,
        method=str(config.get("fed_alg") or (summary.fed_alg if summary else "") or "unknown"),
        scenario=str(config.get("scenario") or DEFAULT_SCENARIO),
        seed=seed if isinstance(seed, int) else None,
        status=COMPLETE,
        num_rounds=num_rounds if isinstance(num_rounds, int) else None,
    )
    overlap = config.get("synthetic_overlap", 0.0)
    if isinstance(overlap, (int, float)) and not isinstance(overlap, bool):
        record.overlap = float(overlap)
    clustering_path = run_dir / "clustering.json"
    if clustering_path.is_file():
        clustering = _read_json(clustering_path)
        fault = _clustering_fault(clustering)
        record.clustering = None if fault else clustering
        if fault:
            notes.append(fault)
    log = read_events(run_dir)
    notes.append(log.note())
    centroids = (record.clustering or {}).get("global_centroids")
    n_adapters = len(centroids) if isinstance(centroids, list) else 0
    record.rounds_trained = rounds_trained(log.trains(), n_adapters)
    record.local_purity = local_purity(log.clusterings())
    if summary is not None:
        record.wall_seconds = summary.wall_seconds
        record.final = summary.final
        record.by_round = summary.by_round
        record.last_round = summary.final_round
    if not record.final:
        record.last_round = _last_round(log.evals())
        record.status, why = _unfinished_status(log, record.num_rounds, summary is not None)
        if damaged:
            record.status, why = FAILED, ""  # the damage note says it
        notes.insert(0, why)
    record.note = _one_line("; ".join(n for n in notes if n))
    return record


def damaged_run(run_dir: Path, why: str) -> RunRecord:
    """Return the record of a run directory whose config.json cannot be read."""
    return RunRecord(
        path=run_dir,
        method="unknown",
        scenario=DEFAULT_SCENARIO,
        seed=None,
        status=FAILED,
        note=_one_line(f"config.json is damaged ({why}); the run cannot be identified"),
    )


def collect_runs(output_dir: str | os.PathLike) -> list[RunRecord]:
    """Read every run directory under ``output_dir``, recursively, in path order."""
    root = Path(output_dir)
    if not root.is_dir():
        raise FedRouterError(f"output dir '{root}' does not exist or is not a folder")
    runs = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "config.json" not in filenames:
            continue
        payload = _read_json(Path(folder) / "config.json")
        # A model folder also has a config.json; only ours wraps the fields in "config".
        if isinstance(payload, dict) and isinstance(payload.get("config"), dict):
            runs.append(load_run(Path(folder), payload["config"]))
        elif payload is None and RUN_FILES & set(filenames):
            # unreadable, but the folder holds a run's files: list it, never drop it
            runs.append(damaged_run(Path(folder), "not readable JSON"))
    return sorted(runs, key=lambda r: str(r.path))


# ----- statistics ------------------------------------------------------------------------
def method_key(method: str) -> tuple:
    """Sort key: the preferred methods first, then the others alphabetically."""
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (order, method)


def scenario_key(scenario: str) -> tuple:
    """Sort key: the paper's scenarios first, then the others alphabetically."""
    order = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
    return (order, scenario)


def setting_key(scenario: str, overlap: float) -> tuple:
    """Sort key of a setting: its scenario, then its synthetic_overlap."""
    return (*scenario_key(scenario), overlap)


def setting_label(scenario: str, overlap: float) -> str:
    """Name a setting in tables: the scenario, with the knob when it is not 0."""
    return scenario if not overlap else f"{scenario}, overlap {overlap:g}"


def method_label(method: str) -> str:
    """Return the name a method has in tables and legends."""
    return METHOD_LABELS.get(method, method)


def relative_gain(value: float | None, baseline: float | None) -> float | None:
    """Return ``(value - baseline) / baseline * 100``, or None when it is undefined."""
    if value is None or baseline is None or baseline == 0:
        return None
    return (value - baseline) / baseline * 100


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Return the mean and the sample std (ddof=1); std is None for fewer than two values."""
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def split_duplicates(runs: Iterable[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """Split complete runs into one per (method, scenario, overlap, seed) and older repeats.

    A rerun gets a new folder (``name_2``); averaging both would count one seed twice, so
    the run whose summary.json is newest is kept.
    """
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.status == COMPLETE:
            groups[(run.method, run.scenario, run.overlap, run.seed)].append(run)
    kept, repeats = [], []
    for group in groups.values():
        group.sort(key=lambda r: ((r.path / "summary.json").stat().st_mtime, str(r.path)))
        kept.append(group[-1])
        repeats.extend(group[:-1])
    return sorted(kept, key=lambda r: str(r.path)), sorted(repeats, key=lambda r: str(r.path))


def _values(runs: Iterable[RunRecord], key: str) -> list[float]:
    return [r.final[key] for r in runs if key in r.final]


def aggregate(runs: Iterable[RunRecord]) -> list[Row]:
    """Average the complete runs over seeds per (method, scenario, overlap); add gains."""
    groups: dict[tuple[str, str, float], list[RunRecord]] = defaultdict(list)
    for run in split_duplicates(runs)[0]:
        groups[(run.method, run.scenario, run.overlap)].append(run)
    rows = []
    for (method, scenario, overlap), group in groups.items():
        if len({r.num_rounds for r in group}) > 1:
            logger.warning("%s/%s mixes runs of different num_rounds", method, scenario)
        rouge1 = mean_std(_values(group, "rouge1"))
        rouge_l = mean_std(_values(group, "rougeL"))
        rows.append(
            Row(
                method=method,
                scenario=scenario,
                n_seeds=len(group),
                rouge1_mean=rouge1[0],
                rouge1_std=rouge1[1],
                rougeL_mean=rouge_l[0],
                rougeL_std=rouge_l[1],
                routing_accuracy_mean=mean_std(_values(group, ROUTING))[0],
                seeds=tuple(sorted((r.seed for r in group), key=lambda s: (s is None, s or 0))),
                overlap=overlap,
                local_purity_mean=mean_std(
                    [r.local_purity for r in group if r.local_purity is not None]
                )[0],
            )
        )
    baseline = {(r.method, r.scenario, r.overlap): r.rouge1_mean for r in rows}
    for row in rows:
        setting = (row.scenario, row.overlap)
        row.rel_to_fedavg_pct = relative_gain(row.rouge1_mean, baseline.get(("fedavg", *setting)))
        row.rel_to_local_pct = relative_gain(row.rouge1_mean, baseline.get(("local", *setting)))
    return sorted(rows, key=lambda r: (method_key(r.method), setting_key(r.scenario, r.overlap)))


# ----- formatting ------------------------------------------------------------------------
def format_mean_std(mean: float | None, std: float | None, n: int) -> str:
    """Format ``mean ± std (n=N)``, or ``mean (n=1)`` for a single seed."""
    if mean is None:
        return MISSING
    if std is None:
        return f"{mean:.4f} (n={n})"
    return f"{mean:.4f} ± {std:.4f} (n={n})"


def format_gain(pct: float | None) -> str:
    """Format a relative gain in percent with its sign, e.g. ``+6.1%``; ``n/a`` if undefined."""
    return "n/a" if pct is None else f"{pct:+.1f}%"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _md_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in body]
    return lines + [""]


def _settings(rows: Iterable[Row]) -> list[tuple[str, float]]:
    """Return the rows' (scenario, overlap) settings in table order."""
    return sorted({(r.scenario, r.overlap) for r in rows}, key=lambda s: setting_key(*s))


def _grid(rows: list[Row], cell) -> tuple[list[str], list[list[str]]]:
    """Lay rows out as method × setting, ``cell(row)`` giving each cell's text."""
    settings = _settings(rows)
    methods = sorted({r.method for r in rows}, key=method_key)
    index = {(r.method, r.scenario, r.overlap): r for r in rows}
    body = []
    for method in methods:
        cells = [cell(index[(method, *s)]) if (method, *s) in index else MISSING for s in settings]
        body.append([method_label(method), *cells])
    return ["Method", *(setting_label(*s) for s in settings)], body


def _gain_table(rows: list[Row]) -> list[str]:
    settings = _settings(rows)
    scenarios = [setting_label(*s) for s in settings]
    header = ["Method"] + [f"{s} vs {name}" for s in scenarios for name in BASELINES.values()]

    def cells(row: Row) -> list[str]:
        return [format_gain(row.rel_to_fedavg_pct), format_gain(row.rel_to_local_pct)]

    index = {(r.method, r.scenario, r.overlap): r for r in rows}
    body = []
    for method in sorted({r.method for r in rows}, key=method_key):
        line = [method_label(method)]
        for s in settings:
            line += cells(index[(method, *s)]) if (method, *s) in index else [MISSING, MISSING]
        body.append(line)
    return _md_table(header, body)


def _run_identity(run: RunRecord, root: Path) -> list[str]:
    """The first cells of a per-run table row: path, method, scenario, seed."""
    try:
        path = run.path.relative_to(root)
    except ValueError:
        path = run.path
    seed = MISSING if run.seed is None else str(run.seed)
    return [f"`{path}`", method_label(run.method), setting_label(run.scenario, run.overlap), seed]


def _run_rows(runs: Iterable[RunRecord], root: Path) -> list[list[str]]:
    body = []
    for run in runs:
        body.append(
            [
                *_run_identity(run, root),
                run.status,
                MISSING if run.last_round is None else str(run.last_round),
                run.note or MISSING,
            ]
        )
    return body


def format_duration(seconds: float) -> str:
    """Format seconds as ``1h02m03s`` / ``2m03s`` / ``3s``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _wall_line(runs: Iterable[RunRecord]) -> str:
    walls = [r.wall_seconds for r in runs if r.wall_seconds is not None]
    if not walls:
        return "No averaged run records its wall time."
    return (
        f"Wall time of the averaged runs (summary.json `wall_seconds`): "
        f"{format_duration(sum(walls))} in all over {len(walls)} runs; per run "
        f"{format_duration(statistics.fmean(walls))} mean, {format_duration(min(walls))} to "
        f"{format_duration(max(walls))}."
    )


def _detail_rows(runs: Iterable[RunRecord], root: Path) -> list[list[str]]:
    """One row per averaged run: its final metrics, wall time and training coverage."""
    body = []
    ordered = sorted(
        runs,
        key=lambda r: (
            setting_key(r.scenario, r.overlap),
            method_key(r.method),
            r.seed or 0,
            str(r.path),
        ),
    )
    for run in ordered:
        routing = run.final.get(ROUTING)
        body.append(
            [
                *_run_identity(run, root),
                f"{run.final['rouge1']:.4f}" if "rouge1" in run.final else MISSING,
                MISSING if routing is None else f"{routing:.4f}",
                MISSING if run.local_purity is None else f"{run.local_purity:.3f}",
                MISSING if run.wall_seconds is None else f"{run.wall_seconds:.0f}",
                ", ".join(str(n) for n in run.rounds_trained.values()) or MISSING,
                run.note or MISSING,
            ]
        )
    return body


def spans_difficulty(rows: Iterable[Row]) -> bool:
    """Return whether the complete runs span more than one synthetic_overlap value."""
    return len({r.overlap for r in rows}) > 1


def _difficulty_table(rows: list[Row]) -> list[str]:
    """Return the method × synthetic_overlap table, or nothing for a single knob value."""
    if not spans_difficulty(rows):
        return []
    ordered = sorted(
        rows, key=lambda r: (scenario_key(r.scenario), method_key(r.method), r.overlap)
    )
    body = [
        [
            method_label(r.method),
            r.scenario,
            f"{r.overlap:g}",
            format_mean_std(r.rouge1_mean, r.rouge1_std, r.n_seeds),
            MISSING
            if r.routing_accuracy_mean is None or r.method not in ROUTED_METHODS
            else f"{r.routing_accuracy_mean:.4f}",
            MISSING if r.local_purity_mean is None else f"{r.local_purity_mean:.3f}",
        ]
        for r in ordered
    ]
    header = ["Method", "Scenario", "synthetic_overlap", "ROUGE-1", "Routing", "Local purity"]
    return [
        "## Difficulty (synthetic_overlap)",
        "",
        "Final ROUGE-1 (`mean ± std (n=seeds)`), routing accuracy and the clients' local "
        "cluster purity, means over seeds, per value of the benchmark's difficulty knob; "
        "routing only for the methods that route (see `difficulty.png`).",
        "",
        *_md_table(header, body),
    ]


def _routing_table(rows: list[Row]) -> list[str]:
    """The routing-accuracy grid, for the methods that route among global adapters only."""
    routed = [r for r in rows if r.method in ROUTED_METHODS and r.routing_accuracy_mean is not None]
    others = sorted({r.method for r in rows} - set(ROUTED_METHODS), key=method_key)
    lines = []
    if routed:
        lines += ["Mean over seeds of the final round.", ""]
        lines += _md_table(*_grid(routed, lambda r: f"{r.routing_accuracy_mean:.4f}"))
    else:
        lines += ["No complete run of a method that routes reports routing accuracy.", ""]
    if others:
        lines += [
            "Left out: " + ", ".join(method_label(m) for m in others) + ". They do not route "
            "a test sample by its embedding: each client tests with the adapter its method "
            "gives it, so the share of samples that reach their task's global cluster "
            "measures nothing of theirs (results.csv keeps it).",
            "",
        ]
    return lines


def _purity_table(rows: list[Row]) -> list[str]:
    """The local-cluster-purity grid: the clients' mean purity, averaged over seeds."""
    with_purity = [r for r in rows if r.local_purity_mean is not None]
    if not with_purity:
        return []
    return [
        "## Local cluster purity",
        "",
        "The share of a client's training samples that sit in a local cluster of their own "
        "task, averaged over clients, then over seeds. A method with one local cluster per "
        "client scores the share of the client's largest task.",
        "",
        *_md_table(*_grid(with_purity, lambda r: f"{r.local_purity_mean:.3f}")),
    ]


def render_markdown(runs: list[RunRecord], rows: list[Row], root: Path) -> str:
    """Return results.md: seed tables, gains, routing, per-run details, unfinished runs."""
    unfinished = [r for r in runs if r.status != COMPLETE]
    kept, repeats = split_duplicates(runs)
    averaged = sum(r.n_seeds for r in rows)
    lines = [
        "# FedRouter results",
        "",
        f"Run directories under `{root}`: {len(runs)}; complete runs averaged: {averaged}; "
        f"incomplete or failed: {len(unfinished)} (listed below).",
        "",
        _wall_line(kept),
        "",
        "Cells are the final evaluated round's client-weighted mean, over seeds: "
        "`mean ± std (n=seeds)`, std being the sample std (ddof=1).",
        "",
    ]
    if rows:
        for title, key in (("Final ROUGE-1", "rouge1"), ("Final ROUGE-L", "rougeL")):

            def cell(row: Row, key: str = key) -> str:
                mean, std = getattr(row, f"{key}_mean"), getattr(row, f"{key}_std")
                return format_mean_std(mean, std, row.n_seeds)

            lines += [f"## {title}", "", *_md_table(*_grid(rows, cell))]
        lines += [
            "## Relative ROUGE-1 gain",
            "",
            "`(method - baseline) / baseline * 100` on the mean final ROUGE-1 of each scenario; "
            "n/a where the baseline is missing or zero.",
            "",
            *_gain_table(rows),
            "## Routing accuracy",
            "",
        ]
        lines += _routing_table(rows)
        lines += _purity_table(rows)
        lines += _difficulty_table(rows)
        lines += [
            "## Per-run details",
            "",
            "Each averaged run's final ROUGE-1 and routing accuracy, its clients' mean local "
            "cluster purity (the share of training samples in a local cluster of their own "
            "task), its wall time, and in how "
            "many rounds each global adapter (cluster 0, 1, ...) was trained by at least one "
            "client (from the `train` events of metrics.jsonl); the note names any file of the "
            "run that could not be read in full.",
            "",
            *_md_table(
                [
                    "Path",
                    "Method",
                    "Scenario",
                    "Seed",
                    "ROUGE-1",
                    "Routing",
                    "Local purity",
                    "Wall (s)",
                    "Rounds trained per global adapter",
                    "Note",
                ],
                _detail_rows(kept, root),
            ),
        ]
    else:
        lines += ["No complete run yet.", ""]
    lines += ["## Incomplete and failed runs (not averaged)", ""]
    header = ["Path", "Method", "Scenario", "Seed", "Status", "Last eval round", "Note"]
    lines += _md_table(header, _run_rows(unfinished, root)) if unfinished else ["None.", ""]
    if repeats:
        lines += [
            "## Repeated seeds (not averaged)",
            "",
            "Complete runs with the method, scenario and seed of a newer run, which is the one "
            "averaged.",
            "",
            *_md_table(header, _run_rows(repeats, root)),
        ]
    return "\n".join(lines).rstrip() + "\n"


def _csv_number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_csv(rows: Iterable[Row]) -> str:
    """Return results.csv: one line per (method, scenario); empty cells where n/a."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.method,
                r.scenario,
                r.n_seeds,
                _csv_number(r.rouge1_mean, 6),
                _csv_number(r.rouge1_std, 6),
                _csv_number(r.rougeL_mean, 6),
                _csv_number(r.rougeL_std, 6),
                _csv_number(r.routing_accuracy_mean, 6),
                _csv_number(r.rel_to_fedavg_pct, 4),
                _csv_number(r.rel_to_local_pct, 4),
                f"{r.overlap:g}",
                _csv_number(r.local_purity_mean, 6),
            ]
        )
    return buffer.getvalue()


# ----- plots -----------------------------------------------------------------------------
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def _save_figure(fig, path: Path) -> None:
    """Save a figure as PNG through a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(
            path, lambda handle: fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
        )
    finally:
        plt.close(fig)


def _grid_and_legend(ax) -> None:
    """Draw a light grid, and a small legend when the axes have labelled lines."""
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def plot_rouge1_by_round(runs: list[RunRecord], scenario: str, path: Path) -> None:
    """Plot the seed-mean ROUGE-1 against round, one line per method, ± std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_method: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_method[run.method].append(run)
    for method in sorted(by_method, key=method_key):
        per_round: dict[int, list[float]] = defaultdict(list)
        for run in by_method[method]:
            for rnd, metrics in run.by_round.items():
                if "rouge1" in metrics:
                    per_round[rnd].append(metrics["rouge1"])
        if not per_round:
            continue
        rounds = sorted(per_round)
        stats = [mean_std(per_round[r]) for r in rounds]
        means = [m for m, _ in stats]
        label = f"{method_label(method)} (n={len(by_method[method])})"
        (line,) = ax.plot(rounds, means, marker="o", label=label)
        if any(s is not None for _, s in stats):
            stds = [s or 0.0 for _, s in stats]
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(rounds, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("ROUGE-1 (client-weighted mean)")
    ax.set_title(f"ROUGE-1 by round: {scenario} (mean ± std over seeds)")
    _grid_and_legend(ax)
    _save_figure(fig, path)


def cluster_matrix(clustering: dict) -> tuple[list[list[float]], list[str], list[str], bool]:
    """Return (clients × global clusters matrix, row labels, column labels, by_size).

    A cell sums the sizes of the client's local clusters matched to that global cluster;
    when a client lists no sizes, its local clusters are counted instead (by_size False).
    """
    clients = sorted(clustering.get("clients", []), key=lambda c: c.get("partition_id", 0))
    tasks = list(clustering.get("cluster_tasks") or [])
    n_global = max(
        [len(tasks), len(clustering.get("global_centroids") or [])]
        + [int(g) + 1 for c in clients for g in c.get("global_cluster", [])]
    )
    by_size = all(
        len(c.get("local_sizes") or []) == len(c.get("global_cluster", [])) for c in clients
    )
    matrix = [[0.0] * n_global for _ in clients]
    for row, client in zip(matrix, clients, strict=True):
        sizes = client.get("local_sizes") if by_size else None
        for i, g in enumerate(client.get("global_cluster", [])):
            row[int(g)] += float(sizes[i]) if sizes else 1.0
    row_labels = [
        f"client {c.get('partition_id', '?')}: {', '.join(c.get('local_tasks') or []) or '?'}"
        for c in clients
    ]
    col_labels = [f"{g}: {tasks[g]}" if g < len(tasks) else str(g) for g in range(n_global)]
    return matrix, row_labels, col_labels, by_size


def plot_cluster_map(run: RunRecord, path: Path) -> None:
    """Draw a run's client → global cluster matching as a heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix, rows, cols, by_size = cluster_matrix(run.clustering or {})
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * max(len(cols), 1), 1.5 + 0.4 * max(len(rows), 1)))
    image = ax.imshow(matrix, cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize="small")
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    ax.set_xlabel("global cluster")
    top = max((v for r in matrix for v in r), default=0.0)
    if len(rows) * len(cols) <= 400:
        for i, values in enumerate(matrix):
            for j, value in enumerate(values):
                if value:
                    color = "white" if value > top / 2 else "black"
                    ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=7, color=color)
    what = "training examples (sum of local_sizes)" if by_size else "number of local clusters"
    ax.set_title(
        f"{method_label(run.method)} · {run.scenario} · seed {run.seed}\ncell = {what}",
        fontsize="medium",
    )
    fig.colorbar(image, ax=ax)
    _save_figure(fig, path)


def _by_knob(runs: Iterable[RunRecord], key: str) -> dict[float, list[float]]:
    """Return {synthetic_overlap: the runs' final ``key`` values}."""
    values: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        if key in run.final:
            values[run.overlap].append(run.final[key])
    return dict(sorted(values.items()))


def plot_difficulty(runs: list[RunRecord], path: Path) -> None:
    """Plot final routing accuracy and ROUGE-1 against synthetic_overlap, a line per method.

    Each line joins the seed means; the dots are the seeds. The routing panel shows only the
    methods that route (ROUTED_METHODS).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.method, run.scenario)].append(run)
    several = len({scenario for _, scenario in groups}) > 1
    fig, (routing_ax, rouge_ax) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    panels = ((routing_ax, ROUTING, "routing accuracy"), (rouge_ax, "rouge1", "ROUGE-1"))
    for index, (method, scenario) in enumerate(
        sorted(groups, key=lambda g: (method_key(g[0]), scenario_key(g[1])))
    ):
        label = method_label(method) + (f" · {scenario}" if several else "")
        color = f"C{index % 10}"
        for ax, key, _ in panels:
            if key == ROUTING and method not in ROUTED_METHODS:
                continue
            values = _by_knob(groups[(method, scenario)], key)
            if not values:
                continue
            knobs = list(values)
            ax.plot(knobs, [statistics.fmean(v) for v in values.values()], "-o", color=color,
                    label=label)  # fmt: skip
            seeds = [(k, v) for k, vs in values.items() for v in vs]
            ax.scatter(*zip(*seeds, strict=True), color=color, alpha=0.35, s=14)
    for ax, _, name in panels:
        ax.set_xlabel("synthetic_overlap")
        ax.set_ylabel(f"final {name}")
        ax.set_title(f"{name} by difficulty (line: mean, dots: seeds)", fontsize="medium")
        _grid_and_legend(ax)
    _save_figure(fig, path)


def _setting_name(scenario: str, overlap: float) -> str:
    """Name a setting in file names: the scenario, with the knob when it is not 0."""
    return _safe_name(scenario) + (f"_overlap{overlap:g}" if overlap else "")


def write_plots(runs: list[RunRecord], out_dir: Path) -> dict[str, Path]:
    """Write the ROUGE-1-by-round plots, one cluster map per (method, setting), and the
    difficulty figure when the runs span several synthetic_overlap values."""
    written: dict[str, Path] = {}
    by_setting: dict[tuple[str, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_setting[(run.scenario, run.overlap)].append(run)
    for setting in sorted(by_setting, key=lambda s: setting_key(*s)):
        group = [r for r in by_setting[setting] if r.by_round]
        if group:
            path = out_dir / f"rouge1_by_round_{_setting_name(*setting)}.png"
            plot_rouge1_by_round(group, setting_label(*setting), path)
            written[path.name] = path
    first: dict[tuple[str, str, float], RunRecord] = {}
    for run in sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))):
        if run.clustering and run.clustering.get("clients"):
            first.setdefault((run.method, run.scenario, run.overlap), run)
    for (method, scenario, overlap), run in sorted(first.items()):
        setting = _setting_name(scenario, overlap)
        name = f"cluster_map_{_safe_name(method)}_{setting}_seed{run.seed}.png"
        plot_cluster_map(run, out_dir / name)
        written[name] = out_dir / name
    if len({run.overlap for run in runs if run.final}) > 1:
        path = out_dir / "difficulty.png"
        plot_difficulty([run for run in runs if run.final], path)
        written[path.name] = path
    return written


# ----- entry points ----------------------------------------------------------------------
def write_report(output_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Write results.md, results.csv and the plots into ``out`` (default: output_dir)."""
    root = Path(output_dir)
    runs = collect_runs(root)
    if not runs:
        raise FedRouterError(f"no run directories (config.json with a 'config' key) under '{root}'")
    out_dir = check_writable(out if out is not None else root)
    rows = aggregate(runs)
    kept, repeats = split_duplicates(runs)
    for run in repeats:
        logger.warning("%s repeats method/scenario/seed of a newer run; not averaged", run.path)
    written: dict[str, Path] = {}
    for name, text in (
        ("results.md", render_markdown(runs, rows, root)),
        ("results.csv", render_csv(rows)),
    ):
        atomic_write_text(out_dir / name, text)
        written[name] = out_dir / name
    written.update(write_plots(kept, out_dir))
    logger.info(
        "%d runs (%d complete); wrote %s into %s",
        len(runs),
        sum(r.status == COMPLETE for r in runs),
        ", ".join(written),
        out_dir,
    )
    return written


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the command line and write the report; a FedRouterError exits 2 with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m fedrouter.report",
        description="Summarise the run directories under OUTPUT_DIR into tables and plots.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder holding run directories")
    parser.add_argument(
        "--out", default=None, help="folder for results.md, results.csv and PNGs (OUTPUT_DIR)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return write_report(args.output_dir, args.out)
    except FedRouterError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
