"""FedRouter's clustered strategy on Flower's Message-API ``Strategy``.

The server holds one adapter per global cluster. Each round it sends every sampled client the
adapter of the global cluster matched to the local cluster that client trains this round, and
it averages the returned adapters within each global cluster. Baselines override one hook:
how local clusters are matched to global clusters (``match_clusters``).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedrouter.clustering import global_assignment, kmeans
from fedrouter.data.partition import routes_globally
from fedrouter.profiling import phase
from fedrouter.seeding import kmeans_seed
from fedrouter.strategies.aggregation import aggregate_by_cluster, sample_nodes
from fedrouter.training import cosine_lr

logger = logging.getLogger(__name__)

# Message keys shared with the ClientApp; each is defined once, here.
ADAPTER_KEY = "adapter"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
ROUTING_KEY = "routing"
CLUSTER_QUERY = "query.cluster"


def adapter_key(cluster: int) -> str:
    """Name the ArrayRecord that carries one cluster's adapter in an evaluate message."""
    return f"{ADAPTER_KEY}.{cluster}"


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


_PER_CLUSTER = {  # reply list -> the name of its entry in a train record
    "local-clusters": "local-cluster",
    "global-clusters": "global-cluster",
    "examples-per-cluster": "num-examples",
    "loss-per-cluster": "train-loss",
    "cluster-sizes": "cluster-size",
    "seconds-per-cluster": "seconds/train",
}


def trained_clusters(node: int, partition_id: int, metrics: dict) -> list[dict]:
    """Split a train reply's metrics into one record per trained local cluster.

    The process fields (pid, phase timers, memory) go with the first record only, so that
    sums over records count each reply once.
    """
    shared = {k: v for k, v in metrics.items() if k not in _PER_CLUSTER}
    shared.pop("num-examples", None)
    shared.pop("train-loss", None)
    records = []
    for i in range(len(metrics["local-clusters"])):
        own = {name: float(metrics[key][i]) for key, name in _PER_CLUSTER.items()}
        extra = shared if i == 0 else {k: shared[k] for k in ("pid", "model-loads") if k in shared}
        records.append({"node": node, "partition_id": partition_id, **own, **extra})
    return records


@dataclass
class ClientInfo:
    """What the server knows of a client after the clustering phase."""

    node_id: int
    partition_id: int
    centroids: np.ndarray  # (n_local, hidden)
    tasks: tuple[str, ...]  # majority true task per local cluster (diagnostics only)
    sizes: tuple[int, ...]  # training samples per local cluster


@dataclass
class RoundOutcome:
    """What aggregate_train learned about one round, for the recorder."""

    trained: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


class ClusteredStrategy(Strategy):
    """FedRouter: k-means of local centroids into global task clusters, one adapter each."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.clients: dict[int, ClientInfo] = {}
        self.assignment: dict[int, np.ndarray] = {}  # node -> global cluster of each local one
        self.global_centroids = np.zeros((0, 0), dtype=np.float32)
        self.adapters: dict[int, OrderedDict] = {}
        self.cluster_tasks: list[str] = []
        self.last_outcome = RoundOutcome()

    # ----- setup -------------------------------------------------------------------------
    @property
    def num_global_clusters(self) -> int:
        """Return how many adapters the server keeps."""
        return self.cfg.global_n_clusters

    def ordered_nodes(self) -> list[int]:
        """Return node ids ordered by partition id, so sampling does not depend on ids."""
        return sorted(self.clients, key=lambda n: self.clients[n].partition_id)

    def local_clustering_request(self) -> dict:
        """Say how clients cluster their data: how many local clusters, and by task label or not."""
        return {"n-clusters": self.cfg.n_clusters, "oracle": False}

    def train_extras(self, node: int) -> dict:
        """Return extra train-config entries for one client (a baseline hook)."""
        return {}

    def evaluate_extras(self, node: int) -> dict:
        """Return extra evaluate-config entries for one client (a baseline hook)."""
        return {}

    def setup(self, clients: Iterable[ClientInfo], init_adapter: Mapping[str, np.ndarray]):
        """Match local clusters to global ones and give every global cluster the init adapter."""
        self.clients = {c.node_id: c for c in clients}
        self.match_clusters()
        init = OrderedDict((k, np.asarray(v, dtype=np.float32)) for k, v in init_adapter.items())
        self.adapters = {g: init for g in range(self.num_global_clusters)}
        self.cluster_tasks = self.label_clusters()

    def match_clusters(self) -> None:
        """k-means all local centroids into global clusters (the FedRouter hook)."""
        nodes = self.ordered_nodes()
        stacked = np.concatenate([self.clients[n].centroids for n in nodes])
        seed, n_init = kmeans_seed(self.cfg)
        result = kmeans(stacked, self.num_global_clusters, seed=seed, n_init=n_init)
        self.global_centroids = result.centroids
        for n in nodes:
            self.assignment[n] = global_assignment(self.clients[n].centroids, result.centroids)

    def label_clusters(self) -> list[str]:
        """Name each global cluster by the majority task of the local clusters it holds."""
        votes: dict[int, dict[str, int]] = {g: {} for g in range(self.num_global_clusters)}
        for node, clusters in self.assignment.items():
            info = self.clients[node]
            for local, g in enumerate(clusters):
                task = info.tasks[local]
                votes[int(g)][task] = votes[int(g)].get(task, 0) + info.sizes[local]
        return [max(v, key=v.get) if v else "" for _, v in sorted(votes.items())]

    def clustering_report(self) -> dict:
        """Describe the matching for clustering.json."""
        nodes = self.ordered_nodes()
        return {
            "global_centroids": self.global_centroids,
            "cluster_tasks": self.cluster_tasks,
            "clients": [
                {
                    "partition_id": self.clients[n].partition_id,
                    "local_centroids": self.clients[n].centroids,
                    "local_tasks": list(self.clients[n].tasks),
                    "local_sizes": list(self.clients[n].sizes),
                    "global_cluster": self.assignment[n],
                }
                for n in nodes
            ],
        }

    # ----- checkpoints -------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Return the server state as named arrays, keyed by partition id, not node id."""
        out = {"global_centroids": self.global_centroids}
        for g, adapter in self.adapters.items():
            out.update({f"adapter/{g}/{key}": value for key, value in adapter.items()})
        for node in self.ordered_nodes():
            pid = self.clients[node].partition_id
            out[f"assignment/{pid}"] = self.assignment[node]
            out[f"local_centroids/{pid}"] = self.clients[node].centroids
        return out

    def state_meta(self) -> dict:
        """Return the JSON part of the server state."""
        keys = list(next(iter(self.adapters.values())).keys())
        return {"cluster_tasks": list(self.cluster_tasks), "adapter_keys": keys}

    def restore(self, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
        """Continue from a checkpoint after ``setup`` re-ran the clustering phase."""
        from fedrouter.checkpoint import CheckpointError

        for node in self.ordered_nodes():
            pid = self.clients[node].partition_id
            saved = arrays.get(f"local_centroids/{pid}")
            now = self.clients[node].centroids
            if saved is None or saved.shape != now.shape or not np.allclose(saved, now, atol=1e-4):
                raise CheckpointError(
                    f"client {pid}'s local clusters differ from the checkpoint's: "
                    "the data, model or seed changed since the run started"
                )
            self.assignment[node] = arrays[f"assignment/{pid}"].astype(np.int64)
        self.global_centroids = arrays["global_centroids"]
        self.adapters = {
            g: OrderedDict((k, arrays[f"adapter/{g}/{k}"]) for k in meta["adapter_keys"])
            for g in range(self.num_global_clusters)
        }
        self.cluster_tasks = list(meta["cluster_tasks"])

    # ----- training ----------------------------------------------------------------------
    def local_clusters(self, node: int, server_round: int) -> list[int]:
        """Return the local clusters a client trains this round (``local_schedule``)."""
        n_local = len(self.assignment[node])
        if self.cfg.local_schedule == "all":
            return list(range(n_local))
        return [server_round % n_local]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients and send each the adapters of the global clusters it trains."""
        nodes = sample_nodes(
            self.ordered_nodes(), self.cfg.sample_clients, self.cfg.seed, server_round
        )
        lr = cosine_lr(
            server_round, self.cfg.num_rounds, self.cfg.learning_rate, self.cfg.min_learning_rate
        )
        messages, records = [], {}
        for node in nodes:
            locals_ = self.local_clusters(node, server_round)
            globals_ = [int(self.assignment[node][c]) for c in locals_]
            content = RecordDict()
            for g in dict.fromkeys(globals_):
                if g not in records:  # serialise each cluster's adapter once, not per client
                    with phase("serialization"):
                        records[g] = to_record(self.adapters[g])
                content[adapter_key(g)] = records[g]
            content[CONFIG_KEY] = ConfigRecord(
                {
                    "server-round": server_round,
                    "local-clusters": locals_,
                    "global-clusters": globals_,
                    "lr": lr,
                    **self.train_extras(node),
                }
            )
            messages.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
        return messages

    def in_partition_order(self, replies: Iterable[Message]) -> list[Message]:
        """Order replies by partition id: float sums, and so runs, then repeat exactly."""
        order = {n: self.clients[n].partition_id for n in self.clients}
        return sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, -1))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg within each global cluster, weighted by the examples each client trained on."""
        updates, outcome = [], RoundOutcome()
        for reply in self.in_partition_order(replies):
            node = reply.metadata.src_node_id
            if reply.has_error():
                outcome.failures.append(failure(node, reply.error.reason))
                continue
            metrics = dict(reply.content[METRICS_KEY])
            outcome.trained.extend(trained_clusters(node, self.clients[node].partition_id, metrics))
            weights: dict[int, float] = {}
            for g, n in zip(
                metrics["global-clusters"], metrics["examples-per-cluster"], strict=True
            ):
                weights[int(g)] = weights.get(int(g), 0.0) + float(n)
            with phase("serialization"):
                for g, weight in weights.items():
                    updates.append((g, from_record(reply.content[adapter_key(g)]), weight))
        self.last_outcome = outcome
        with phase("aggregation"):
            self.aggregate_updates(server_round, updates)
        if not outcome.trained:
            return None, None
        total = sum(t["num-examples"] for t in outcome.trained)
        loss = sum(t["train-loss"] * t["num-examples"] for t in outcome.trained) / total
        return None, MetricRecord({"train-loss": loss, "num-examples": total})

    def aggregate_updates(self, server_round: int, updates: list[tuple[int, dict, float]]) -> None:
        """Average the (cluster, adapter, weight) updates within each cluster (a hook)."""
        self.adapters = aggregate_by_cluster(self.adapters, updates)

    # ----- evaluation --------------------------------------------------------------------
    def eval_clusters(self, node: int) -> list[int]:
        """Return the global clusters a client may route to (local or global mode)."""
        if routes_globally(self.cfg.evaluation_mode):
            return list(range(self.num_global_clusters))
        return sorted({int(g) for g in self.assignment[node]})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every client the global centroids and the adapters of the clusters it may use."""
        messages, adapter_records = [], {}
        for node in self.ordered_nodes():
            clusters = self.eval_clusters(node)
            records = {
                ROUTING_KEY: to_record(
                    {
                        "clusters": np.asarray(clusters, dtype=np.int64),
                        "centroids": self.global_centroids,
                    }
                ),
                CONFIG_KEY: ConfigRecord(
                    {
                        "server-round": server_round,
                        "cluster-tasks": list(self.cluster_tasks),
                        **self.evaluate_extras(node),
                    }
                ),
            }
            for g in clusters:
                if g not in adapter_records:
                    with phase("serialization"):
                        adapter_records[g] = to_record(self.adapters[g])
                records[adapter_key(g)] = adapter_records[g]
            messages.append(
                Message(RecordDict(records), dst_node_id=node, message_type=MessageType.EVALUATE)
            )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Return the client-weighted mean of each reported metric."""
        self.last_eval: list[dict] = []
        self.last_eval_failures: list[dict] = []
        for reply in self.in_partition_order(replies):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.last_eval_failures.append(failure(node, reply.error.reason))
                continue
            metrics = dict(reply.content[METRICS_KEY])
            self.last_eval.append({"partition_id": self.clients[node].partition_id, **metrics})
        if not self.last_eval:
            return None
        total = sum(e["num-examples"] for e in self.last_eval)
        keys = ("rouge1", "rouge2", "rougeL", "routing-accuracy")
        return MetricRecord(
            {k: sum(e[k] * e["num-examples"] for e in self.last_eval) / total for k in keys}
        )

    def summary(self) -> None:
        """Log the strategy's settings."""
        logger.info(
            "strategy %s: %d global clusters, %d of %d clients per round",
            type(self).__name__,
            self.num_global_clusters,
            self.cfg.sample_clients,
            self.cfg.num_clients,
        )
