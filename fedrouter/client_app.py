"""Flower ClientApp: unpack the message, call the client logic, pack the reply."""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedrouter import client_logic as logic
from fedrouter import protocol as p
from fedrouter.config import Config
from fedrouter.data import client_data_for
from fedrouter.models import ModelSpec, get_model_and_tokenizer
from fedrouter.profiling import phase

STATE_KEY = "fedrouter.local"  # context.state entry with this node's local clustering
LOCAL_ADAPTER_KEY = "fedrouter.local_adapter"  # FedDPA: the adapter that never leaves the node


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


def local_adapter(context: Context) -> dict | None:
    """Return the node's own adapter (FedDPA), if it has one."""
    if LOCAL_ADAPTER_KEY not in context.state:
        return None
    return p.from_record(context.state[LOCAL_ADAPTER_KEY])


def handle_cluster(cfg: Config, msg: Message, context: Context) -> Message:
    """Cluster the node's training data; keep the labels in node state, send the centroids."""
    start = time.perf_counter()
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    query = p.ClusterQuery.parse(msg.content)
    local, reply = logic.cluster_node(cfg, model, tokenizer, pid, part.train, query, start)
    context.state[STATE_KEY] = p.to_record({"labels": local.labels, "centroids": local.centroids})
    return Message(reply.content(), reply_to=msg)


def handle_train(cfg: Config, msg: Message, context: Context) -> Message:
    """Train the requested local clusters; keep the node's own adapter in state (FedDPA)."""
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    labels = context.state[STATE_KEY]["labels"].numpy()
    instruction = p.TrainInstruction.parse(msg.content)
    reply, own = logic.train_node(
        cfg, model, tokenizer, pid, part.train, labels, instruction, local_adapter(context)
    )
    if own is not None:
        context.state[LOCAL_ADAPTER_KEY] = p.to_record(own)
    return Message(reply.content(), reply_to=msg)


def handle_evaluate(cfg: Config, msg: Message, context: Context) -> Message:
    """Route, generate and score the node's test rows."""
    model, tokenizer = model_and_tokenizer(cfg)
    pid, part = client_data(cfg, context)
    instruction = p.EvalInstruction.parse(msg.content)
    reply = logic.evaluate_node(
        cfg, model, tokenizer, pid, part.test, instruction, local_adapter(context)
    )
    return Message(reply.content(), reply_to=msg)


def make_client_app(cfg: Config | None = None, mods=None) -> ClientApp:
    """Build the ClientApp; without ``cfg`` it reads the config from ``run_config``.

    ``mods`` are Flower client mods wrapped around every call (e.g. a fault injector in tests).
    """
    app = ClientApp(mods=mods or [])

    def resolve(context: Context) -> Config:
        return cfg if cfg is not None else Config.from_dict(dict(context.run_config))

    @app.query(p.CLUSTER_ACTION)
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
