"""FedRouter: the server's strategy on Flower's Message-API ``Strategy``.

The server holds one adapter per global cluster. Each round it sends every sampled client the
adapter of the global cluster matched to the local cluster that client trains this round, and
it averages the returned adapters within each global cluster. Baselines override one hook:
how local clusters are matched to global clusters (``match_clusters``).

The project drives the rounds itself (``fedrouter.federation``) instead of Flower's
``Strategy.start``, whose loop knows one global ``ArrayRecord`` and train/evaluate messages:

- FedRouter needs a clustering phase before the first round (a query whose replies are
  centroids, not weights), and the global k-means over them;
- the server keeps one adapter per global cluster, and each client gets its own mix of them;
- a resumed run re-runs the clustering phase and then restores adapters, assignment and
  history from a checkpoint, which ``start`` has no place for.

So ``configure_*`` build the messages as Flower's do, and ``aggregate_*`` return what they
decided (``TrainOutcome``, ``EvalOutcome``) for the round loop to record.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedrouter import protocol as p
from fedrouter.clustering import allowed_clusters, global_assignment, kmeans
from fedrouter.data.partition import routes_globally
from fedrouter.methods import ClientHooks
from fedrouter.profiling import phase
from fedrouter.seeding import kmeans_seed
from fedrouter.strategies.aggregation import aggregate_by_cluster, sample_nodes
from fedrouter.training import cosine_lr

logger = logging.getLogger(__name__)


@dataclass
class ClientInfo:
    """What the server knows of a client after the clustering phase."""

    node_id: int
    partition_id: int
    centroids: np.ndarray  # (n_local, hidden)
    tasks: tuple[str, ...]  # majority true task per local cluster (diagnostics only)
    sizes: tuple[int, ...]  # training samples per local cluster


class Update(NamedTuple):
    """One client's adapter for one global cluster, and its FedAvg weight."""

    node: int
    cluster: int
    arrays: OrderedDict
    weight: float


@dataclass
class TrainOutcome:
    """What a training round gave: one record per trained local cluster, and the failures."""

    trained: list[dict] = field(default_factory=list)  # see protocol.TrainReply.records
    failures: list[dict] = field(default_factory=list)  # see protocol.failure

    @property
    def num_examples(self) -> float:
        """Return the examples trained on this round."""
        return sum(t[p.NUM_EXAMPLES] for t in self.trained)

    @property
    def train_loss(self) -> float | None:
        """Return the example-weighted mean loss (None if nobody trained)."""
        if not self.trained:
            return None
        return sum(t[p.TRAIN_LOSS] * t[p.NUM_EXAMPLES] for t in self.trained) / self.num_examples

    def nodes(self) -> set[int]:
        """Return the nodes that trained."""
        return {t["node"] for t in self.trained}


@dataclass
class EvalOutcome:
    """What an evaluation round gave: per-client metrics, failures, and their weighted mean."""

    clients: list[dict] = field(default_factory=list)  # partition_id + the reply's metrics
    failures: list[dict] = field(default_factory=list)
    mean: dict | None = None  # protocol.EVAL_MEANS, weighted by examples; None if none replied


class ClusteredStrategy(Strategy):
    """FedRouter: k-means of local centroids into global task clusters, one adapter each."""

    def __init__(self, cfg, hooks: ClientHooks | None = None):
        self.cfg = cfg
        self.hooks = hooks or ClientHooks()  # what the method asks of clients (methods.py)
        self.clients: dict[int, ClientInfo] = {}
        self.assignment: dict[int, np.ndarray] = {}  # node -> global cluster of each local one
        self.global_centroids = np.zeros((0, 0), dtype=np.float32)
        self.adapters: dict[int, OrderedDict] = {}
        self.cluster_tasks: list[str] = []

    # ----- setup -------------------------------------------------------------------------
    @property
    def num_global_clusters(self) -> int:
        """Return how many adapters the server keeps."""
        return self.cfg.global_n_clusters

    def ordered_nodes(self) -> list[int]:
        """Return node ids ordered by partition id, so sampling does not depend on ids."""
        return sorted(self.clients, key=lambda n: self.clients[n].partition_id)

    @property
    def n_local_clusters(self) -> int:
        """Return how many local clusters each client makes (a baseline hook)."""
        return self.cfg.n_clusters

    def cluster_query(self) -> p.ClusterQuery:
        """Say how clients cluster their data: how many local clusters, and by task label or not."""
        return p.ClusterQuery(self.n_local_clusters, oracle=self.hooks.cluster_by_task)

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
            instruction = p.TrainInstruction(
                server_round,
                locals_,
                globals_,
                lr,
                adapters={g: self.adapter_record(g, records) for g in dict.fromkeys(globals_)},
                train_local_adapter=self.hooks.local_adapter,
            )
            messages.append(
                Message(instruction.content(), dst_node_id=node, message_type=MessageType.TRAIN)
            )
        return messages

    def adapter_record(self, g: int, records: dict[int, ArrayRecord]) -> ArrayRecord:
        """Return cluster g's adapter as a record, serialised once per round, not per client."""
        if g not in records:
            with phase("serialization"):
                records[g] = p.to_record(self.adapters[g])
        return records[g]

    def in_partition_order(self, replies: Iterable[Message]) -> list[Message]:
        """Order replies by partition id: float sums, and so runs, then repeat exactly."""
        order = {n: self.clients[n].partition_id for n in self.clients}
        return sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, -1))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> TrainOutcome:
        """FedAvg within each global cluster, weighted by the examples each client trained on.

        Unlike Flower's, it returns the round's outcome; the adapters stay in ``adapters``.
        """
        updates, outcome = [], TrainOutcome()
        for reply in self.in_partition_order(replies):
            node = reply.metadata.src_node_id
            if reply.has_error():
                outcome.failures.append(p.failure(node, reply.error.reason))
                continue
            parsed = p.TrainReply.parse(reply.content)
            outcome.trained.extend(parsed.records(node, self.clients[node].partition_id))
            with phase("serialization"):
                for g, weight in parsed.weights().items():
                    updates.append(Update(node, g, p.from_record(parsed.adapters[g]), weight))
        with phase("aggregation"):
            self.aggregate_updates(server_round, updates)
        return outcome

    def aggregate_updates(self, server_round: int, updates: list[Update]) -> None:
        """Average the updates within each cluster (a hook)."""
        triples = [(u.cluster, u.arrays, u.weight) for u in updates]
        self.adapters = aggregate_by_cluster(self.adapters, triples)

    # ----- evaluation --------------------------------------------------------------------
    def eval_clusters(self, node: int) -> list[int]:
        """Return the global clusters a client may route to (local or global mode)."""
        everywhere = routes_globally(self.cfg.evaluation_mode)
        allowed = allowed_clusters(
            self.assignment[node], self.num_global_clusters, everywhere=everywhere
        )
        return [int(g) for g in allowed]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every client the global centroids and the adapters of the clusters it may use."""
        weight = 1.0 - self.cfg.feddpa_alpha if self.hooks.local_adapter else None
        messages, records = [], {}
        for node in self.ordered_nodes():
            clusters = self.eval_clusters(node)
            instruction = p.EvalInstruction(
                server_round,
                np.asarray(clusters, dtype=np.int64),
                self.global_centroids,
                list(self.cluster_tasks),
                adapters={g: self.adapter_record(g, records) for g in clusters},
                route_by_task=self.hooks.route_by_task,
                local_adapter_weight=weight,
            )
            messages.append(
                Message(instruction.content(), dst_node_id=node, message_type=MessageType.EVALUATE)
            )
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> EvalOutcome:
        """Collect each client's metrics and their example-weighted mean (``EVAL_MEANS``)."""
        outcome = EvalOutcome()
        for reply in self.in_partition_order(replies):
            node = reply.metadata.src_node_id
            if reply.has_error():
                outcome.failures.append(p.failure(node, reply.error.reason))
                continue
            metrics = p.EvalReply.parse(reply.content).metrics
            outcome.clients.append({"partition_id": self.clients[node].partition_id, **metrics})
        if outcome.clients:
            total = sum(e[p.NUM_EXAMPLES] for e in outcome.clients)
            outcome.mean = {
                k: sum(e[k] * e[p.NUM_EXAMPLES] for e in outcome.clients) / total
                for k in p.EVAL_MEANS
            }
        return outcome

    def summary(self) -> None:
        """Log the strategy's settings."""
        logger.info(
            "method %s, strategy %s: %d global clusters, %d of %d clients per round",
            self.cfg.fed_alg,
            type(self).__name__,
            self.num_global_clusters,
            self.cfg.sample_clients,
            self.cfg.num_clients,
        )
