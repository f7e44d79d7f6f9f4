"""Run one seed of a federated experiment through Flower's simulation runtime (Ray).

python -m fedrouter.simulation --fed_alg clustered --seed 111 ...   (see --help)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from fedrouter.config import Config, run_cli
from fedrouter.logs import setup_logging
from fedrouter.preflight import preflight
from fedrouter.results import RunRecorder

logger = logging.getLogger("fedrouter")


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
            "include_dashboard": False,  # nobody looks at it, and it costs a core's share
        },
    }


def run(cfg: Config, client_app=None) -> Path:
    """Run one seed end to end and return its run directory.

    ``client_app`` replaces the project's ClientApp (library use, e.g. a wrapped app in tests).
    """
    setup_logging(cfg.debug)
    start = time.perf_counter()
    cfg, base_path = preflight(cfg)
    from flwr.simulation import run_simulation

    from fedrouter.client_app import make_client_app
    from fedrouter.server_app import make_server_app, server_run_dir

    run_dir = server_run_dir(cfg)
    if not cfg.resume:
        RunRecorder(run_dir).write_config(cfg.to_dict(), {"base_model_path": base_path})
    logger.info("run directory: %s%s", run_dir, " (resuming)" if cfg.resume else "")
    run_simulation(
        server_app=make_server_app(cfg, run_dir, base_path),
        client_app=client_app or make_client_app(cfg),
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
