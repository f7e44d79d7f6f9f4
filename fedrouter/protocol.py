"""The messages between server and clients: keys, record encoding, typed messages, metric names.

Both sides import this module and nothing of each other. Message fields and reply metrics
are kebab-case, as Flower's own; ``event_field`` gives the snake_case name a metric has in
metrics.jsonl.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedrouter.evaluation import ROUGE_KEYS

# ----- records of a message ------------------------------------------------------------
ADAPTER = "adapter"  # the initial adapter in a clustering reply; "adapter.<g>" elsewhere
CONFIG = "config"
METRICS = "metrics"
ROUTING = "routing"  # evaluate: the clusters a client may route to, and the global centroids
CENTROIDS = "centroids"  # clustering reply: the local centroids and their sizes
CLUSTER_ACTION = "cluster"  # the clustering phase: a query message of this action
CLUSTER_QUERY = f"query.{CLUSTER_ACTION}"

# ----- config fields ---------------------------------------------------------------------
SERVER_ROUND = "server-round"
N_CLUSTERS = "n-clusters"
ORACLE = "oracle"  # cluster by the true task label
SEND_ADAPTER = "send-adapter"
PARTITION_ID = "partition-id"
LOCAL_TASKS = "local-tasks"
LOCAL_CLUSTERS = "local-clusters"
GLOBAL_CLUSTERS = "global-clusters"
LR = "lr"
TRAIN_LOCAL_ADAPTER = "train-local-adapter"
CLUSTER_TASKS = "cluster-tasks"
ROUTE_BY_TASK = "route-by-task"
LOCAL_ADAPTER_WEIGHT = "local-adapter-weight"
CLUSTERS = "clusters"  # array in the routing record
SIZES = "sizes"  # array in the centroids record

# ----- reply metrics -----------------------------------------------------------------------
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
EXAMPLES_PER_CLUSTER = "examples-per-cluster"
LOSS_PER_CLUSTER = "loss-per-cluster"
CLUSTER_SIZES = "cluster-sizes"
SECONDS_PER_CLUSTER = "seconds-per-cluster"
LOCAL_PURITY = "local-purity"
ROUTING_ACCURACY = "routing-accuracy"
GENERATED_TOKENS = "generated-tokens"
CLUSTERING_SECONDS = "seconds/clustering"
EMBEDDING_SECONDS = "seconds/embedding"
# process fields, in every reply: the serving process, its model loads, memory, phase timers
PID = "pid"
MODEL_LOADS = "model-loads"
MODEL_LOAD_SECONDS = "seconds/model-load"
PEAK_RSS_MB = "peak-rss-mb"
PEAK_GPU_MB = "peak-gpu-mb"
PHASE_PREFIX = "phase/"
PEAK_PREFIX = "peak-"
SECONDS_PREFIX = "seconds/"
# one trained local cluster, as the server records it
LOCAL_CLUSTER = "local-cluster"
GLOBAL_CLUSTER = "global-cluster"
CLUSTER_SIZE = "cluster-size"
TRAIN_SECONDS = "seconds/train"
EVAL_MEANS = (*ROUGE_KEYS, ROUTING_ACCURACY)  # averaged over clients, weighted by examples

# a train reply's per-cluster list -> that entry's name in the record of one trained cluster
PER_CLUSTER = {
    LOCAL_CLUSTERS: LOCAL_CLUSTER,
    GLOBAL_CLUSTERS: GLOBAL_CLUSTER,
    EXAMPLES_PER_CLUSTER: NUM_EXAMPLES,
    LOSS_PER_CLUSTER: TRAIN_LOSS,
    CLUSTER_SIZES: CLUSTER_SIZE,
    SECONDS_PER_CLUSTER: TRAIN_SECONDS,
}


def event_field(name: str) -> str:
    """Return the metrics.jsonl name of a reply metric: kebab-case becomes snake_case."""
    return name.replace("-", "_")


_IDS = (PID, MODEL_LOADS)


def event_fields(metrics: Mapping[str, object], drop: Sequence[str] = ()) -> dict:
    """Rename a reply's metrics for metrics.jsonl; pid and model loads go last, as ints.

    A record without them gets -1, which readers take as "unknown".
    """
    out = {event_field(k): v for k, v in metrics.items() if k not in drop and k not in _IDS}
    return {**out, **{event_field(k): int(metrics.get(k, -1)) for k in _IDS}}


# ----- arrays ------------------------------------------------------------------------------
def adapter_key(cluster: int) -> str:
    """Name the ArrayRecord that carries one cluster's adapter."""
    return f"{ADAPTER}.{cluster}"


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Pack named numpy arrays into an ArrayRecord, keeping the key order."""
    return ArrayRecord(OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in arrays.items()))


def from_record(record: ArrayRecord) -> OrderedDict:
    """Unpack an ArrayRecord into named numpy arrays."""
    return OrderedDict((key, array.numpy()) for key, array in record.items())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure(node: int, reason: str) -> dict:
    """Describe a failed reply: the exception's last line, and the full text as detail."""
    text = _ANSI.sub("", reason)
    lines = [line.strip(" '>") for line in text.splitlines() if line.strip(" '>")]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", line)]
    return {"node": node, "error": (errors or lines or ["unknown error"])[-1], "detail": text}


def _adapters(content: RecordDict) -> dict[int, ArrayRecord]:
    """Return the cluster adapters a message carries, by cluster id."""
    prefix = f"{ADAPTER}."
    records = content.array_records.items()
    return {int(k[len(prefix) :]): r for k, r in records if k.startswith(prefix)}


# ----- clustering phase --------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterQuery:
    """Ask a client to cluster its data; one client also sends the initial adapter."""

    n_clusters: int
    oracle: bool = False  # group by the true task label instead of k-means
    send_adapter: bool = False

    def content(self) -> RecordDict:
        """Encode the query."""
        fields = {SEND_ADAPTER: self.send_adapter, N_CLUSTERS: self.n_clusters, ORACLE: self.oracle}
        return RecordDict({CONFIG: ConfigRecord(fields)})

    @classmethod
    def parse(cls, content: RecordDict) -> ClusterQuery:
        """Decode a query."""
        config = content[CONFIG]
        return cls(
            int(config[N_CLUSTERS]), bool(config[ORACLE]), bool(config.get(SEND_ADAPTER, False))
        )


@dataclass
class ClusterReply:
    """A client's local centroids (its only words about its data) and, if asked, the adapter."""

    partition_id: int
    centroids: np.ndarray  # (n_local, hidden)
    sizes: np.ndarray  # training samples per local cluster
    local_tasks: tuple[str, ...]  # majority true task per local cluster (diagnostics only)
    metrics: dict = field(default_factory=dict)
    adapter: ArrayRecord | None = None

    def content(self) -> RecordDict:
        """Encode the reply."""
        content = RecordDict(
            {
                CENTROIDS: to_record({CENTROIDS: self.centroids, SIZES: self.sizes}),
                CONFIG: ConfigRecord(
                    {PARTITION_ID: self.partition_id, LOCAL_TASKS: list(self.local_tasks)}
                ),
            }
        )
        if self.adapter is not None:
            content[ADAPTER] = self.adapter
        content[METRICS] = MetricRecord(self.metrics)
        return content

    @classmethod
    def parse(cls, content: RecordDict) -> ClusterReply:
        """Decode a reply; the adapter stays an ArrayRecord until the caller unpacks it."""
        arrays, config = content[CENTROIDS], content[CONFIG]
        return cls(
            partition_id=int(config[PARTITION_ID]),
            centroids=arrays[CENTROIDS].numpy(),
            sizes=arrays[SIZES].numpy(),
            local_tasks=tuple(config[LOCAL_TASKS]),
            metrics=dict(content[METRICS]),
            adapter=content.array_records.get(ADAPTER),
        )


# ----- training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainInstruction:
    """Train these local clusters, each from its global cluster's adapter."""

    server_round: int
    local_clusters: list[int]
    global_clusters: list[int]  # the global cluster of each local one
    lr: float
    adapters: Mapping[int, ArrayRecord]  # one per distinct global cluster
    train_local_adapter: bool = False  # FedDPA: train the node's own adapter too

    def content(self) -> RecordDict:
        """Encode the instruction; a flag travels only when set."""
        content = RecordDict({adapter_key(g): r for g, r in self.adapters.items()})
        fields = {
            SERVER_ROUND: self.server_round,
            LOCAL_CLUSTERS: list(self.local_clusters),
            GLOBAL_CLUSTERS: list(self.global_clusters),
            LR: self.lr,
        }
        if self.train_local_adapter:
            fields[TRAIN_LOCAL_ADAPTER] = True
        content[CONFIG] = ConfigRecord(fields)
        return content

    @classmethod
    def parse(cls, content: RecordDict) -> TrainInstruction:
        """Decode an instruction."""
        config = content[CONFIG]
        return cls(
            server_round=int(config[SERVER_ROUND]),
            local_clusters=[int(c) for c in config[LOCAL_CLUSTERS]],
            global_clusters=[int(g) for g in config[GLOBAL_CLUSTERS]],
            lr=float(config[LR]),
            adapters=_adapters(content),
            train_local_adapter=bool(config.get(TRAIN_LOCAL_ADAPTER, False)),
        )


@dataclass(frozen=True)
class ClusterTrained:
    """What training one local cluster gave."""

    local_cluster: int
    global_cluster: int
    num_examples: int
    loss: float
    cluster_size: int  # samples of the local cluster (the trained subsample is smaller)
    seconds: float


@dataclass
class TrainReply:
    """One adapter per global cluster trained, and what each local cluster's training gave."""

    adapters: dict[int, ArrayRecord]
    clusters: list[ClusterTrained]
    process: dict = field(default_factory=dict)  # the process fields, see process_metrics

    def content(self) -> RecordDict:
        """Encode the reply: per-cluster lists, and the example-weighted loss over them."""
        content = RecordDict({adapter_key(g): r for g, r in self.adapters.items()})
        total = sum(c.num_examples for c in self.clusters)
        metrics = {
            NUM_EXAMPLES: float(total),
            TRAIN_LOSS: sum(c.loss * c.num_examples for c in self.clusters) / max(total, 1),
            LOCAL_CLUSTERS: [c.local_cluster for c in self.clusters],
            GLOBAL_CLUSTERS: [c.global_cluster for c in self.clusters],
            EXAMPLES_PER_CLUSTER: [float(c.num_examples) for c in self.clusters],
            LOSS_PER_CLUSTER: [c.loss for c in self.clusters],
            CLUSTER_SIZES: [float(c.cluster_size) for c in self.clusters],
            SECONDS_PER_CLUSTER: [c.seconds for c in self.clusters],
            **self.process,
        }
        content[METRICS] = MetricRecord(metrics)
        return content

    @classmethod
    def parse(cls, content: RecordDict) -> TrainReply:
        """Decode a reply."""
        metrics = dict(content[METRICS])
        lists = [metrics[key] for key in PER_CLUSTER]
        clusters = [
            ClusterTrained(int(local), int(g), n, loss, size, secs)
            for local, g, n, loss, size, secs in zip(*lists, strict=True)
        ]
        skip = {*PER_CLUSTER, NUM_EXAMPLES, TRAIN_LOSS}
        process = {k: v for k, v in metrics.items() if k not in skip}
        return cls(_adapters(content), clusters, process)

    def weights(self) -> dict[int, float]:
        """Return the examples trained per global cluster: its adapter's FedAvg weight."""
        out: dict[int, float] = {}
        for c in self.clusters:
            out[c.global_cluster] = out.get(c.global_cluster, 0.0) + float(c.num_examples)
        return out

    def records(self, node: int, partition_id: int) -> list[dict]:
        """Return one record per trained local cluster, named as in the reply's metrics.

        The process fields (pid, phase timers, memory) go with the first record only, so
        that sums over records count each reply once.
        """
        records = []
        for i, c in enumerate(self.clusters):
            own = {
                LOCAL_CLUSTER: float(c.local_cluster),
                GLOBAL_CLUSTER: float(c.global_cluster),
                NUM_EXAMPLES: float(c.num_examples),
                TRAIN_LOSS: float(c.loss),
                CLUSTER_SIZE: float(c.cluster_size),
                TRAIN_SECONDS: float(c.seconds),
            }
            extra = (
                self.process if i == 0 else {k: self.process[k] for k in _IDS if k in self.process}
            )
            records.append({"node": node, "partition_id": partition_id, **own, **extra})
        return records


# ----- evaluation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalInstruction:
    """Route each test sample among ``clusters`` by the global centroids; score the answers."""

    server_round: int
    clusters: np.ndarray  # the global clusters this client may route to
    centroids: np.ndarray  # every global centroid
    cluster_tasks: list[str]  # majority task of each global cluster (routing accuracy)
    adapters: Mapping[int, ArrayRecord]  # one per cluster in ``clusters``
    route_by_task: bool = False  # the oracle: route by the true task label
    local_adapter_weight: float | None = None  # FedDPA: weight of the node's own adapter

    def content(self) -> RecordDict:
        """Encode the instruction; an option travels only when set."""
        routing = {CLUSTERS: np.asarray(self.clusters, dtype=np.int64), CENTROIDS: self.centroids}
        fields = {SERVER_ROUND: self.server_round, CLUSTER_TASKS: list(self.cluster_tasks)}
        if self.route_by_task:
            fields[ROUTE_BY_TASK] = True
        if self.local_adapter_weight is not None:
            fields[LOCAL_ADAPTER_WEIGHT] = self.local_adapter_weight
        content = RecordDict({ROUTING: to_record(routing), CONFIG: ConfigRecord(fields)})
        for g, record in self.adapters.items():
            content[adapter_key(g)] = record
        return content

    @classmethod
    def parse(cls, content: RecordDict) -> EvalInstruction:
        """Decode an instruction."""
        routing, config = content[ROUTING], content[CONFIG]
        weight = config.get(LOCAL_ADAPTER_WEIGHT)
        return cls(
            server_round=int(config[SERVER_ROUND]),
            clusters=routing[CLUSTERS].numpy(),
            centroids=routing[CENTROIDS].numpy(),
            cluster_tasks=list(config[CLUSTER_TASKS]),
            adapters=_adapters(content),
            route_by_task=bool(config.get(ROUTE_BY_TASK, False)),
            local_adapter_weight=None if weight is None else float(weight),
        )


@dataclass
class EvalReply:
    """A client's evaluation metrics: ROUGE overall and per routed cluster, counts, timers."""

    metrics: dict

    def content(self) -> RecordDict:
        """Encode the reply."""
        return RecordDict({METRICS: MetricRecord(self.metrics)})

    @classmethod
    def parse(cls, content: RecordDict) -> EvalReply:
        """Decode a reply."""
        return cls(dict(content[METRICS]))
