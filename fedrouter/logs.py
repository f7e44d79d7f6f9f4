"""Readable logging for the command line and the ServerApp; library noise stays out."""

from __future__ import annotations

import logging
import os
import time
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


class HeldRecords(logging.Handler):
    """Hold log records until the run's log exists, then replay them there.

    Until ``replay``, it stands in for the handlers of the root and ``fedrouter`` loggers.
    ``replay()`` puts those back and passes each held record to them; ``replay(level)``
    replays only the records at ``level`` or above (a run that fails before its log exists
    shows its warnings on the terminal, not its progress).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._saved = {}
        for name in ("", "fedrouter"):
            logger = logging.getLogger(name)
            self._saved[name] = logger.handlers[:]
            logger.handlers[:] = [self]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def _restore(self) -> list[logging.LogRecord]:
        """Put the loggers' own handlers back; return the held records and forget them."""
        for name, handlers in self._saved.items():
            logging.getLogger(name).handlers[:] = handlers
        self._saved = {}
        records, self.records = self.records, []
        return records

    def replay(self, min_level: int = logging.NOTSET) -> None:
        """Restore the handlers and replay the held records at ``min_level`` or above."""
        for record in self._restore():
            if record.levelno < min_level:
                continue
            owner = "fedrouter" if record.name.startswith("fedrouter") else ""
            for handler in logging.getLogger(owner).handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)

    def replay_to(self, path, *, resumed: bool = False) -> None:
        """Restore the handlers and append the held records to the file ``path``."""
        own = self._saved.get("fedrouter", [])
        formatter = next((h.formatter for h in own if h.formatter), None)
        records = self._restore()
        with open(path, "a") as handle:
            if resumed:
                handle.write(f"===== resumed {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
            for record in records:
                if record.name.startswith("fedrouter") or record.levelno >= logging.WARNING:
                    text = formatter.format(record) if formatter else record.getMessage()
                    handle.write(text + "\n")
