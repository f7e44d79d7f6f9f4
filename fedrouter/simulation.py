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
from fedrouter.logs import HeldRecords, setup_logging
from fedrouter.model_sources import resolve_source
from fedrouter.preflight import preflight
from fedrouter.results import Run, open_run

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


def prepare(cfg: Config, log_file: str | None = None) -> tuple[Config, str, Run]:
    """Check everything, then open the run (``fedrouter.results.open_run``).

    Return the config with its LoRA targets resolved, the base model's folder, and the open
    run. Bad input raises before anything is written. With ``log_file``, the lines logged
    meanwhile go to the run's own log, not to the terminal.
    """
    held = HeldRecords() if log_file else None
    try:
        cfg, base_path = preflight(cfg)
        source = resolve_source(cfg.model_name_or_path).record()
        run = open_run(cfg, base_path=base_path, model_source=source, log_file=log_file)
    except BaseException:
        if held is not None:
            held.replay(logging.WARNING)  # a run that fails here shows its warnings
        raise
    if held is not None:
        held.replay_to(run.log, resumed=cfg.resume)
    return cfg, base_path, run


def simulate(cfg: Config, base_path: str, run: Run, client_app=None) -> Path:
    """Run the Flower simulation of an open run and return its run directory."""
    from flwr.simulation import run_simulation

    from fedrouter.client_app import make_client_app
    from fedrouter.server_app import make_server_app

    start = time.perf_counter()
    logger.info("run directory: %s%s", run.dir, " (resuming)" if cfg.resume else "")
    run_simulation(
        server_app=make_server_app(cfg, run, base_path),
        client_app=client_app or make_client_app(cfg),
        num_supernodes=cfg.num_clients,
        backend_config=backend_config(cfg),
        verbose_logging=cfg.debug,
    )
    logger.info("finished in %.1fs; results in %s", time.perf_counter() - start, run.dir)
    return run.dir


def run(cfg: Config, client_app=None) -> Path:
    """Run one seed end to end in this process and return its run directory.

    ``client_app`` replaces the project's ClientApp (library use, e.g. a wrapped app in tests).
    """
    setup_logging(cfg.debug)
    cfg, base_path, opened = prepare(cfg)
    return simulate(cfg, base_path, opened, client_app)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and run one seed under a supervisor that Ctrl-C stops cleanly.

    ``--log_file PATH`` (the launcher's): the run's own log, see ``fedrouter.supervise``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    log_file = None
    if "--log_file" in args:
        i = args.index("--log_file")
        if i + 1 >= len(args) or not args[i + 1] or args[i + 1].startswith("--"):
            sys.stderr.write("error: --log_file needs a path\n")
            raise SystemExit(2)
        log_file = os.path.expanduser(args[i + 1])
        del args[i : i + 2]
    from fedrouter.supervise import supervise

    def supervised(cfg: Config) -> int:
        setup_logging(cfg.debug)  # the preflight's lines, held for the run's log
        return supervise(cfg, log_file, prepare=prepare, simulate=simulate)

    raise SystemExit(run_cli(supervised, args))


if __name__ == "__main__":
    main()
