"""A finished run as a router: route new inputs to a task cluster, answer with its adapter.

A FedRouter run ends with one adapter per global task cluster and the centroids that say
which cluster an input belongs to. ``Router.from_run`` reads them from a run directory,
``Router.from_dir`` from a folder that ``Router.export`` wrote (no run directory needed).
Every file and option is checked before the base model loads; the model loads once, on first
use, and each cluster's adapter is swapped into its one LoRA slot in place. Embedding,
routing and generation go through the functions the run's evaluation used
(``embeddings.embed_texts``, ``clustering.route``, ``evaluation.generate_routed``), with the
run's settings, so an input is routed and answered as the run's evaluation would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrouter.atomic import atomic_folder, atomic_write_json
from fedrouter.clustering import allowed_clusters, nearest_two, route
from fedrouter.data.partition import routes_globally
from fedrouter.data.templates import TEMPLATE_NAMES
from fedrouter.errors import FedRouterError
from fedrouter.models import ModelSpec
from fedrouter.results import (
    ADAPTER_WEIGHTS,
    RunFileError,
    adapter_dir,
    read_clustering,
    read_run_config,
    read_summary,
    saved_clusters,
    saved_rounds,
)

logger = logging.getLogger(__name__)

ROUTER_FILE = "router.json"
TABLES_FILE = "centroids.npz"  # global centroids; each client's local centroids and matching
ROUTER_FORMAT = 1
ROUTINGS = ("global", "local")
# Methods whose evaluation routes by the nearest centroid; the others (their own adapter,
# a client group, the true task, a mixed-in private adapter) need --cluster.
CENTROID_METHODS = ("clustered", "fedavg")


class RouterError(FedRouterError):
    """A run, router folder or option that cannot make a router."""


@dataclass(frozen=True)
class Route:
    """Where one input goes: its global cluster, the cluster's task label, two distances."""

    cluster: int
    task: str
    distance: float  # to the nearest allowed centroid
    second_distance: float | None  # to the second nearest; None when only one is allowed

    def to_json(self) -> dict[str, Any]:
        """Return the fields of a prediction line (the label as ``cluster_task``)."""
        return {
            "cluster": self.cluster,
            "cluster_task": self.task,
            "distance": self.distance,
            "second_distance": self.second_distance,
        }


@dataclass(frozen=True)
class RouterFiles:
    """What a router is made of, read from a run directory or from an exported folder."""

    settings: dict[str, Any]  # router.json
    global_centroids: np.ndarray  # (clusters, hidden)
    local_centroids: tuple[np.ndarray, ...]  # per client: (local clusters, hidden)
    matching: tuple[np.ndarray, ...]  # per client: the global cluster of each local cluster
    adapters: dict[int, Path]  # cluster -> its PEFT adapter folder


# ----- reading a run directory or a router folder -------------------------------------------
def _run_config(payload: dict):
    """Return the run's Config (its fields as the run resolved them)."""
    from fedrouter.config import Config

    try:
        return Config.from_dict(payload["config"])
    except FedRouterError as exc:
        raise RunFileError(f"config.json does not hold a valid config: {exc}") from exc


def pick_round(run_dir: Path, server_round: int | None) -> int:
    """Return the saved round to use: the one asked for, or the last of a finished run."""
    rounds = saved_rounds(run_dir)
    if not rounds:
        raise RouterError(
            f"run directory '{run_dir}' has no adapters "
            f"(no adapters/round_<r>/cluster_<g>/{ADAPTER_WEIGHTS}): nothing to route to"
        )
    listed = ", ".join(map(str, rounds))
    if server_round is None:
        if read_summary(run_dir) is None:
            raise RouterError(
                f"run '{run_dir}' is unfinished (no summary.json): "
                f"pass --round R, one of the saved rounds {listed}"
            )
        return rounds[-1]
    if server_round not in rounds:
        raise RouterError(f"round {server_round} was not saved in '{run_dir}'; saved: {listed}")
    return server_round


def read_run(run_dir: str | Path, server_round: int | None = None) -> RouterFiles:
    """Read a router from a run directory: the run's settings, centroids, matching, adapters."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RouterError(f"run directory '{run_dir}' does not exist")
    payload = read_run_config(run_dir)
    server_round = pick_round(run_dir, server_round)
    cfg = _run_config(payload)
    clustering = read_clustering(run_dir)
    centroids = np.asarray(clustering["global_centroids"], dtype=np.float32)
    if centroids.ndim != 2 or len(centroids) == 0:
        raise RunFileError(f"{run_dir}/clustering.json: global_centroids is not a matrix")
    clients = sorted(clustering["clients"], key=lambda c: c["partition_id"])
    missing = sorted(set(range(len(centroids))) - set(saved_clusters(run_dir, server_round)))
    if missing:
        raise RouterError(
            f"round {server_round} of '{run_dir}' lacks the adapter of cluster(s) "
            f"{', '.join(map(str, missing))}"
        )
    spec = ModelSpec.from_config(cfg)
    settings = {
        "format": ROUTER_FORMAT,
        "base_model": payload.get("base_model_path") or cfg.model_name_or_path,
        "base_model_name": cfg.model_name_or_path,
        "model": {k: v for k, v in dataclasses.asdict(spec).items() if k != "model_name_or_path"},
        "template": cfg.template,
        "generation_prompt": cfg.generation_prompt,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": cfg.eval_batch_size,
        "seq_length": cfg.seq_length,  # prompts are cut to it, for embedding and generation
        "embedding": {
            "pooling": "masked mean of the base model's last hidden state, adapters off",
            "hidden_size": int(centroids.shape[1]),
            "batch_size": cfg.eval_batch_size,
            "max_length": cfg.seq_length,
        },
        "evaluation_mode": cfg.evaluation_mode,
        "fed_alg": cfg.fed_alg,
        "cluster_tasks": list(clustering["cluster_tasks"]),
        "source": {"run_dir": str(run_dir.resolve()), "round": server_round, "seed": cfg.seed},
    }
    return RouterFiles(
        settings=settings,
        global_centroids=centroids,
        local_centroids=tuple(np.asarray(c["local_centroids"], np.float32) for c in clients),
        matching=tuple(np.asarray(c["global_cluster"], np.int64) for c in clients),
        adapters={g: adapter_dir(run_dir, server_round, g) for g in range(len(centroids))},
    )


def read_router_dir(path: str | Path) -> RouterFiles:
    """Read a router folder written by ``Router.export``."""
    path = Path(path)
    manifest = path / ROUTER_FILE
    if not manifest.is_file():
        raise RouterError(f"'{path}' is not a router folder: it has no {ROUTER_FILE}")
    try:
        settings = json.loads(manifest.read_text())
        with np.load(path / TABLES_FILE) as npz:
            tables = dict(npz)
    except (OSError, ValueError) as exc:
        raise RouterError(f"router folder '{path}' cannot be read ({exc})") from exc
    if not isinstance(settings, dict) or settings.get("format") != ROUTER_FORMAT:
        raise RouterError(f"{manifest} is not a router.json of format {ROUTER_FORMAT}")
    if "global_centroids" not in tables:
        raise RouterError(f"{path / TABLES_FILE} holds no global_centroids")
    centroids = tables["global_centroids"]
    n_clients = sum(1 for key in tables if key.startswith("matching/"))
    adapters = {g: path / "adapters" / f"cluster_{g}" for g in range(len(centroids))}
    missing = [g for g, folder in adapters.items() if not (folder / ADAPTER_WEIGHTS).is_file()]
    if missing:
        raise RouterError(f"router folder '{path}' lacks the adapter of cluster(s) {missing}")
    return RouterFiles(
        settings=settings,
        global_centroids=centroids,
        local_centroids=tuple(tables[f"local_centroids/{i}"] for i in range(n_clients)),
        matching=tuple(tables[f"matching/{i}"] for i in range(n_clients)),
        adapters=adapters,
    )


def model_hidden_size(name_or_path: str) -> int:
    """Return a base model's hidden size from its config, without loading weights."""
    from fedrouter.model_sources import ModelLoadError, check_source, resolve_model_path

    try:
        check_source(name_or_path)
    except ModelLoadError as exc:
        raise RouterError(f"base model: {exc} (moved? pass --model PATH)") from exc
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    except (OSError, ValueError) as exc:
        raise RouterError(
            f"cannot read the config of base model '{name_or_path}': {str(exc).splitlines()[0]}"
        ) from exc
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def _range(kind: str, value: int, count: int, owner: str) -> None:
    if not 0 <= value < count:
        raise RouterError(f"{kind} {value} is out of range: {owner} has {kind}s 0..{count - 1}")


# ----- the router ------------------------------------------------------------------------
class Router:
    """Route texts to a run's task clusters and answer them with the clusters' adapters.

    ``client`` routes among that client's own clusters (the ``local`` evaluation modes);
    ``routing`` (``global`` or ``local``) overrides the run's evaluation mode; ``cluster``
    sends every text to one adapter; ``model`` is the base model's new place, if it moved.
    A router that cannot route with its options (a local run without ``client``) can still
    export; ``route`` and ``generate`` raise the reason.
    """

    def __init__(
        self,
        files: RouterFiles,
        *,
        client: int | None = None,
        cluster: int | None = None,
        routing: str | None = None,
        model: str | None = None,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        template: str | None = None,
    ):
        s = files.settings
        self.files = files
        self.settings = s
        self.template = s["template"] if template is None else template
        self.max_new_tokens = s["max_new_tokens"] if max_new_tokens is None else max_new_tokens
        self.batch_size = s["batch_size"] if batch_size is None else batch_size
        if self.template not in TEMPLATE_NAMES:
            valid = ", ".join(TEMPLATE_NAMES)
            raise RouterError(f"template '{self.template}' is unknown; valid: {valid}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise RouterError("max_new_tokens and batch_size must be >= 1")
        everywhere = routes_globally(s["evaluation_mode"])
        self.routing = routing or ("global" if everywhere else "local")
        if self.routing not in ROUTINGS:
            raise RouterError(f"routing '{self.routing}' is unknown; valid: {', '.join(ROUTINGS)}")
        n_clusters, n_clients = len(files.global_centroids), len(files.matching)
        if client is not None:
            _range("client", client, n_clients, "the run")
        self.client = client
        self.allowed = self._allowed(client, cluster, n_clusters)
        if client is not None and cluster is None and self.routing == "global":
            logger.info("routing among all clusters: client %d's matching is not used", client)
        self.spec = ModelSpec(model or s["base_model"], **self._model_fields())
        hidden = model_hidden_size(self.spec.model_name_or_path)
        if hidden != files.global_centroids.shape[1]:
            raise RouterError(
                f"base model '{self.spec.model_name_or_path}' has hidden size {hidden}, but the "
                f"run's centroids have {files.global_centroids.shape[1]}: not the run's base model"
            )
        self._model = None
        self._arrays: dict[int, dict] = {}

    def _allowed(self, client: int | None, cluster: int | None, n_clusters: int):
        """Return the global clusters this router routes among (None: it cannot route)."""
        if cluster is not None:
            _range("cluster", cluster, n_clusters, "the run")
            return np.array([cluster], dtype=np.int64)
        if self.settings["fed_alg"] not in CENTROID_METHODS or (
            self.routing == "local" and client is None
        ):
            return None  # still good for export, and for nothing else: see check_routable
        if self.routing == "global":
            return allowed_clusters([], n_clusters, everywhere=True)
        return allowed_clusters(self.files.matching[client], n_clusters, everywhere=False)

    def check_routable(self) -> None:
        """Raise a RouterError if the options leave no way to route (no model is needed)."""
        if self.allowed is not None:
            return
        fed_alg = self.settings["fed_alg"]
        if fed_alg not in CENTROID_METHODS:
            raise RouterError(
                f"fed_alg={fed_alg} does not route by centroid; pass --cluster G to use one adapter"
            )
        raise RouterError(
            f"the run routes each client among its own clusters "
            f"(evaluation_mode={self.settings['evaluation_mode']}): pass --client N "
            f"(0..{len(self.files.matching) - 1}), or --routing global"
        )

    def _model_fields(self) -> dict[str, Any]:
        fields = dict(self.settings["model"])
        fields["lora_target_modules"] = tuple(fields["lora_target_modules"])
        return fields

    @classmethod
    def from_run(cls, run_dir: str | Path, round: int | None = None, **options) -> Router:
        """Open a run directory's router at a saved round (default: the last of a finished run)."""
        return cls(read_run(run_dir, round), **options)

    @classmethod
    def from_dir(cls, path: str | Path, **options) -> Router:
        """Open a router folder written by ``export``."""
        return cls(read_router_dir(path), **options)

    @property
    def cluster_tasks(self) -> list[str]:
        """Return the task label of each global cluster."""
        return list(self.settings["cluster_tasks"])

    # ----- the model, loaded on first use ---------------------------------------------------
    def model_and_tokenizer(self):
        """Return the base model with its LoRA slot, and the tokenizer (loaded once)."""
        if self._model is None:
            from fedrouter import models

            self._model = models.get_model_and_tokenizer(self.spec)
        return self._model

    def adapter_arrays(self, cluster: int) -> dict:
        """Return one cluster's adapter weights, read from its PEFT folder once."""
        if cluster not in self._arrays:
            from safetensors.numpy import load_file

            self._arrays[cluster] = load_file(self.files.adapters[cluster] / ADAPTER_WEIGHTS)
        return self._arrays[cluster]

    def _activate(self, cluster: int) -> None:
        from fedrouter.models import arrays_to_adapter

        arrays_to_adapter(self.model_and_tokenizer()[0], self.adapter_arrays(cluster))

    # ----- routing and generation -----------------------------------------------------------
    @staticmethod
    def _texts(texts: Sequence[str]) -> list[str]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise RouterError("no input: give at least one text")
        return texts

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as the run embedded its data (masked mean, adapters off)."""
        from fedrouter.embeddings import embed_texts

        model, tokenizer = self.model_and_tokenizer()
        emb = self.settings["embedding"]
        return embed_texts(
            model,
            tokenizer,
            self._texts(texts),
            batch_size=emb["batch_size"],
            max_length=emb["max_length"],
        )

    def routes_of(self, points: np.ndarray) -> list[Route]:
        """Route embedded points to the nearest allowed centroid."""
        self.check_routable()
        centroids = self.files.global_centroids
        clusters = route(points, centroids, allowed=self.allowed)
        first, second = nearest_two(points, centroids, self.allowed)
        tasks = self.cluster_tasks
        return [
            Route(int(g), tasks[g], float(d1), None if math.isnan(d2) else float(d2))
            for g, d1, d2 in zip(clusters, first, second, strict=True)
        ]

    def route(self, texts: Sequence[str]) -> list[Route]:
        """Return where each text goes: cluster, its task label, the two nearest distances."""
        self.check_routable()
        return self.routes_of(self.embed(texts))

    def generate(self, texts: Sequence[str], routes: Sequence[Route] | None = None) -> list[str]:
        """Answer each text with its routed cluster's adapter (greedy, the run's settings)."""
        from fedrouter.evaluation import generate_routed

        texts = self._texts(texts)
        routes = self.route(texts) if routes is None else routes
        if len(routes) != len(texts):
            raise RouterError(f"{len(texts)} texts but {len(routes)} routes")
        model, tokenizer = self.model_and_tokenizer()
        return generate_routed(
            model,
            tokenizer,
            texts,
            [r.cluster for r in routes],
            self._activate,
            template=self.template,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            max_length=self.settings["seq_length"],
            prompt_end=self.settings["generation_prompt"],
        )

    # ----- export ---------------------------------------------------------------------------
    def export(self, out_dir: str | Path) -> Path:
        """Write a self-contained router folder (``from_dir`` loads it); return its path.

        It holds the adapters as standard PEFT folders, the centroids and every client's
        matching (so that ``client`` works after export), and router.json. The folder appears
        whole or not at all; an existing non-empty folder is refused.
        """
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RouterError(f"export folder '{out}' exists and is not empty; choose a new one")
        files = self.files
        tables = {"global_centroids": files.global_centroids}
        for i, (local, matched) in enumerate(
            zip(files.local_centroids, files.matching, strict=True)
        ):
            tables[f"local_centroids/{i}"] = local
            tables[f"matching/{i}"] = matched
        with atomic_folder(out) as tmp:
            for g, folder in files.adapters.items():
                target = tmp / "adapters" / f"cluster_{g}"
                target.mkdir(parents=True)
                for name in ("adapter_config.json", ADAPTER_WEIGHTS):
                    shutil.copyfile(folder / name, target / name)
            np.savez(tmp / TABLES_FILE, **tables)
            atomic_write_json(tmp / ROUTER_FILE, self.settings)
        logger.info("exported a router of %d clusters to %s", len(files.adapters), out)
        return out
