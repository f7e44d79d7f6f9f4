"""Flower ServerApp: build the strategy from the config, run it, record the run."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrouter.config import Config
from fedrouter.federation import run_federation
from fedrouter.logs import setup_logging
from fedrouter.model_sources import resolve_source
from fedrouter.models import ModelSpec, lora_config
from fedrouter.preflight import preflight
from fedrouter.results import Run, open_run
from fedrouter.strategies import build_strategy

logger = logging.getLogger(__name__)


def adapter_lora_config(cfg: Config, base_path: str):
    """Return the LoraConfig saved next to every adapter, pointing at the base model."""
    return lora_config(ModelSpec.from_config(cfg), base_model_name_or_path=base_path)


def make_server_app(
    cfg: Config | None = None, run: Run | None = None, base_path: str | None = None
) -> ServerApp:
    """Build the ServerApp; without ``cfg`` it reads the config from ``run_config``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        conf, opened = cfg, run
        if conf is None:  # under `flwr run`: the simulation CLI did all this already
            conf = Config.from_dict(dict(context.run_config))
            setup_logging(conf.debug)
            conf, _ = preflight(conf, hosts_clients=False)  # SuperNodes run the clients
        if opened is None:
            source = resolve_source(conf.model_name_or_path).record()
            opened = open_run(conf, model_source=source)
        lora = adapter_lora_config(conf, base_path or conf.model_name_or_path)
        strategy = build_strategy(conf)
        summary = run_federation(
            conf, grid, strategy, opened.recorder(), lora, checkpoint=opened.checkpoint
        )
        logger.info("final client-weighted mean: %s", summary.final)

    return app


app = make_server_app()  # the component `flwr run` loads; simulation.py builds its own
