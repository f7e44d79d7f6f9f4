"""Measure local k-means purity and routing accuracy of a base model's embeddings, untrained.

    python scripts/overlap_purity.py [--model tiny] [--overlaps 0,0.33,0.67,1] [--seed 111]
    python scripts/overlap_purity.py --model smollm2-135m --local_data_dir DIR

With the synthetic benchmark (the default), each client's training rows of the interference
split (configs/scenarios/interference.sh on 8 clients, 600 rows each) go through the client's
own local clustering (client_logic.cluster_node: the 4-bit model's embeddings at seq_length
256, 2-means with the run's k-means seed); the server's FedRouter strategy k-means the local
centroids into 4 global clusters and names each by its majority task; each client's test rows
are routed among the global clusters matched to its own (``local`` evaluation), as at
evaluation. One line per knob value: mean local purity, and routing accuracy (the share of
test rows that reach a cluster of their own task).

With ``--local_data_dir`` (the real tasks' files in the Hub's columns, as the tests write
them), every row of the pooled benchmark is embedded; the line gives the purity of a 4-means
of them, and the leave-one-out accuracy of routing each row to the nearest mean of the others'
tasks. Rows are few there: read it as a direction, not a figure to two decimals.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from fedrouter import protocol as p
from fedrouter.client_logic import cluster_node, embed_instructions
from fedrouter.clustering import cluster_purity, kmeans, route
from fedrouter.config import Config
from fedrouter.data import client_data_for, load_benchmark
from fedrouter.models import ModelSpec, load_model_and_tokenizer
from fedrouter.strategies.fedrouter import ClientInfo, ClusteredStrategy

logger = logging.getLogger("overlap_purity")

# configs/quickstart.sh with configs/scenarios/interference.sh: the fields the split and the
# clients' local clustering read; everything else is the Config default.
INTERFERENCE = dict(
    dataset_name="multitask_synthetic",
    dataset_sample=400_000,
    split_strategy="multitask_multi_domain",
    train_split=0.8,
    max_data_per_client=600,
    max_eval_size=64,
    evaluation_mode="local",
    seq_length=256,
    n_clusters=2,
    global_n_clusters=4,
)


def clustering_and_routing(model, tokenizer, cfg: Config) -> tuple[list[float], float]:
    """Return each client's local purity and the routing accuracy over every client's tests."""
    query = p.ClusterQuery(n_clusters=cfg.n_clusters)
    parts = client_data_for(cfg)
    purities, clients = [], []
    for pid, part in enumerate(parts):
        _, reply = cluster_node(cfg, model, tokenizer, pid, part.train, query, time.perf_counter())
        purities.append(reply.metrics[p.LOCAL_PURITY])
        sizes = tuple(int(s) for s in reply.sizes)
        clients.append(ClientInfo(pid, pid, reply.centroids, reply.local_tasks, sizes))
    strategy = ClusteredStrategy(cfg)
    strategy.setup(clients, init_adapter={})
    correct = []
    for pid, part in enumerate(parts):
        embedded = embed_instructions(
            model, tokenizer, part.test, batch_size=cfg.eval_batch_size, max_length=cfg.seq_length
        )
        routes = route(embedded, strategy.global_centroids, allowed=strategy.eval_clusters(pid))
        correct += [
            strategy.cluster_tasks[g] == r["task"] for g, r in zip(routes, part.test, strict=True)
        ]
    return purities, float(np.mean(correct))


def pooled_rows(model, tokenizer, local_data_dir: str) -> tuple[int, float, float]:
    """Return the rows, 4-means purity and leave-one-out task routing of the real tasks' rows."""
    pools = load_benchmark("multitask", local_data_dir=local_data_dir)
    rows = [*pools.train, *pools.test]
    embedded = embed_instructions(model, tokenizer, rows, batch_size=64, max_length=256)
    tasks = np.array([r["task"] for r in rows])
    names = sorted(set(tasks))
    labels = kmeans(embedded, len(names), seed=0).labels
    hits = []
    for i in range(len(rows)):
        others = np.arange(len(rows)) != i
        means = [embedded[others & (tasks == t)] for t in names]
        known = [j for j, m in enumerate(means) if len(m)]  # a task of one row has no mean left
        centroids = np.stack([means[j].mean(0) for j in known])
        hits.append(names[known[int(route(embedded[i : i + 1], centroids)[0])]] == tasks[i])
    return len(rows), float(cluster_purity(labels, tasks)), float(np.mean(hits))


def main(argv: list[str] | None = None) -> None:
    """Parse flags and log purity and routing per knob value (or for the real tasks' rows)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="model_name_or_path (tiny, a name, ...)")
    parser.add_argument("--overlaps", default="0,0.33,0.67,1")
    parser.add_argument("--seed", type=int, default=111, help="the run seed of the data split")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--local_data_dir", help="the real tasks in the Hub's columns instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # as the runs load it: 4-bit (the embeddings bypass LoRA, so its layout does not matter)
    model, tokenizer = load_model_and_tokenizer(ModelSpec(args.model))
    start = time.perf_counter()
    if args.local_data_dir:
        n, purity, routing = pooled_rows(model, tokenizer, args.local_data_dir)
        logger.info(
            "%s, %d rows of the real tasks: 4-means purity %.3f  leave-one-out routing %.3f",
            args.model,
            n,
            purity,
            routing,
        )
        return
    for overlap in (float(v) for v in args.overlaps.split(",")):
        cfg = Config(
            **INTERFERENCE,
            model_name_or_path=args.model,
            num_clients=args.clients,
            seed=args.seed,
            synthetic_overlap=overlap,
        )
        values, routing = clustering_and_routing(model, tokenizer, cfg)
        logger.info(
            "%s synthetic_overlap %-4g purity mean %.3f  routing %.3f  per client %s  (%.0fs)",
            args.model,
            overlap,
            float(np.mean(values)),
            routing,
            " ".join(f"{v:.3f}" for v in values),
            time.perf_counter() - start,
        )


if __name__ == "__main__":
    main()
