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


def run(cfg: Config, client_app=None, *, log_file=None, on_claim=None) -> Path:
    """Run one seed end to end and return its run directory.

    ``client_app`` replaces the project's ClientApp (library use, e.g. a wrapped app in tests).
    With ``log_file``, the run claims its own log beside its run directory (see
    ``fedrouter.supervise``), says both on stdout, and writes all further output there.
    ``on_claim(run_dir, log)`` is called once both exist.
    """
    setup_logging(cfg.debug)
    start = time.perf_counter()
    held = HeldRecords() if log_file else None  # the preflight's lines belong in the log
    try:
        cfg, base_path = preflight(cfg)
        from fedrouter.server_app import run_name, server_run_dir
        from fedrouter.supervise import log_for_suffix, run_suffix, send_output_to

        log_for = (lambda n: log_for_suffix(log_file, n)) if log_file else None
        run_dir = server_run_dir(cfg, log_for)
        log = log_for(run_suffix(run_dir, run_name(cfg))) if log_for else None
    except BaseException:
        if held is not None:
            held.replay(logging.WARNING)
        raise
    if not cfg.resume:
        RunRecorder(run_dir).write_config(cfg.to_dict(), {"base_model_path": base_path})
    if log is not None:
        sys.stdout.write(f"fedrouter: seed {cfg.seed} runs in {run_dir}; log: {log}\n")
        send_output_to(log, resumed=cfg.resume)
        held.replay()
    from flwr.simulation import run_simulation

    from fedrouter.client_app import make_client_app
    from fedrouter.server_app import make_server_app

    if on_claim is not None:
        on_claim(run_dir, log)
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

    raise SystemExit(run_cli(lambda cfg: supervise(cfg, log_file), args))


if __name__ == "__main__":
    main()
