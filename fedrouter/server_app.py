"""Flower ServerApp: build the strategy from the config, run it, record the run."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrouter.checkpoint import find_run_to_resume
from fedrouter.config import Config
from fedrouter.federation import run_federation
from fedrouter.logs import setup_logging
from fedrouter.models import ModelSpec, lora_config
from fedrouter.preflight import preflight
from fedrouter.results import RunRecorder, new_run_dir
from fedrouter.strategies import build_strategy

logger = logging.getLogger(__name__)


def run_name(cfg: Config) -> str:
    """Name a run folder after the alias, method and seed."""
    return f"{cfg.sim_alias}_{cfg.fed_alg}_seed{cfg.seed}"


def adapter_lora_config(cfg: Config, base_path: str):
    """Return the LoraConfig saved next to every adapter, pointing at the base model."""
    return lora_config(ModelSpec.from_config(cfg), base_model_name_or_path=base_path)


def make_server_app(
    cfg: Config | None = None, run_dir: Path | None = None, base_path: str | None = None
) -> ServerApp:
    """Build the ServerApp; without ``cfg`` it reads the config from ``run_config``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        conf = cfg
        if conf is None:  # under `flwr run`: the simulation CLI did all this already
            conf = Config.from_dict(dict(context.run_config))
            setup_logging(conf.debug)
            conf, _ = preflight(conf, hosts_clients=False)  # SuperNodes run the clients
        directory = run_dir or server_run_dir(conf)
        recorder = RunRecorder(directory)
        if not (directory / "config.json").exists():
            recorder.write_config(conf.to_dict())
        lora = adapter_lora_config(conf, base_path or conf.model_name_or_path)
        strategy = build_strategy(conf)
        summary = run_federation(conf, grid, strategy, recorder, lora, resume=conf.resume)
        logger.info("final client-weighted mean: %s", summary["final"])

    return app


def server_run_dir(cfg: Config, log_for=None) -> Path:
    """Return the run folder: the one to resume, or a new one (with its log, see new_run_dir)."""
    if cfg.resume:
        return find_run_to_resume(cfg.output_dir, run_name(cfg), cfg.to_dict())
    return new_run_dir(cfg.output_dir, run_name(cfg), log_for)


app = make_server_app()  # the component `flwr run` loads; simulation.py builds its own
