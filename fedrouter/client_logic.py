"""What one client does, free of Flower: cluster its data, train a cluster, evaluate routed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedrouter.clustering import kmeans
from fedrouter.data.templates import extract_response, generation_prompt
from fedrouter.embeddings import embed_texts
from fedrouter.evaluation import ROUGE_KEYS, generate, rouge_per_sample


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
        out: dict[str, float] = {"num-examples": float(len(self.routes))}
        for j, key in enumerate(ROUGE_KEYS):
            out[key] = float(self.scores[:, j].mean()) if len(self.scores) else 0.0
        out["routing-accuracy"] = float(self.correct.mean()) if len(self.correct) else 0.0
        for cluster in np.unique(self.routes):
            mask = self.routes == cluster
            out[f"count/c{cluster}"] = float(mask.sum())
            for j, key in enumerate(ROUGE_KEYS):
                out[f"{key}/c{cluster}"] = float(self.scores[mask, j].mean())
        for phase, secs in self.seconds.items():
            out[f"seconds/{phase}"] = secs
        out["generated-tokens"] = float(self.new_tokens)
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
) -> RoutedEval:
    """Generate each row's answer with its routed cluster's adapter and score it with ROUGE.

    ``activate(g)`` swaps cluster g's adapter into the model in place; it is called once per
    routed cluster, never per sample.
    """
    predictions = [""] * len(rows)
    seconds = {"adapter-swap": 0.0, "generation": 0.0, "rouge": 0.0}
    stats = {"new_tokens": 0}
    for cluster in np.unique(routes):
        idx = np.flatnonzero(routes == cluster)
        start = time.perf_counter()
        activate(int(cluster))
        seconds["adapter-swap"] += time.perf_counter() - start
        start = time.perf_counter()
        prompts = [generation_prompt(rows[i]["instruction"], template, prompt_end) for i in idx]
        outputs = generate(
            model,
            tokenizer,
            prompts,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            max_length=max_length,
            stats=stats,
        )
        seconds["generation"] += time.perf_counter() - start
        for i, prompt, text in zip(idx, prompts, outputs, strict=True):
            predictions[i] = extract_response(prompt, text, template)
    start = time.perf_counter()
    scores = rouge_per_sample(predictions, [row["response"] for row in rows])
    seconds["rouge"] = time.perf_counter() - start
    correct = np.array(
        [cluster_tasks[g] == row["task"] for g, row in zip(routes, rows, strict=True)], dtype=bool
    )
    return RoutedEval(scores, np.asarray(routes), correct, seconds, stats["new_tokens"])
