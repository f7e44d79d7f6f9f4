"""Readable logging for the command line and the ServerApp; library noise stays out."""

from __future__ import annotations

import logging
import os
import warnings


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
