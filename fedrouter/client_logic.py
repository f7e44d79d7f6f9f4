"""What one client does, given the protocol's messages: cluster, train, evaluate routed.

Flower's ``Message`` and ``Context`` stay in ``client_app``; this module takes the decoded
instruction, the node's data and its saved state, and returns the reply to encode. The
methods' client hooks (methods.py) arrive as message fields and are honoured here:

- ``oracle`` / ``route-by-task``: local clusters and routes follow the true task label;
- ``train-local-adapter`` / ``local-adapter-weight``: FedDPA. The client also trains its own
  adapter, which never leaves the node, and at inference mixes the two LoRA deltas with
  fixed weights (``feddpa_alpha`` for the shared adapter, the rest for its own).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedrouter import protocol as p
from fedrouter.clustering import cluster_purity, kmeans, route
from fedrouter.embeddings import embed_texts
from fedrouter.evaluation import ROUGE_KEYS, generate_routed, rouge_per_sample
from fedrouter.models import (
    ADAPTER,
    LOAD_STATS,
    ModelSpec,
    adapter_to_arrays,
    add_lora,
    arrays_to_adapter,
    ensure_adapter_slot,
)
from fedrouter.profiling import PHASES, peak_gpu_mb, peak_rss_mb, phase, take_phases
from fedrouter.seeding import kmeans_seed, round_sample, trainer_seed
from fedrouter.training import TrainSettings, train_adapter

logger = logging.getLogger(__name__)

LOCAL_SLOT = "local"  # FedDPA: the model's second adapter slot, used only at inference
_TEST_EMBEDDINGS: dict[tuple, np.ndarray] = {}  # base-model embeddings never change


@dataclass(frozen=True)
class LocalClusters:
    """A client's local clustering of its training samples."""

    labels: np.ndarray  # (n_train,) local cluster of each training sample
    centroids: np.ndarray  # (n_clusters, hidden)
    tasks: tuple[str, ...]  # majority true task per local cluster (diagnostics only)


def majority_tasks(labels: np.ndarray, tasks: Sequence[str], n_clusters: int) -> tuple[str, ...]:
    """Return the most common true task of each cluster ('' for an empty one)."""
    out = []
    for cluster in range(n_clusters):
        members = [tasks[i] for i in np.flatnonzero(labels == cluster)]
        out.append(Counter(members).most_common(1)[0][0] if members else "")
    return tuple(out)


def cluster_locally(
    embeddings: np.ndarray,
    tasks: Sequence[str],
    n_clusters: int,
    seed: int,
    oracle: bool = False,
    n_init: int | str = 10,
) -> LocalClusters:
    """k-means the embeddings, or (oracle) group them by their true task."""
    if oracle:
        names = sorted(set(tasks))
        labels = np.array([names.index(t) for t in tasks], dtype=np.int64)
        centroids = np.stack([embeddings[labels == k].mean(0) for k in range(len(names))])
        return LocalClusters(labels, centroids.astype(np.float32), tuple(names))
    if n_clusters > len(embeddings):
        raise ValueError(
            f"n_clusters={n_clusters} is larger than this client's {len(embeddings)} samples"
        )
    result = kmeans(embeddings, n_clusters, seed, n_init=n_init)
    return LocalClusters(
        result.labels, result.centroids, majority_tasks(result.labels, tasks, n_clusters)
    )


def embed_instructions(model, tokenizer, rows: Sequence[dict], *, batch_size: int, max_length: int):
    """Embed the instruction text of each row with the base model."""
    return embed_texts(
        model,
        tokenizer,
        [row["instruction"] for row in rows],
        batch_size=batch_size,
        max_length=max_length,
    )


def cluster_rows(rows: Sequence[dict], labels: np.ndarray, cluster: int) -> list[dict]:
    """Return the rows of one local cluster."""
    return [rows[i] for i in np.flatnonzero(labels == cluster)]


@dataclass
class RoutedEval:
    """Per-cluster and overall results of a routed evaluation."""

    scores: np.ndarray  # (n_test, 3) ROUGE-1/2/L per sample
    routes: np.ndarray  # (n_test,) global cluster of each sample
    correct: np.ndarray  # (n_test,) routed to a cluster of the sample's own task
    seconds: dict[str, float]
    new_tokens: int

    def metrics(self) -> dict[str, float]:
        """Flatten into scalar metrics: overall and per-cluster ROUGE, counts, routing accuracy."""
        out: dict[str, float] = {p.NUM_EXAMPLES: float(len(self.routes))}
        for j, key in enumerate(ROUGE_KEYS):
            out[key] = float(self.scores[:, j].mean()) if len(self.scores) else 0.0
        out[p.ROUTING_ACCURACY] = float(self.correct.mean()) if len(self.correct) else 0.0
        for cluster in np.unique(self.routes):
            mask = self.routes == cluster
            out[f"count/c{cluster}"] = float(mask.sum())
            for j, key in enumerate(ROUGE_KEYS):
                out[f"{key}/c{cluster}"] = float(self.scores[mask, j].mean())
        for name, secs in self.seconds.items():
            out[f"{p.SECONDS_PREFIX}{name}"] = secs
        out[p.GENERATED_TOKENS] = float(self.new_tokens)
        return out


def evaluate_routed(
    model,
    tokenizer,
    rows: Sequence[dict],
    routes: np.ndarray,
    activate: Callable[[int], None],
    *,
    cluster_tasks: Sequence[str],
    template: str,
    batch_size: int,
    max_new_tokens: int,
    max_length: int,
    prompt_end: str = "marker",
    load_slots: Callable[[Sequence[int]], dict[int, str]] | None = None,
) -> RoutedEval:
    """Generate each row's answer with its routed cluster's adapter and score it with ROUGE.

    With ``load_slots`` the rows are generated in mixed-adapter batches, each cluster's adapter
    in its own slot (``evaluation.generate_routed``); without it ``activate(g)`` swaps cluster
    g's adapter into the model in place, once per routed cluster, never per sample.
    """
    seconds = {"adapter-swap": 0.0, "generation": 0.0, "rouge": 0.0}
    stats = {"new_tokens": 0}
    predictions = generate_routed(
        model,
        tokenizer,
        [row["instruction"] for row in rows],
        routes,
        activate,
        template=template,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_length=max_length,
        prompt_end=prompt_end,
        seconds=seconds,
        stats=stats,
        load_slots=load_slots,
    )
    start = time.perf_counter()
    scores = rouge_per_sample(predictions, [row["response"] for row in rows])
    seconds["rouge"] = time.perf_counter() - start
    correct = np.array(
        [cluster_tasks[g] == row["task"] for g, row in zip(routes, rows, strict=True)], dtype=bool
    )
    return RoutedEval(scores, np.asarray(routes), correct, seconds, stats["new_tokens"])


# ----- one message each -----------------------------------------------------------------
def process_metrics() -> dict[str, float]:
    """Report the serving process, its base-model loads, peak memory, and phase seconds.

    Call it last when building a reply: it hands over (and resets) the phases timed since
    the previous reply of this process.
    """
    return {
        p.PID: float(os.getpid()),
        p.MODEL_LOADS: float(LOAD_STATS["count"]),
        p.MODEL_LOAD_SECONDS: LOAD_STATS["seconds"],
        p.PEAK_RSS_MB: peak_rss_mb(),
        p.PEAK_GPU_MB: peak_gpu_mb(),
        **{f"{p.PHASE_PREFIX}{name}": seconds for name, seconds in take_phases().items()},
    }


def cluster_node(
    cfg, model, tokenizer, pid: int, rows: Sequence[dict], query: p.ClusterQuery, start: float
) -> tuple[LocalClusters, p.ClusterReply]:
    """Embed and cluster the training rows; return the clustering and the reply to send.

    ``start`` is when the query arrived: the reported seconds include loading model and data.
    """
    with phase("embedding"):
        embeddings = embed_instructions(
            model, tokenizer, rows, batch_size=cfg.eval_batch_size, max_length=cfg.seq_length
        )
    tasks = [r["task"] for r in rows]
    seed, n_init = kmeans_seed(cfg, pid)
    with phase("kmeans"):
        local = cluster_locally(
            embeddings, tasks, query.n_clusters, seed, oracle=query.oracle, n_init=n_init
        )
    adapter = None
    if query.send_adapter:
        with phase("adapter-swap"):
            arrays = adapter_to_arrays(model)
        with phase("serialization"):
            adapter = p.to_record(arrays)
    purity = cluster_purity(local.labels, np.array(tasks))
    reply = p.ClusterReply(
        partition_id=pid,
        centroids=local.centroids,
        sizes=np.bincount(local.labels, minlength=len(local.centroids)),
        local_tasks=local.tasks,
        adapter=adapter,
    )
    reply.metrics = {
        **process_metrics(),
        p.CLUSTERING_SECONDS: time.perf_counter() - start,
        p.LOCAL_PURITY: float(purity),
    }
    return local, reply


def train_node(
    cfg,
    model,
    tokenizer,
    pid: int,
    rows: Sequence[dict],
    labels: np.ndarray,
    instruction: p.TrainInstruction,
    local_adapter: dict | None = None,
) -> tuple[p.TrainReply, dict | None]:
    """Train the requested local clusters, each from its global cluster's adapter.

    Return the reply and the node's own adapter (FedDPA; else ``local_adapter`` unchanged).
    The reply carries one adapter per global cluster trained. Two local clusters matched to
    the same global cluster each start from the server's copy; their results are averaged
    here, weighted by examples, which is what the server's FedAvg would make of them.
    """
    settings = TrainSettings.from_config(cfg)
    server_round = instruction.server_round
    seed = trainer_seed(cfg, server_round, pid)
    trained, results = [], {}
    pairs = zip(instruction.local_clusters, instruction.global_clusters, strict=True)
    for local, g in pairs:
        members = cluster_rows(rows, labels, local)
        picked = round_sample(members, settings.samples_per_call, cfg, server_round, pid)
        with phase("serialization"):
            start_arrays = p.from_record(instruction.adapters[g])
        with phase("adapter-swap"):
            arrays_to_adapter(model, start_arrays)
        result = train_adapter(
            model, tokenizer, picked, settings=settings, lr=instruction.lr, seed=seed
        )
        with phase("adapter-swap"):
            results.setdefault(g, []).append((adapter_to_arrays(model), result.num_examples))
        trained.append(
            p.ClusterTrained(
                local, g, result.num_examples, result.loss, len(members), result.seconds
            )
        )
        if instruction.train_local_adapter:
            start = local_adapter if local_adapter is not None else start_arrays
            local_adapter = train_local_adapter(
                model, tokenizer, picked, start, settings=settings, lr=instruction.lr, seed=seed + 1
            )
    with phase("serialization"):
        adapters = {g: p.to_record(average_arrays(pairs)) for g, pairs in results.items()}
    reply = p.TrainReply(adapters, trained)
    reply.process = process_metrics()
    return reply, local_adapter


def average_arrays(pairs: list[tuple[dict, int]]) -> dict:
    """Return the example-weighted mean of (arrays, examples) pairs (the one, if alone)."""
    if len(pairs) == 1:
        return pairs[0][0]
    total = sum(n for _, n in pairs)
    keys = pairs[0][0].keys()
    return {k: sum(arrays[k] * (n / total) for arrays, n in pairs) for k in keys}


def train_local_adapter(model, tokenizer, rows, start, *, settings, lr: float, seed: int) -> dict:
    """FedDPA: train the node's own adapter, from ``start``, in the trainable slot."""
    arrays_to_adapter(model, start)
    train_adapter(model, tokenizer, rows, settings=settings, lr=lr, seed=seed)
    return adapter_to_arrays(model)


def cached_test_embeddings(cfg, pid: int, rows, model, tokenizer) -> np.ndarray:
    """Embed the test instructions once per process; the base model never changes."""
    key = (pid, cfg.model_name_or_path, cfg.dataset_name, cfg.split_strategy, cfg.evaluation_mode)
    key += (cfg.num_clients, cfg.seed, len(rows), cfg.instruction_format, cfg.synthetic_overlap)
    if key not in _TEST_EMBEDDINGS:
        _TEST_EMBEDDINGS[key] = embed_instructions(
            model, tokenizer, rows, batch_size=cfg.eval_batch_size, max_length=cfg.seq_length
        )
    return _TEST_EMBEDDINGS[key]


def oracle_routes(rows, clusters: np.ndarray, cluster_tasks, fallback: np.ndarray) -> np.ndarray:
    """Route each row to an allowed cluster of its true task; else keep the fallback route."""
    by_task = {cluster_tasks[g]: g for g in clusters}
    return np.array([by_task.get(r["task"], f) for r, f in zip(rows, fallback, strict=True)])


def evaluate_node(
    cfg,
    model,
    tokenizer,
    pid: int,
    rows: Sequence[dict],
    instruction: p.EvalInstruction,
    local_adapter: dict | None = None,
) -> p.EvalReply:
    """Route each test row to its nearest allowed cluster, generate, and score ROUGE."""
    start = time.perf_counter()
    with phase("eval-embedding"):
        embeddings = cached_test_embeddings(cfg, pid, rows, model, tokenizer)
    embed_seconds = time.perf_counter() - start
    clusters = instruction.clusters
    with phase("serialization"):
        adapters = {int(g): p.from_record(instruction.adapters[int(g)]) for g in clusters}
    with phase("routing"):
        routes = route(embeddings, instruction.centroids, allowed=clusters)
    if instruction.route_by_task:
        routes = oracle_routes(rows, clusters, instruction.cluster_tasks, routes)
    weight = instruction.local_adapter_weight or 0.0
    mixing = weight > 0 and local_adapter is not None
    if mixing:
        mix_in_local_adapter(model, ModelSpec.from_config(cfg), local_adapter, weight)

    def activate(g: int) -> None:
        arrays = adapters[g]
        arrays_to_adapter(model, scale_lora_b(arrays, 1.0 - weight) if mixing else arrays)

    # FedDPA's two active slots cannot mix per row: it keeps one cluster's batches at a time.
    load_slots = None if mixing else slot_loader(model, ModelSpec.from_config(cfg), adapters)
    if mixing:
        logger.debug("client %d: per-cluster generation (two adapters active at once)", pid)

    try:
        result = evaluate_routed(
            model,
            tokenizer,
            rows,
            routes,
            activate,
            cluster_tasks=instruction.cluster_tasks,
            template=cfg.template,
            batch_size=cfg.eval_batch_size,
            max_new_tokens=cfg.max_new_tokens,
            max_length=cfg.seq_length,
            prompt_end=cfg.generation_prompt,
            load_slots=load_slots,
        )
    finally:
        if mixing:
            model.base_model.set_adapter(ADAPTER)  # back to the one trainable slot
    for name, seconds in result.seconds.items():
        PHASES[name] += seconds
    metrics = {**result.metrics(), p.EMBEDDING_SECONDS: embed_seconds, **process_metrics()}
    return p.EvalReply(metrics)


def cluster_slot(g: int) -> str:
    """Return the name of the inference-only adapter slot that holds global cluster g."""
    return f"cluster_{g}"


def slot_loader(model, spec: ModelSpec, adapters: dict[int, dict]):
    """Return ``load_slots(clusters)``: each cluster's adapter into its own slot, in place."""

    def load_slots(clusters: Sequence[int]) -> dict[int, str]:
        names = {}
        for g in clusters:
            names[g] = cluster_slot(g)
            ensure_adapter_slot(model, spec, names[g])
            arrays_to_adapter(model, adapters[g], names[g])
        return names

    return load_slots


def scale_lora_b(arrays, factor: float):
    """Scale an adapter's delta by scaling its B matrices (the delta is linear in B)."""
    return {k: (v * factor if "lora_B" in k else v) for k, v in arrays.items()}


def mix_in_local_adapter(model, spec: ModelSpec, local_arrays, weight: float) -> None:
    """Load the local adapter, scaled by ``weight``, in a second slot and activate both slots."""
    if LOCAL_SLOT not in model.peft_config:
        add_lora(model, spec, LOCAL_SLOT)
    arrays_to_adapter(model, scale_lora_b(local_arrays, weight), LOCAL_SLOT)
    model.base_model.set_adapter([ADAPTER, LOCAL_SLOT], inference_mode=True)
