"""Flower ClientApp: unpack the message, call the project's modules, pack the reply."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrouter import client_logic as logic
from fedrouter.clustering import cluster_purity, route
from fedrouter.config import Config
from fedrouter.data import client_data_for
from fedrouter.models import (
    ADAPTER,
    LOAD_STATS,
    ModelSpec,
    adapter_to_arrays,
    add_lora,
    arrays_to_adapter,
    get_model_and_tokenizer,
)
from fedrouter.profiling import PHASES, peak_gpu_mb, peak_rss_mb, phase, take_phases
from fedrouter.seeding import kmeans_seed, round_sample, trainer_seed
from fedrouter.strategies.base import (
    ADAPTER_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    ROUTING_KEY,
    adapter_key,
    from_record,
    to_record,
)
from fedrouter.training import TrainSettings, train_adapter

logger = logging.getLogger(__name__)

STATE_KEY = "fedrouter.local"  # context.state entry with this node's local clustering
LOCAL_ADAPTER_KEY = "fedrouter.local_adapter"  # FedDPA: the adapter that never leaves the node
LOCAL_SLOT = "local"  # FedDPA: the model's second adapter slot, used only at inference
_TEST_EMBEDDINGS: dict[tuple, np.ndarray] = {}  # base-model embeddings never change


def node_config(cfg: Config, context: Context) -> tuple[int, int]:
    """Return (partition id, number of partitions) of this node."""
    pid = int(context.node_config.get("partition-id", 0))
    num = int(context.node_config.get("num-partitions", cfg.num_clients))
    return pid, num


def client_data(cfg: Config, context: Context):
    """Return this node's train/test rows (loaded once per process)."""
    pid, num = node_config(cfg, context)
    with phase("data-load"):  # the first call per process loads; later ones hit the cache
        parts = client_data_for(cfg, num_clients=num)
    return pid, parts[pid]


def model_and_tokenizer(cfg: Config):
    """Return this process's cached base model with LoRA, and its tokenizer."""
    import torch

    # Each simulated client gets client_resources_cpus cores; more threads only contend.
    torch.set_num_threads(max(1, int(cfg.client_resources_cpus)))
    return get_model_and_tokenizer(ModelSpec.from_config(cfg))


def process_metrics() -> dict[str, float]:
    """Report the serving process, its base-model loads, peak memory, and phase seconds.

    Call it last when building a reply: it hands over (and resets) the phases timed since
    the previous reply of this process.
    """
    return {
        "pid": float(os.getpid()),
        "model-loads": float(LOAD_STATS["count"]),
        "seconds/model-load": LOAD_STATS["seconds"],
        "peak-rss-mb": peak_rss_mb(),
        "peak-gpu-mb": peak_gpu_mb(),
        **{f"phase/{name}": seconds for name, seconds in take_phases().items()},
    }


def handle_cluster(cfg: Config, msg: Message, context: Context) -> Message:
    """Embed and cluster the training data; keep labels in state, send centroids."""
    start = time.perf_counter()
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    with phase("embedding"):
        embeddings = logic.embed_instructions(
            model, tokenizer, part.train, batch_size=cfg.eval_batch_size, max_length=cfg.seq_length
        )
    request = msg.content[CONFIG_KEY]
    seed, n_init = kmeans_seed(cfg, pid)
    with phase("kmeans"):
        local = logic.cluster_locally(
            embeddings,
            [r["task"] for r in part.train],
            int(request["n-clusters"]),
            seed,
            oracle=bool(request["oracle"]),
            n_init=n_init,
        )
    context.state[STATE_KEY] = to_record({"labels": local.labels, "centroids": local.centroids})
    sizes = np.bincount(local.labels, minlength=len(local.centroids))
    content = RecordDict(
        {
            "centroids": to_record({"centroids": local.centroids, "sizes": sizes}),
            CONFIG_KEY: ConfigRecord({"partition-id": pid, "local-tasks": list(local.tasks)}),
        }
    )
    if msg.content[CONFIG_KEY].get("send-adapter", False):
        with phase("adapter-swap"):
            arrays = adapter_to_arrays(model)
        with phase("serialization"):
            content[ADAPTER_KEY] = to_record(arrays)
    purity = cluster_purity(local.labels, np.array([r["task"] for r in part.train]))
    content[METRICS_KEY] = MetricRecord(
        {
            **process_metrics(),
            "seconds/clustering": time.perf_counter() - start,
            "local-purity": float(purity),
        }
    )
    return Message(content, reply_to=msg)


def handle_train(cfg: Config, msg: Message, context: Context) -> Message:
    """Train the requested local clusters, each from its global cluster's adapter; reply.

    The reply carries one adapter per global cluster trained. Two local clusters matched to
    the same global cluster each start from the server's copy; their results are averaged
    here, weighted by examples, which is what the server's FedAvg would make of them.
    """
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    config = msg.content[CONFIG_KEY]
    server_round = int(config["server-round"])
    locals_ = [int(c) for c in config["local-clusters"]]
    globals_ = [int(g) for g in config["global-clusters"]]
    labels = context.state[STATE_KEY]["labels"].numpy()
    settings = TrainSettings.from_config(cfg)
    trained, results = [], {}
    for local, g in zip(locals_, globals_, strict=True):
        rows = logic.cluster_rows(part.train, labels, local)
        picked = round_sample(rows, settings.samples_per_call, cfg, server_round, pid)
        with phase("serialization"):
            start_arrays = from_record(msg.content[adapter_key(g)])
        with phase("adapter-swap"):
            arrays_to_adapter(model, start_arrays)
        result = train_adapter(
            model,
            tokenizer,
            picked,
            settings=settings,
            lr=float(config["lr"]),
            seed=trainer_seed(cfg, server_round, pid),
        )
        with phase("adapter-swap"):
            results.setdefault(g, []).append((adapter_to_arrays(model), result.num_examples))
        trained.append((local, g, result, len(rows)))
        if config.get("train-local-adapter", False):
            train_local_adapter(cfg, model, tokenizer, picked, context, start_arrays, msg)
    content = RecordDict()
    with phase("serialization"):
        for g, pairs in results.items():
            content[adapter_key(g)] = to_record(average_arrays(pairs))
    total = sum(r.num_examples for _, _, r, _ in trained)
    metrics = {
        "num-examples": float(total),
        "train-loss": sum(r.loss * r.num_examples for _, _, r, _ in trained) / max(total, 1),
        "local-clusters": [local for local, _, _, _ in trained],
        "global-clusters": [g for _, g, _, _ in trained],
        "examples-per-cluster": [float(r.num_examples) for _, _, r, _ in trained],
        "loss-per-cluster": [r.loss for _, _, r, _ in trained],
        "cluster-sizes": [float(size) for _, _, _, size in trained],
        "seconds-per-cluster": [r.seconds for _, _, r, _ in trained],
        **process_metrics(),
    }
    content[METRICS_KEY] = MetricRecord(metrics)
    return Message(content, reply_to=msg)


def average_arrays(pairs: list[tuple[dict, int]]) -> dict:
    """Return the example-weighted mean of (arrays, examples) pairs (the one, if alone)."""
    if len(pairs) == 1:
        return pairs[0][0]
    total = sum(n for _, n in pairs)
    keys = pairs[0][0].keys()
    return {k: sum(arrays[k] * (n / total) for arrays, n in pairs) for k in keys}


def train_local_adapter(cfg: Config, model, tokenizer, rows, context: Context, start, msg):
    """FedDPA: train this node's own adapter in the same slot and keep it in node state."""
    if LOCAL_ADAPTER_KEY in context.state:
        start = from_record(context.state[LOCAL_ADAPTER_KEY])  # else: a copy of the global one
    arrays_to_adapter(model, start)
    pid, _ = node_config(cfg, context)
    train_adapter(
        model,
        tokenizer,
        rows,
        settings=TrainSettings.from_config(cfg),
        lr=float(msg.content[CONFIG_KEY]["lr"]),
        seed=trainer_seed(cfg, int(msg.content[CONFIG_KEY]["server-round"]), pid) + 1,
    )
    context.state[LOCAL_ADAPTER_KEY] = to_record(adapter_to_arrays(model))


def cached_test_embeddings(cfg: Config, pid: int, rows, model, tokenizer) -> np.ndarray:
    """Embed the test instructions once per process; the base model never changes."""
    key = (pid, cfg.model_name_or_path, cfg.dataset_name, cfg.split_strategy, cfg.evaluation_mode)
    key += (cfg.num_clients, cfg.seed, len(rows))
    if key not in _TEST_EMBEDDINGS:
        _TEST_EMBEDDINGS[key] = logic.embed_instructions(
            model, tokenizer, rows, batch_size=cfg.eval_batch_size, max_length=cfg.seq_length
        )
    return _TEST_EMBEDDINGS[key]


def oracle_routes(rows, clusters: np.ndarray, cluster_tasks, fallback: np.ndarray) -> np.ndarray:
    """Route each row to an allowed cluster of its true task; else keep the fallback route."""
    by_task = {cluster_tasks[g]: g for g in clusters}
    return np.array([by_task.get(r["task"], f) for r, f in zip(rows, fallback, strict=True)])


def handle_evaluate(cfg: Config, msg: Message, context: Context) -> Message:
    """Route each test sample to its nearest allowed cluster, generate, and score ROUGE."""
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    start = time.perf_counter()
    with phase("eval-embedding"):
        embeddings = cached_test_embeddings(cfg, pid, part.test, model, tokenizer)
    embed_seconds = time.perf_counter() - start
    routing = msg.content[ROUTING_KEY]
    clusters = routing["clusters"].numpy()
    with phase("serialization"):
        adapters = {int(g): from_record(msg.content[adapter_key(int(g))]) for g in clusters}
    with phase("routing"):
        routes = route(embeddings, routing["centroids"].numpy(), allowed=clusters)
    cluster_tasks = list(msg.content[CONFIG_KEY]["cluster-tasks"])
    if msg.content[CONFIG_KEY].get("route-by-task", False):
        routes = oracle_routes(part.test, clusters, cluster_tasks, routes)

    local_weight = float(msg.content[CONFIG_KEY].get("local-adapter-weight", 0.0))
    mixing = local_weight > 0 and LOCAL_ADAPTER_KEY in context.state
    if mixing:
        mix_in_local_adapter(
            cfg, model, from_record(context.state[LOCAL_ADAPTER_KEY]), local_weight
        )

    def activate(g: int) -> None:
        arrays = adapters[g]
        arrays_to_adapter(model, scale_lora_b(arrays, 1.0 - local_weight) if mixing else arrays)

    result = logic.evaluate_routed(
        model,
        tokenizer,
        part.test,
        routes,
        activate,
        cluster_tasks=cluster_tasks,
        template=cfg.template,
        batch_size=cfg.eval_batch_size,
        max_new_tokens=cfg.max_new_tokens,
        max_length=cfg.seq_length,
        prompt_end=cfg.generation_prompt,
    )
    if mixing:
        model.base_model.set_adapter(ADAPTER)  # back to the one trainable slot
    for name, seconds in result.seconds.items():
        PHASES[name] += seconds
    metrics = {**result.metrics(), "seconds/embedding": embed_seconds, **process_metrics()}
    return Message(RecordDict({METRICS_KEY: MetricRecord(metrics)}), reply_to=msg)


def scale_lora_b(arrays, factor: float):
    """Scale an adapter's delta by scaling its B matrices (the delta is linear in B)."""
    return {k: (v * factor if "lora_B" in k else v) for k, v in arrays.items()}


def mix_in_local_adapter(cfg: Config, model, local_arrays, weight: float) -> None:
    """Load the local adapter, scaled by ``weight``, in a second slot and activate both slots."""
    if LOCAL_SLOT not in model.peft_config:
        add_lora(model, ModelSpec.from_config(cfg), LOCAL_SLOT)
    arrays_to_adapter(model, scale_lora_b(local_arrays, weight), LOCAL_SLOT)
    model.base_model.set_adapter([ADAPTER, LOCAL_SLOT], inference_mode=True)


def make_client_app(cfg: Config | None = None, mods=None) -> ClientApp:
    """Build the ClientApp; without ``cfg`` it reads the config from ``run_config``.

    ``mods`` are Flower client mods wrapped around every call (e.g. a fault injector in tests).
    """
    app = ClientApp(mods=mods or [])

    def resolve(context: Context) -> Config:
        return cfg if cfg is not None else Config.from_dict(dict(context.run_config))

    @app.query("cluster")
    def cluster(msg: Message, context: Context) -> Message:
        return handle_cluster(resolve(context), msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(resolve(context), msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(resolve(context), msg, context)

    return app


app = make_client_app()  # the component `flwr run` loads; simulation.py builds its own
