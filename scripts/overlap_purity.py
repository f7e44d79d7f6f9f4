"""Measure local k-means purity on the tiny model's embeddings at several synthetic_overlap values.

    python scripts/overlap_purity.py [--overlaps 0,0.25,0.5,0.75,1] [--seed 111] [--clients 8]

Each client's training rows of the interference split (configs/scenarios/interference.sh on the
quickstart's 8 clients, 600 rows each) are embedded with the 4-bit tiny model as a client does
(masked mean of the base model's last hidden state, seq_length 256), split by 2-means with the
reference's k-means seed, and scored against the true task. Logs one line per knob value.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from fedrouter.clustering import cluster_purity, kmeans
from fedrouter.data import load_client_data
from fedrouter.embeddings import embed_texts
from fedrouter.models import ModelSpec, load_model_and_tokenizer
from fedrouter.seeding import REFERENCE_KMEANS_N_INIT, REFERENCE_KMEANS_SEED
from fedrouter.tiny_model import resolve_tiny_model

logger = logging.getLogger("overlap_purity")


def purities(model, tokenizer, overlap: float, seed: int, clients: int) -> list[float]:
    """Return each client's local purity at one knob value."""
    parts = load_client_data(
        dataset_name="multitask_synthetic",
        local_data_dir=None,
        dataset_sample=400_000,
        split_strategy="multitask_multi_domain",
        num_clients=clients,
        train_split=0.8,
        max_data_per_client=600,
        max_eval_size=64,
        evaluation_mode="local",
        seed=seed,
        synthetic_overlap=overlap,
    )
    values = []
    for part in parts:
        texts = [r["instruction"] for r in part.train]
        points = embed_texts(model, tokenizer, texts, batch_size=64, max_length=256)
        labels = kmeans(points, 2, REFERENCE_KMEANS_SEED, n_init=REFERENCE_KMEANS_N_INIT).labels
        values.append(cluster_purity(labels, np.array([r["task"] for r in part.train])))
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
