"""Measure local k-means purity on the tiny model's embeddings at several synthetic_overlap values.

    python scripts/overlap_purity.py [--overlaps 0,0.25,0.5,0.75,1] [--seed 111] [--clients 8]

Each client's training rows of the interference split (configs/scenarios/interference.sh on the
quickstart's 8 clients, 600 rows each) go through the client's own local clustering
(client_logic.cluster_node: the 4-bit tiny model's embeddings at seq_length 256, 2-means with
the run's k-means seed), and its purity against the true task is logged, one line per knob
value.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from fedrouter import protocol as p
from fedrouter.client_logic import cluster_node
from fedrouter.config import Config
from fedrouter.data import client_data_for
from fedrouter.models import ModelSpec, load_model_and_tokenizer
from fedrouter.tiny_model import resolve_tiny_model

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
)


def purities(model, tokenizer, overlap: float, seed: int, clients: int) -> list[float]:
    """Return each client's local purity at one knob value, from the client's own clustering."""
    cfg = Config(**INTERFERENCE, num_clients=clients, seed=seed, synthetic_overlap=overlap)
    query = p.ClusterQuery(n_clusters=cfg.n_clusters)
    values = []
    for pid, part in enumerate(client_data_for(cfg)):
        _, reply = cluster_node(cfg, model, tokenizer, pid, part.train, query, time.perf_counter())
        values.append(reply.metrics[p.LOCAL_PURITY])
    return values


def main(argv: list[str] | None = None) -> None:
    """Parse flags and log the purity per knob value."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlaps", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--seed", type=int, default=111, help="the run seed of the data split")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # the quickstart's model: 4-bit, LoRA on every linear layer (bypassed for embeddings)
    spec = ModelSpec(str(resolve_tiny_model()), lora_target_modules=("all-linear",))
    model, tokenizer = load_model_and_tokenizer(spec)
    for overlap in (float(v) for v in args.overlaps.split(",")):
        values = purities(model, tokenizer, overlap, args.seed, args.clients)
        logger.info(
            "synthetic_overlap %-4g purity mean %.3f  per client %s",
            overlap,
            float(np.mean(values)),
            " ".join(f"{v:.3f}" for v in values),
        )


if __name__ == "__main__":
    main()
