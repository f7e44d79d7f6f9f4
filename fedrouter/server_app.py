"""Flower ServerApp: build the strategy from the config, run it, record the run."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrouter.config import Config
from fedrouter.federation import run_federation
from fedrouter.models import ModelSpec, lora_config
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
        conf = cfg if cfg is not None else Config.from_dict(dict(context.run_config))
        directory = run_dir or new_run_dir(conf.output_dir, run_name(conf))
        recorder = RunRecorder(directory)
        if not (directory / "config.json").exists():
            recorder.write_config(conf.to_dict())
        lora = adapter_lora_config(conf, base_path or conf.model_name_or_path)
        summary = run_federation(conf, grid, build_strategy(conf), recorder, lora)
        logger.info("final client-weighted mean: %s", summary["final"])

    return app


app = make_server_app()  # the component `flwr run` loads; simulation.py builds its own
