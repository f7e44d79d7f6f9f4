"""Round-time benchmark: a real federated run, where its time, bytes and memory go, and A/Bs.

    python -m fedrouter.bench --preset quickstart [--rounds 6] [--clients 8]
    python -m fedrouter.bench --model llama-3.2-1b --layers 2 --ab-only   # GPU-scale geometry

It runs the preset through the simulation runtime exactly as the launcher would (the flags
come from the launcher's variables and the preset, read by ``fedrouter.launcher``), then
sums the phases every process recorded in metrics.jsonl into one table, and writes the
figures as JSON. Afterwards, in this process, it measures two A/Bs against the reference
behaviour of reloading the base model: evaluation with adapters swapped in place against a
reload per routed cluster, and embedding with the cached model against a load per call.

Definitions
  slots             clients that run at once (Ray: cores / client_resources_cpus, or GPUs).
  compute fraction  (training + embedding + generation) / (wall time x slots), start-up
                    excluded; "steady" counts rounds 2.. only, from the end of round 1.
  bytes per round   what the server sent and received in a training round, against
                    adapter size x messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedrouter import protocol
from fedrouter.atomic import atomic_write_json
from fedrouter.config import Config, ConfigError, parse_args
from fedrouter.errors import FedRouterError
from fedrouter.events import Eval, Event, EventLog, Round, Start, Train
from fedrouter.launcher import preset_flags

logger = logging.getLogger("fedrouter.bench")

ROOT = Path(__file__).resolve().parent.parent

# Table rows: (label, phase names summed over clients and the server).
ROWS = (
    ("data load (first call per process)", ("data_load",)),
    ("local embedding", ("embedding",)),
    ("local k-means", ("kmeans",)),
    ("local training (trainer.train)", ("training",)),
    ("  of which optimizer steps", ("optimizer",)),
    ("training setup (tokenize, trainer)", ("tokenization", "trainer_setup")),
    ("adapter swap (model <-> arrays)", ("adapter_swap",)),
    ("message serialisation (clients)", ("serialization",)),
    ("message serialisation (server)", ("server/serialization",)),
    ("server aggregation", ("server/aggregation",)),
    ("evaluation embedding", ("eval_embedding",)),
    ("routing", ("routing",)),
    ("generation", ("generation",)),
    ("ROUGE", ("rouge",)),
    ("file I/O (server)", ("server/file_io",)),
)
COMPUTE = ("training", "embedding", "eval_embedding", "generation")


# ----- the run ---------------------------------------------------------------------------
def preset_path(preset: str) -> Path:
    """Map a preset name (``quickstart``) or path to its file."""
    path = Path(preset)
    if not path.is_file():
        path = ROOT / "configs" / f"{preset}.sh"
    if not path.is_file():
        raise ConfigError(f"preset '{preset}' not found (a configs/<name>.sh or a file path)")
    return path


def launcher_flags(preset: str) -> list[str]:
    """Return the flags the launcher would pass for the preset's first seed."""
    return preset_flags(preset_path(preset))


def bench_config(args, workdir: Path) -> Config:
    """Build the run's config: the preset's flags, then the benchmark's overrides."""
    argv = launcher_flags(args.preset) + ["--output_dir", str(workdir), "--resume", "False"]
    base = parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--clients", args.clients)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1 (leave it out for the preset's)")
    rounds = base.num_rounds if args.rounds is None else args.rounds
    clients = base.num_clients if args.clients is None else args.clients
    kept = sorted({r for r in base.evaluation_rounds if r <= rounds} | {rounds})
    argv += ["--num_rounds", str(rounds), "--evaluation_rounds", ",".join(map(str, kept))]
    argv += ["--num_clients", str(clients)]
    argv += ["--sample_clients", str(min(base.sample_clients, clients))]
    argv += ["--min_fit_clients", str(min(base.min_fit_clients, clients))]
    if args.model:
        argv += ["--model_name_or_path", args.model]
    if args.no_4bit:
        argv += ["--load_in_4bit", "False"]
    for item in args.set or []:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    return parse_args(argv)


def resolve_model(cfg: Config, geometry: str | None, layers: int | None) -> Config:
    """Swap in a random-init model of the given geometry (built once, cached)."""
    if not geometry:
        return cfg
    import torch

    from fedrouter.tiny_model import geometry_sizes, resolve_random_model

    if layers is None and not torch.cuda.is_available():
        layers = 2  # a CPU cannot train 16 layers of this size in a benchmark's time
    path = resolve_random_model(geometry_sizes(geometry, layers))
    return cfg.replace(model_name_or_path=str(path))


def concurrency(cfg: Config) -> int:
    """Return how many clients the simulation runs at once."""
    from fedrouter.simulation import backend_config

    backend = backend_config(cfg)
    client, init = backend["client_resources"], backend["init_args"]
    slots = int(init["num_cpus"] // max(client["num_cpus"], 1e-9))
    if client["num_gpus"]:
        slots = min(slots, int(init["num_gpus"] // client["num_gpus"]))
    return max(1, min(slots, cfg.sample_clients))


def run_once(cfg: Config) -> tuple[Path, float, float]:
    """Run the federation; return (run dir, start epoch, end epoch)."""
    from fedrouter.simulation import run

    start = time.time()
    run_dir = run(cfg)
    return Path(run_dir), start, time.time()


# ----- the figures -----------------------------------------------------------------------
def read_events(run_dir: Path) -> EventLog:
    """Return the run's metrics.jsonl events; a damaged line is a RunFileError."""
    from fedrouter.results import read_events as read

    return read(run_dir, strict=True)


def phase_sums(events: Iterable[Event], min_round: int = 0) -> dict[str, float]:
    """Sum every process's phase seconds over events (from round ``min_round`` on)."""
    sums: dict[str, float] = defaultdict(float)
    for event in events:
        rnd = getattr(event, "round", None)  # start, setup, clustering, finish: no round
        if rnd is not None and rnd < min_round:
            continue
        for key, value in event.fields.items():
            if key.startswith(protocol.PHASE_PREFIX):  # event names: snake_case already
                sums[key[len(protocol.PHASE_PREFIX) :]] += float(value)
    return dict(sums)


def model_loads(events: list[dict]) -> dict:
    """Return base-model loads per process, and their count and seconds in total."""
    per_pid: dict[int, tuple[int, float]] = {}
    pid_key, loads_key = (
        protocol.event_field(protocol.PID),
        protocol.event_field(protocol.MODEL_LOADS),
    )
    for event in events:
        pid = event.get(pid_key, -1)
        if pid is None or pid < 0 or loads_key not in event:
            continue
        seconds = event.get(protocol.event_field(protocol.MODEL_LOAD_SECONDS), 0.0)
        loads, secs = per_pid.get(pid, (0, 0.0))
        per_pid[pid] = (max(loads, int(event[loads_key])), max(secs, float(seconds)))
    return {
        "per_process": {str(pid): n for pid, (n, _) in sorted(per_pid.items())},
        "count": sum(n for n, _ in per_pid.values()),
        "seconds": sum(s for _, s in per_pid.values()),
        "processes": len(per_pid),
    }


def traffic(log: EventLog, adapter_bytes: int) -> dict:
    """Return bytes per training round each way, and against adapter size x messages."""
    rounds, evals = log.rounds(stage="train"), log.rounds(stage="evaluate")
    out: dict = {"adapter_bytes": adapter_bytes}
    for direction in ("to_clients", "from_clients"):
        sent = [e.bytes(direction) for e in rounds]
        messages = [e.messages(direction) for e in rounds]
        expected = [adapter_bytes * m for m in messages]
        out[f"bytes_per_round_{direction}"] = float(np.mean(sent)) if sent else 0.0
        out[f"messages_per_round_{direction}"] = float(np.mean(messages)) if messages else 0.0
        out[f"ratio_to_adapter_x_messages_{direction}"] = (
            float(np.sum(sent) / np.sum(expected)) if sent and np.sum(expected) else None
        )
        out[f"eval_bytes_per_round_{direction}"] = (
            float(np.mean([e.bytes(direction) for e in evals])) if evals else 0.0
        )
    return out


def summarise(cfg: Config, log: EventLog, start: float, end: float, adapter_bytes: int) -> dict:
    """Turn a run's events into the benchmark's figures."""
    events = log.events
    [first] = log.starts() or [Start(time=start)]
    startup = max(0.0, first.time - start)
    wall = end - start
    slots = concurrency(cfg)
    phases = phase_sums(log.records())
    loads = model_loads(events)
    tokens = sum(
        e.fields.get(protocol.event_field(protocol.GENERATED_TOKENS), 0.0) for e in log.evals()
    )
    compute = sum(phases.get(name, 0.0) for name in COMPUTE)
    # Steady state: rounds 2.., timed from the end of round 1's training to the end of the run.
    round1 = [e for e in log.rounds(stage="train") if e.round == 1]
    steady = {}
    if round1 and cfg.num_rounds > 1:
        steady_wall = log.finishes()[-1].time - round1[0].time
        steady_phases = phase_sums(
            [e for e in log.records() if isinstance(e, Train | Eval | Round)], min_round=2
        )
        steady_compute = sum(steady_phases.get(name, 0.0) for name in COMPUTE)
        steady = {
            "wall_seconds": steady_wall,
            "seconds_per_round": steady_wall / (cfg.num_rounds - 1),
            "compute_seconds": steady_compute,
            "compute_fraction": steady_compute / (steady_wall * slots) if steady_wall else None,
            "phases": steady_phases,
        }
    peaks = [e.get(protocol.event_field(protocol.PEAK_RSS_MB), 0.0) for e in events]
    train_rounds = {e.round: e.seconds for e in log.rounds(stage="train")}
    eval_rounds = {e.round: e.seconds for e in log.rounds(stage="evaluate")}
    later = [s for r, s in train_rounds.items() if r >= 2]
    return {
        "machine": machine(),
        "config": {
            k: getattr(cfg, k)
            for k in (
                "model_name_or_path",
                "load_in_4bit",
                "num_clients",
                "sample_clients",
                "num_rounds",
                "max_steps",
                "batch_size",
                "peft_lora_r",
                "fed_alg",
                "dataset_name",
            )
        },
        "slots": slots,
        "wall_seconds": wall,
        "startup_seconds": startup,
        "model_loads": loads,
        "phases": phases,
        "rows": {label: sum(phases.get(n, 0.0) for n in names) for label, names in ROWS},
        "optimizer_share_of_training": (
            phases.get("optimizer", 0.0) / phases["training"] if phases.get("training") else None
        ),
        "generated_tokens": tokens,
        # what one GPU turned out: every client's new tokens over the evaluation rounds' wall
        # time (embedding, routing and ROUGE included, so a lower bound)
        "generation_tokens_per_wall_second": (
            tokens / sum(eval_rounds.values()) if tokens and eval_rounds else None
        ),
        "generation_tokens_per_second": (
            tokens / phases["generation"] if phases.get("generation") else None
        ),
        "compute_seconds": compute,
        "compute_fraction": compute / ((wall - startup) * slots) if wall > startup else None,
        "steady": steady,
        "rounds": {
            "train_seconds": {str(r): s for r, s in sorted(train_rounds.items())},
            # rounds 2..: round 1 pays the workers' first CUDA kernels and allocations
            "steady_train_seconds": float(np.median(later)) if later else None,
            "eval_seconds": {str(r): s for r, s in sorted(eval_rounds.items())},
            "max_new_tokens": cfg.max_new_tokens,
            "max_eval_size": cfg.max_eval_size,
            "clients_evaluated": cfg.num_clients,
        },
        "traffic": traffic(log, adapter_bytes),
        "peak_rss_mb": {
            "clients": max(peaks, default=0.0),
            "server": max((e.get("server_peak_rss_mb", 0.0) for e in events), default=0.0),
        },
        "peak_gpu_mb": max(
            (e.get(protocol.event_field(protocol.PEAK_GPU_MB), 0.0) for e in events), default=0.0
        ),
    }


def paper_grid() -> dict:
    """Return the paper's grid, from the sources that define it.

    Methods from the registry, scenarios from configs/scenarios/, seeds from the launcher's
    defaults, rounds and evaluation rounds from Config's defaults.
    """
    from fedrouter.launcher import launcher_variables
    from fedrouter.methods import METHODS

    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    rounds = defaults["num_rounds"]
    return {
        "methods": len(METHODS),
        "scenarios": len(sorted((ROOT / "configs" / "scenarios").glob("*.sh"))),
        "seeds": len(launcher_variables()["seeds"].split()),
        "rounds": rounds,
        # a run evaluates after the listed rounds that it reaches (Config drops the others)
        "evaluations": sum(1 for r in defaults["evaluation_rounds"] if 1 <= r <= rounds),
    }


def grid_estimate(run: dict) -> dict | None:
    """Estimate the paper grid's hours on this machine from the run's measured round times.

    One run = start-up and model loads + ``rounds`` training rounds (the median of rounds 2..,
    or of round 1 in a one-round run) + ``evaluations`` evaluation rounds (their mean): at this
    run's per-round settings.
    """
    rounds = run.get("rounds") or {}
    train, evals = rounds.get("steady_train_seconds"), rounds.get("eval_seconds") or {}
    if train is None and rounds.get("train_seconds"):
        train = float(np.median(list(rounds["train_seconds"].values())))
    if train is None or not evals:
        return None
    grid = paper_grid()
    eval_round = float(np.mean(list(evals.values())))
    loads = run["model_loads"]
    setup = run["startup_seconds"] + loads["seconds"] / max(1, loads["processes"])
    per_run = setup + grid["rounds"] * train + grid["evaluations"] * eval_round
    runs = grid["methods"] * grid["scenarios"] * grid["seeds"]
    return {
        **grid,
        "runs": runs,
        "train_round_seconds": train,
        "eval_round_seconds": eval_round,
        "seconds_per_run": per_run,
        "hours": runs * per_run / 3600,
    }


def machine() -> dict:
    """Describe the machine the figures come from."""
    import platform

    import torch

    info = {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


# ----- in-process A/Bs -------------------------------------------------------------------
def sync() -> None:
    """Wait for the GPU, so that a timer stops when the work is done (no-op on a CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ab_measurements(cfg: Config, n_prompts: int, n_clusters: int) -> dict:
    """Measure both A/Bs in this process against a reload of the base model."""
    import torch

    from fedrouter.data import client_data_for
    from fedrouter.data.templates import generation_prompt
    from fedrouter.embeddings import embed_texts
    from fedrouter.evaluation import generate
    from fedrouter.models import (
        LOAD_STATS,
        ModelSpec,
        adapter_to_arrays,
        arrays_to_adapter,
        get_model_and_tokenizer,
        load_model_and_tokenizer,
    )
    from fedrouter.training import TrainSettings, train_adapter

    torch.set_num_threads(max(1, int(cfg.client_resources_cpus)))
    spec = ModelSpec.from_config(cfg)
    start = time.perf_counter()
    model, tokenizer = get_model_and_tokenizer(spec)
    first_load = time.perf_counter() - start
    rows = [r for part in client_data_for(cfg) for r in part.test][:n_prompts]
    prompts = [
        generation_prompt(r["instruction"], cfg.template, cfg.generation_prompt) for r in rows
    ]
    groups = np.array_split(np.arange(len(prompts)), n_clusters)
    init = adapter_to_arrays(model)
    rng = np.random.default_rng(0)
    adapters = [
        {k: v + rng.normal(0, 0.01, v.shape).astype(np.float32) for k, v in init.items()}
        for _ in range(n_clusters)
    ]
    adapter_bytes = int(sum(v.nbytes for v in init.values()))
    kwargs = dict(batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens)

    def evaluate_with(get_model, stats=None) -> tuple[float, list[float], int]:
        loads, begin, count = [], time.perf_counter(), LOAD_STATS["count"]
        for g, idx in enumerate(groups):
            t = time.perf_counter()
            m, tok = get_model()
            loads.append(time.perf_counter() - t)
            arrays_to_adapter(m, adapters[g])
            generate(m, tok, [prompts[i] for i in idx], **kwargs, stats=stats)
        return time.perf_counter() - begin, loads, LOAD_STATS["count"] - count

    # One untimed pass first, so that neither arm pays for the first call's kernels and
    # allocations (the arm timed first would otherwise carry them).
    arrays_to_adapter(model, adapters[0])
    generate(model, tokenizer, prompts[: max(1, len(groups[0]))], **kwargs)
    embed_texts(model, tokenizer, prompts[:1], batch_size=cfg.eval_batch_size)
    generated: dict = {}  # new tokens of the swap arm (evaluation.generate counts them)
    swap_seconds, _, swap_count = evaluate_with(lambda: (model, tokenizer), generated)
    reload_seconds, reload_loads, reload_count = evaluate_with(
        lambda: load_model_and_tokenizer(spec)
    )

    swap_in, swap_out = [], []
    for g in range(20):
        sync()
        t = time.perf_counter()
        arrays_to_adapter(model, adapters[g % n_clusters])
        sync()
        swap_in.append(time.perf_counter() - t)
        t = time.perf_counter()
        adapter_to_arrays(model)
        swap_out.append(time.perf_counter() - t)
    train_rows = client_data_for(cfg)[0].train
    settings = TrainSettings.from_config(cfg)
    train_calls = []
    for call in range(3):  # the first pays for kernels and allocations: the last is warm
        arrays_to_adapter(model, init)
        sync()
        t = time.perf_counter()
        lr = cfg.learning_rate
        train_adapter(model, tokenizer, train_rows, settings=settings, lr=lr, seed=call)
        sync()
        train_calls.append(time.perf_counter() - t)
    arrays_to_adapter(model, init)

    texts = [r["instruction"] for r in rows]
    calls = n_clusters
    begin = time.perf_counter()
    for _ in range(calls):
        embed_texts(model, tokenizer, texts, batch_size=cfg.eval_batch_size)
    cached_seconds = time.perf_counter() - begin
    begin, embed_loads, embed_count = time.perf_counter(), [], LOAD_STATS["count"]
    for _ in range(calls):
        t = time.perf_counter()
        m, tok = load_model_and_tokenizer(spec)
        embed_loads.append(time.perf_counter() - t)
        embed_texts(m, tok, texts, batch_size=cfg.eval_batch_size)
    reload_embed_seconds = time.perf_counter() - begin
    embed_count = LOAD_STATS["count"] - embed_count
    loads = reload_loads + embed_loads
    return {
        "model": cfg.model_name_or_path,
        "load_in_4bit": cfg.load_in_4bit,
        # transformers counts 4-bit weights unpacked; LoRA's own parameters are left out
        "parameters": int(model.get_base_model().num_parameters() - adapter_bytes // 4),
        "adapter_bytes": adapter_bytes,
        "first_load_seconds": first_load,
        "swap_in_seconds": float(np.median(swap_in)),
        "swap_out_seconds": float(np.median(swap_out)),
        "train_call_seconds": train_calls,
        "train_call": {"max_steps": settings.max_steps, "batch_size": settings.batch_size},
        # the cost of one unit of work in one process, warm
        "train_step_seconds": train_calls[-1] / settings.max_steps,
        "seconds_per_model_load": float(np.median(loads)),
        "eval": {
            "prompts": len(prompts),
            "clusters": n_clusters,
            "swap_in_place_seconds": swap_seconds,
            "reload_per_cluster_seconds": reload_seconds,
            "swap_loads": swap_count,  # base-model loads each arm made (models.LOAD_STATS)
            "reload_loads": reload_count,
            "reload_load_seconds": float(sum(reload_loads)),
            "ratio": reload_seconds / swap_seconds,
            "batch_size": cfg.eval_batch_size,
            "new_tokens": int(generated.get("new_tokens", 0)),
            "tokens_per_second": generated.get("new_tokens", 0) / swap_seconds,
        },
        "embedding": {
            "texts": len(texts),
            "calls": calls,
            "cached_model_seconds": cached_seconds,
            "load_per_call_seconds": reload_embed_seconds,
            "reload_loads": embed_count,
            "reload_load_seconds": float(sum(embed_loads)),
            "ratio": reload_embed_seconds / cached_seconds,
            "texts_per_second": len(texts) * calls / cached_seconds,
        },
    }


# ----- output ----------------------------------------------------------------------------
def format_report(result: dict) -> str:
    """Render the figures as a text table."""
    lines = []
    m = result["machine"]
    lines.append(
        f"machine: {m['cpu_cores']} CPU cores, GPU: {m['gpu'] or 'none'}, torch {m['torch']}"
    )
    run = result.get("run")
    if run:
        c = run["config"]
        lines.append(
            f"run: {c['fed_alg']} on {c['model_name_or_path']} (4bit={c['load_in_4bit']}), "
            f"{c['num_clients']} clients ({c['sample_clients']} per round), "
            f"{c['num_rounds']} rounds x {c['max_steps']} steps, {run['slots']} at once"
        )
        lines.append("")
        lines.append(f"{'phase (summed over clients and rounds)':<42}{'seconds':>10}")
        lines.append(f"{'runtime start-up':<42}{run['startup_seconds']:>10.2f}")
        loads = run["model_loads"]
        label = f"base-model load ({loads['count']} in {loads['processes']} processes)"
        lines.append(f"{label:<42}{loads['seconds']:>10.2f}")
        for label, seconds in run["rows"].items():
            lines.append(f"{label:<42}{seconds:>10.2f}")
        lines.append(f"{'wall time':<42}{run['wall_seconds']:>10.2f}")
        lines.append("")
        share = run["optimizer_share_of_training"]
        tps = run["generation_tokens_per_second"]
        lines.append(f"optimizer share of training: {share:.1%}" if share is not None else "")
        if tps is not None:
            lines.append(f"generation: {run['generated_tokens']:.0f} tokens, {tps:.0f} tokens/s")
        lines.append(
            f"compute fraction (start-up excluded, {run['slots']} slots): "
            f"{run['compute_fraction']:.3f}"
        )
        steady = run["steady"]
        if steady:
            lines.append(
                f"steady state (rounds 2..): {steady['seconds_per_round']:.2f} s/round, "
                f"compute fraction {steady['compute_fraction']:.3f}"
            )
        t = run["traffic"]
        for direction in ("to_clients", "from_clients"):
            ratio = t[f"ratio_to_adapter_x_messages_{direction}"]
            lines.append(
                f"bytes per training round {direction.replace('_', ' ')}: "
                f"{t[f'bytes_per_round_{direction}']:,.0f} "
                f"({t[f'messages_per_round_{direction}']:.0f} messages; "
                f"x{ratio:.3f} of adapter size x messages)"
                if ratio is not None
                else ""
            )
            lines.append(
                f"bytes per evaluation round {direction.replace('_', ' ')}: "
                f"{t[f'eval_bytes_per_round_{direction}']:,.0f}"
            )
        lines.append(f"adapter size: {t['adapter_bytes']:,} bytes")
        p = run["peak_rss_mb"]
        lines.append(
            f"peak RSS: {p['clients']:.0f} MiB per client process, {p['server']:.0f} MiB server"
        )
        if run["peak_gpu_mb"]:
            lines.append(f"peak GPU memory: {run['peak_gpu_mb']:.0f} MiB")
        if run.get("final_rouge1") is not None:
            lines.append(f"final ROUGE-1: {run['final_rouge1']:.3f}")
    lines.extend(target_lines(result))
    ab = result.get("ab")
    if ab:
        lines.append("")
        lines.append(
            f"A/B in one process on {ab['model']} (4bit={ab['load_in_4bit']}, "
            f"{ab['parameters']:,} parameters):"
        )
        lines.append(f"  seconds per base-model load: {ab['seconds_per_model_load']:.2f}")
        lines.append(
            f"  cost, warm: {ab['train_step_seconds']:.2f} s per training step (batch "
            f"{ab['train_call']['batch_size']}), {ab['embedding']['texts_per_second']:.1f} texts "
            f"embedded per second, {ab['eval']['tokens_per_second']:.1f} generated tokens per "
            f"second (batch {ab['eval']['batch_size']})"
        )
        e = ab["eval"]
        lines.append(
            f"  evaluation of {e['prompts']} prompts over {e['clusters']} clusters: "
            f"swap in place {e['swap_in_place_seconds']:.2f}s, reload per cluster "
            f"{e['reload_per_cluster_seconds']:.2f}s -> x{e['ratio']:.1f}"
        )
        e = ab["embedding"]
        lines.append(
            f"  embedding {e['texts']} texts x {e['calls']} calls: cached model "
            f"{e['cached_model_seconds']:.2f}s, load per call {e['load_per_call_seconds']:.2f}s "
            f"-> x{e['ratio']:.1f}"
        )
    return "\n".join(line for line in lines if line is not None)


def target_lines(result: dict) -> list[str]:
    """The figures the GPU targets are set on, each beside its target, with the card's name."""
    run, ab = result.get("run") or {}, result.get("ab") or {}
    card = result["machine"]["gpu"] or "CPU (no GPU)"
    lines = ["", f"targets, on {card}:"]
    rounds = run.get("rounds") or {}
    if rounds.get("steady_train_seconds") is not None:
        lines.append(
            f"  training round, rounds 2.. (no evaluation): {rounds['steady_train_seconds']:.2f} s "
            f"for {run['config']['sample_clients']} clients (target <= 5 s)"
        )
    if ab.get("train_call_seconds"):
        c = ab["train_call"]
        lines.append(
            f"  one warm {c['max_steps']}-step call, batch {c['batch_size']}, in one process: "
            f"{ab['train_call_seconds'][-1]:.2f} s (target <= 0.6 s)"
        )
    if ab.get("swap_in_seconds") is not None:
        lines.append(
            f"  adapter swap: {1000 * ab['swap_in_seconds']:.1f} ms in, "
            f"{1000 * ab['swap_out_seconds']:.1f} ms out (target <= 10 ms)"
        )
    loads = run.get("model_loads") or {}
    if loads.get("processes"):
        lines.append(
            f"  base-model load per worker process: {loads['seconds'] / loads['processes']:.2f} s "
            f"(target <= 3 s plus CUDA start-up)"
        )
    if run.get("generation_tokens_per_second") is not None:
        timed = rounds.get("eval_seconds", {}).items()
        evals = ", ".join(f"round {r}: {s:.1f} s" for r, s in timed)
        per_wall = run.get("generation_tokens_per_wall_second") or 0.0
        lines.append(
            f"  generation: {per_wall:.0f} new tokens per second of evaluation-round wall time "
            f"(target >= 6,000 per GPU), {run['generation_tokens_per_second']:.0f}/s in each of "
            f"{run['slots']} clients at once; evaluation {evals} "
            f"(max_new_tokens {rounds.get('max_new_tokens')}, max_eval_size "
            f"{rounds.get('max_eval_size')} for each of {rounds.get('clients_evaluated')} clients)"
        )
    grid = run.get("grid")
    if grid:
        lines.append(
            f"  evaluation round: {grid['eval_round_seconds']:.1f} s; the paper grid "
            f"({grid['methods']} methods x {grid['scenarios']} scenarios x {grid['seeds']} seeds, "
            f"{grid['rounds']} rounds, {grid['evaluations']} evaluations) at this run's round "
            f"times: {grid['hours']:.1f} {'GPU-' if result['machine']['gpu'] else ''}hours "
            f"(target <= 4 GPU-hours)"
        )
    if run.get("peak_rss_mb"):
        lines.append(
            f"  server peak RSS: {run['peak_rss_mb']['server']:.0f} MiB with {run['slots']} "
            f"clients at once (target: not growing with that number)"
        )
    return lines if len(lines) > 2 else []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedrouter.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", default="quickstart", help="configs/<name>.sh or a path")
    parser.add_argument("--rounds", type=int, help="rounds to run (default: the preset's)")
    parser.add_argument("--clients", type=int, help="clients (default: the preset's)")
    parser.add_argument("--model", help="model_name_or_path instead of the preset's")
    parser.add_argument(
        "--geometry",
        help="random-init model of this geometry: llama-3.2-1b, or a Llama config JSON",
    )
    parser.add_argument(
        "--layers", type=int, help="layers of the --geometry model (default on CPU: 2)"
    )
    parser.add_argument("--no-4bit", action="store_true", help="load the base model unquantized")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config flag")
    parser.add_argument("--ab-only", action="store_true", help="skip the federated run")
    parser.add_argument("--no-ab", action="store_true", help="skip the in-process A/Bs")
    parser.add_argument("--ab-prompts", type=int, default=64, help="prompts in the eval A/B")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON")
    parser.add_argument("--workdir", help="run directory root (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; a temporary workdir that ends up empty is removed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fedrouter-bench-"))
    try:
        return _bench(args, workdir)
    finally:
        if args.workdir is None and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()  # a run directory inside it is kept: the result points at it


def _bench(args: argparse.Namespace, workdir: Path) -> dict:
    """Check the config, run the federation and the A/Bs, and write the JSON."""
    try:
        cfg = resolve_model(bench_config(args, workdir), args.geometry, args.layers)
        from fedrouter.preflight import preflight

        preflight(cfg)  # bad input fails here, before anything runs
    except (FedRouterError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    result: dict = {"machine": machine()}
    if not args.ab_only:
        run_dir, start, end = run_once(cfg)
        log = read_events(run_dir)
        adapter_bytes = adapter_size(run_dir)
        result["run"] = summarise(cfg, log, start, end, adapter_bytes)
        result["run"]["run_dir"] = str(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        result["run"]["final_rouge1"] = summary.get("final", {}).get("rouge1")
        result["run"]["grid"] = grid_estimate(result["run"])
    if not args.no_ab:
        result["ab"] = ab_measurements(cfg, args.ab_prompts, max(cfg.global_n_clusters, 2))
    report = format_report(result)
    sys.stdout.write(report + "\n")
    atomic_write_json(Path(args.out), result)
    sys.stdout.write(f"\nwrote {args.out}\n")
    return result


def adapter_size(run_dir: Path) -> int:
    """Return the raw bytes of one adapter: its float32 arrays in the run's last checkpoint."""
    from fedrouter.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run_dir)
    first = next(k.split("/")[1] for k in checkpoint.arrays if k.startswith("adapter/"))
    arrays = {k: v for k, v in checkpoint.arrays.items() if k.startswith(f"adapter/{first}/")}
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


if __name__ == "__main__":
    main()
