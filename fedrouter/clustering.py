"""k-means (local, global) and nearest-centroid routing: pure numpy / scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    """Labels of the points and the centroids they were assigned to."""

    labels: np.ndarray  # (n,) int
    centroids: np.ndarray  # (k, d) float32


def kmeans(points: np.ndarray, n_clusters: int, seed: int, n_init: int | str = 10) -> KMeansResult:
    """Cluster ``points`` into ``n_clusters`` with seeded k-means++ (``n_init`` runs, or auto)."""
    points = np.asarray(points, dtype=np.float64)
    if n_clusters < 1 or n_clusters > len(points):
        raise ValueError(f"cannot make {n_clusters} clusters from {len(points)} points")
    if n_clusters == 1:
        # One cluster needs no search, and k-means would only repeat the mean.
        return KMeansResult(
            np.zeros(len(points), dtype=np.int64), points.mean(0, keepdims=True).astype(np.float32)
        )
    from sklearn.cluster import KMeans  # imported here: a second of start-up, rarely needed

    model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit(points)
    return KMeansResult(model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32))


def nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Return, for each point, the index of the nearest centroid (Euclidean), vectorised."""
    points = np.asarray(points, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every c, so it is dropped.
    scores = -2.0 * points @ centroids.T + (centroids**2).sum(1)[None, :]
    return scores.argmin(1)


def global_assignment(local_centroids: np.ndarray, global_centroids: np.ndarray) -> np.ndarray:
    """Map each local centroid to its nearest global cluster."""
    return nearest(local_centroids, global_centroids)


def route(
    points: np.ndarray,
    global_centroids: np.ndarray,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Route each point to the nearest global cluster, among ``allowed`` ones if given.

    ``local`` evaluation passes the global clusters matched to the client's own local
    clusters; ``global`` evaluation passes None (every cluster).
    """
    if allowed is None:
        return nearest(points, global_centroids)
    allowed = np.unique(np.asarray(allowed, dtype=np.int64))
    return allowed[nearest(points, global_centroids[allowed])]


def allowed_clusters(matched: np.ndarray, n_global: int, *, everywhere: bool) -> np.ndarray:
    """Return the global clusters a client routes among: every one, or those its local
    clusters were matched to (sorted, once each)."""
    if everywhere:
        return np.arange(n_global, dtype=np.int64)
    return np.unique(np.asarray(matched, dtype=np.int64))


def nearest_two(
    points: np.ndarray, centroids: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each point's Euclidean distance to its nearest and second nearest allowed centroid.

    The second is NaN where only one centroid is allowed.
    """
    points = np.asarray(points, dtype=np.float64)
    chosen = np.asarray(centroids, dtype=np.float64)[np.unique(allowed)]
    dist = np.sqrt(((points[:, None, :] - chosen[None, :, :]) ** 2).sum(-1))
    dist.sort(axis=1)
    second = dist[:, 1] if dist.shape[1] > 1 else np.full(len(points), np.nan)
    return dist[:, 0], second


def cluster_purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Return the share of points whose cluster's majority true label is their own."""
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    hits = 0
    for cluster in np.unique(labels):
        _, counts = np.unique(truth[labels == cluster], return_counts=True)
        hits += counts.max()
    return hits / len(labels)
