"""Baselines: each differs from FedRouter only in how clients' data map to server adapters.

Data, model, training and evaluation code are shared; every class overrides a hook or two of
``ClusteredStrategy``. FedDPA is FedAvg on the server; its client hooks (methods.py) do the
rest.
"""

from __future__ import annotations

import logging

import numpy as np

from fedrouter.strategies.fedrouter import ClusteredStrategy, Update

logger = logging.getLogger(__name__)


class FedAvgStrategy(ClusteredStrategy):
    """One global adapter, weighted FedAvg over every client's whole data."""

    @property
    def num_global_clusters(self) -> int:
        """Keep a single adapter."""
        return 1

    @property
    def n_local_clusters(self) -> int:
        """Clients keep their data as one cluster."""
        return 1

    def match_clusters(self) -> None:
        """Send every client to the one global adapter."""
        nodes = self.ordered_nodes()
        stacked = np.concatenate([self.clients[n].centroids for n in nodes])
        self.global_centroids = stacked.mean(0, keepdims=True).astype(np.float32)
        self.assignment = {n: np.zeros(1, dtype=np.int64) for n in nodes}


class LocalStrategy(ClusteredStrategy):
    """Each client trains its own adapter on its own data and never aggregates."""

    @property
    def num_global_clusters(self) -> int:
        """Keep one adapter per client."""
        return self.cfg.num_clients

    @property
    def n_local_clusters(self) -> int:
        """Clients keep their data as one cluster."""
        return 1

    def match_clusters(self) -> None:
        """Give client i the adapter slot i; nobody else ever touches it."""
        nodes = self.ordered_nodes()
        self.global_centroids = np.concatenate([self.clients[n].centroids for n in nodes])
        self.assignment = {
            n: np.array([self.clients[n].partition_id], dtype=np.int64) for n in nodes
        }

    def eval_clusters(self, node: int) -> list[int]:
        """Evaluate with the client's own adapter only, in either evaluation mode."""
        return [int(self.assignment[node][0])]


class OracleRouterStrategy(ClusteredStrategy):
    """FedRouter with clusters and routing from the true task label: an upper bound.

    Its client hooks (methods.py) have clients group their data, and route their test
    samples, by task label.
    """

    def match_clusters(self) -> None:
        """Map each task to its own global cluster (task i -> cluster i mod G)."""
        nodes = self.ordered_nodes()
        tasks = sorted({t for n in nodes for t in self.clients[n].tasks})
        slot = {task: i % self.num_global_clusters for i, task in enumerate(tasks)}
        self.assignment = {
            n: np.array([slot[t] for t in self.clients[n].tasks], dtype=np.int64) for n in nodes
        }
        stacked = np.concatenate([self.clients[n].centroids for n in nodes])
        labels = np.concatenate([self.assignment[n] for n in nodes])
        dim = stacked.shape[1]
        self.global_centroids = np.stack(
            [
                stacked[labels == g].mean(0) if (labels == g).any() else np.zeros(dim)
                for g in range(self.num_global_clusters)
            ]
        ).astype(np.float32)


class CFLStrategy(FedAvgStrategy):
    """Clustered FL: FedAvg until ``sim_round``, then Ward clustering of clients' updates.

    At ``sim_round`` the clients' LoRA updates (the deltas of their B matrices from the
    global adapter they received) are compared by cosine similarity and grouped with Ward
    hierarchical clustering into ``global_n_clusters`` groups; from then on each group
    averages on its own, and a client evaluates with its group's adapter.
    """

    @property
    def num_global_clusters(self) -> int:
        """Keep one slot per client group; slot 0 is the global adapter before clustering."""
        return self.cfg.global_n_clusters

    def match_clusters(self) -> None:
        """Start with every client on the global adapter (slot 0)."""
        super().match_clusters()
        self.groups_formed = False

    def aggregate_updates(self, server_round: int, updates: list[Update]) -> None:
        """FedAvg as usual; at ``sim_round``, split the clients into groups first.

        The updates of that round then go to their client's new group.
        """
        if server_round == self.cfg.sim_round and not self.groups_formed:
            global_adapter = self.adapters[0]
            self.assignment = self.form_groups(updates, global_adapter)
            self.adapters = {g: global_adapter for g in range(self.num_global_clusters)}
            self.groups_formed = True
            self.global_centroids = self.group_centroids()
            self.cluster_tasks = self.label_clusters()
            groups = [int(self.assignment[u.node][0]) for u in updates]
            logger.info("cfl: client groups at round %d: %s", self.cfg.sim_round, groups)
            updates = [u._replace(cluster=int(self.assignment[u.node][0])) for u in updates]
        super().aggregate_updates(server_round, updates)

    def form_groups(self, updates: list[Update], global_adapter) -> dict[int, np.ndarray]:
        """Ward-cluster the updating clients by their B-matrix deltas; return the new assignment.

        A client that sent no update joins the largest group.
        """
        deltas = np.stack([lora_b_delta(u.arrays, global_adapter) for u in updates])
        groups = ward_groups(deltas, self.num_global_clusters)
        largest = int(np.bincount(groups).argmax())
        assignment = {node: np.array([largest], dtype=np.int64) for node in self.assignment}
        for update, group in zip(updates, groups, strict=True):
            assignment[update.node] = np.array([group], dtype=np.int64)
        return assignment

    def state_meta(self) -> dict:
        """Remember whether the client groups were formed."""
        return {**super().state_meta(), "groups_formed": self.groups_formed}

    def restore(self, arrays, meta: dict) -> None:
        """Restore the groups with the rest of the state."""
        super().restore(arrays, meta)
        self.groups_formed = bool(meta.get("groups_formed", False))

    def group_centroids(self) -> np.ndarray:
        """Return each group's mean data centroid (the overall mean for an empty group)."""
        nodes = self.ordered_nodes()
        stacked = np.concatenate([self.clients[n].centroids.mean(0, keepdims=True) for n in nodes])
        groups = np.array([int(self.assignment[n][0]) for n in nodes])
        return np.stack(
            [
                stacked[groups == g].mean(0) if (groups == g).any() else stacked.mean(0)
                for g in range(self.num_global_clusters)
            ]
        ).astype(np.float32)

    def eval_clusters(self, node: int) -> list[int]:
        """Evaluate with the client's group adapter (the global one before grouping)."""
        return [int(self.assignment[node][0])]


def lora_b_delta(arrays, reference) -> np.ndarray:
    """Flatten the change of every LoRA B matrix from ``reference`` into one vector."""
    keys = [k for k in arrays if "lora_B" in k]
    return np.concatenate([(arrays[k] - reference[k]).ravel() for k in keys])


def ward_groups(vectors: np.ndarray, n_groups: int) -> np.ndarray:
    """Group vectors by cosine similarity with Ward linkage; return 0-based group ids.

    Ward needs Euclidean distances; on unit vectors, the squared Euclidean distance is
    2 - 2 cos, so normalising first clusters by cosine similarity.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    n_groups = min(n_groups, len(vectors))
    if n_groups <= 1:
        return np.zeros(len(vectors), dtype=np.int64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    labels = fcluster(linkage(unit, method="ward"), t=n_groups, criterion="maxclust")
    return labels.astype(np.int64) - 1
