"""Run one seed of a federated experiment through Flower's simulation runtime (Ray).

python -m fedrouter.simulation --fed_alg clustered --seed 111 ...   (see --help)
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

from fedrouter.config import Config, run_cli
from fedrouter.errors import FedRouterError
from fedrouter.results import RunRecorder, check_writable, new_run_dir

logger = logging.getLogger("fedrouter")


class _DropRunSimulationNotice(logging.Filter):
    """Drop Flower's deprecation notice for run_simulation, which this module calls on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation" not in record.getMessage()


def setup_logging(debug: bool = False) -> None:
    """Log readable lines to stderr; keep library debug output out unless debugging."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    # Records that libraries propagate to the root stop here below WARNING (Flower logs its
    # simulation internals at DEBUG through its own logger).
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    ours = logging.getLogger("fedrouter")
    ours.setLevel(logging.DEBUG if debug else logging.INFO)
    ours.propagate = False
    own = logging.StreamHandler()
    own.setFormatter(handler.formatter)
    ours.handlers[:] = [own]
    if not debug:
        logging.getLogger("flwr").addFilter(_DropRunSimulationNotice())
        warnings.filterwarnings("ignore")
        # Inherited by the Ray workers, which import torch and transformers afresh.
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_resources(cfg: Config) -> None:
    """Refuse GPU requests on a machine without CUDA instead of letting Ray hang."""
    import torch

    if cfg.client_resources_gpus > 0 and not torch.cuda.is_available():
        raise FedRouterError(
            f"client_resources_gpus={cfg.client_resources_gpus:g} but no CUDA device is visible; "
            "set client_resources_gpus=0 to run on the CPU"
        )


def check_model(cfg: Config) -> str:
    """Resolve the base model path and check that its config loads, without loading weights."""
    from transformers import AutoConfig

    from fedrouter.models import ModelLoadError, check_model_source, resolve_model_path

    check_model_source(cfg.model_name_or_path)
    path = resolve_model_path(cfg.model_name_or_path)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model '{cfg.model_name_or_path}': {str(exc).splitlines()[0]} "
            "(offline? pass a local folder, or --model_name_or_path tiny)"
        ) from exc
    return path


def check_data(cfg: Config) -> None:
    """Load and partition the data once, so bad data fails before any model loads."""
    from fedrouter.data import load_client_data

    parts = load_client_data(
        dataset_name=cfg.dataset_name,
        local_data_dir=cfg.local_data_dir,
        dataset_sample=cfg.dataset_sample,
        split_strategy=cfg.split_strategy,
        num_clients=cfg.num_clients,
        train_split=cfg.train_split,
        max_data_per_client=cfg.max_data_per_client,
        max_eval_size=cfg.max_eval_size,
        evaluation_mode=cfg.evaluation_mode,
        seed=cfg.seed,
    )
    for pid, part in enumerate(parts):
        if cfg.n_clusters > len(part.train):
            raise FedRouterError(
                f"n_clusters={cfg.n_clusters} is larger than client {pid}'s "
                f"{len(part.train)} training samples"
            )


def backend_config(cfg: Config) -> dict:
    """Return the Ray backend config: client resources, and the machine's cores and GPUs."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "client_resources": {
            "num_cpus": cfg.client_resources_cpus,
            "num_gpus": cfg.client_resources_gpus if gpus else 0.0,
        },
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": gpus,
            "logging_level": logging.DEBUG if cfg.debug else logging.ERROR,
            "log_to_driver": cfg.debug,
        },
    }


def preflight(cfg: Config) -> str:
    """Run every check that needs no model weights; return the resolved base model path."""
    check_writable(cfg.output_dir)
    check_resources(cfg)
    check_data(cfg)
    return check_model(cfg)


def run(cfg: Config) -> Path:
    """Run one seed end to end and return its run directory."""
    setup_logging(cfg.debug)
    start = time.perf_counter()
    base_path = preflight(cfg)
    from flwr.simulation import run_simulation

    from fedrouter.client_app import make_client_app
    from fedrouter.server_app import make_server_app, run_name

    run_dir = new_run_dir(cfg.output_dir, run_name(cfg))
    RunRecorder(run_dir).write_config(cfg.to_dict(), {"base_model_path": base_path})
    logger.info("run directory: %s", run_dir)
    run_simulation(
        server_app=make_server_app(cfg, run_dir, base_path),
        client_app=make_client_app(cfg),
        num_supernodes=cfg.num_clients,
        backend_config=backend_config(cfg),
        verbose_logging=cfg.debug,
    )
    logger.info("finished in %.1fs; results in %s", time.perf_counter() - start, run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and run one seed."""
    run_cli(run, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
