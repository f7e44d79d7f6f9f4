"""The method registry: one entry per ``fed_alg``, read by the CLI, the server, report and launcher.

Importing this module imports no server code: a method's strategy is named by its import
path and loaded only when a server builds it. ``python -m fedrouter.methods`` prints the
method names, one per line, for the shell launchers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClientHooks:
    """What a method asks of clients beyond FedRouter's steps; each travels as a message field."""

    cluster_by_task: bool = False  # local clusters are the true tasks, not k-means clusters
    route_by_task: bool = False  # each test sample goes to a cluster of its true task
    local_adapter: bool = False  # FedDPA: a private adapter, trained beside the shared one
    # and mixed in at inference; the shared one weighs feddpa_alpha


@dataclass(frozen=True)
class Method:
    """One federated method: its names, server strategy, client hooks, and report entry."""

    name: str  # the stored name: config.json, run directories, the report
    strategy: str  # "module:Class" of its server strategy, imported on first use
    label: str  # its name in tables and legends
    report_order: int  # its row in the report's tables
    synonyms: tuple[str, ...] = ()  # other names the CLI accepts for it
    client: ClientHooks = field(default_factory=ClientHooks)
    gain_label: str = ""  # set on the methods relative gains are taken against

    def strategy_class(self) -> type:
        """Import and return the method's strategy class."""
        module, name = self.strategy.split(":")
        return getattr(importlib.import_module(module), name)


_BASELINES = "fedrouter.strategies.baselines"

# In the order the launchers run them; every method shares data, model, training, evaluation.
METHODS = (
    Method(
        "clustered",
        "fedrouter.strategies.fedrouter:ClusteredStrategy",
        label="FedRouter (clustered)",
        report_order=0,
        synonyms=("fedrouter",),  # the paper's launcher calls FedRouter "clustered"
    ),
    Method("fedavg", f"{_BASELINES}:FedAvgStrategy", "fedavg", report_order=2, gain_label="FedAvg"),
    Method("local", f"{_BASELINES}:LocalStrategy", "local", report_order=3, gain_label="Local"),
    Method("cfl", f"{_BASELINES}:CFLStrategy", "cfl", report_order=4),
    Method(
        "feddpa",
        f"{_BASELINES}:FedAvgStrategy",  # FedAvg on the server; the rest is client-side
        "feddpa",
        report_order=5,
        client=ClientHooks(local_adapter=True),
    ),
    Method(
        "router_oracle",
        f"{_BASELINES}:OracleRouterStrategy",
        "router_oracle",
        report_order=1,
        client=ClientHooks(cluster_by_task=True, route_by_task=True),
    ),
)

BY_NAME = {m.name: m for m in METHODS}
SYNONYMS = {synonym: m.name for m in METHODS for synonym in m.synonyms}


def names() -> tuple[str, ...]:
    """Return the stored method names, in the launchers' order."""
    return tuple(m.name for m in METHODS)


def choices() -> tuple[str, ...]:
    """Return every name the CLI accepts, each synonym after its method."""
    return tuple(n for m in METHODS for n in (m.name, *m.synonyms))


def canonical(name: str) -> str:
    """Return the stored name of a method name or synonym (unknown names unchanged)."""
    return SYNONYMS.get(name, name)


def get(name: str) -> Method:
    """Return the method of a name or synonym."""
    try:
        return BY_NAME[canonical(name)]
    except KeyError:
        valid = ", ".join(sorted(BY_NAME))
        raise ValueError(f"fed_alg '{name}' is not implemented; valid: {valid}") from None


def report_order() -> tuple[str, ...]:
    """Return the stored names in the report's order."""
    return tuple(m.name for m in sorted(METHODS, key=lambda m: m.report_order))


def main(argv: list[str] | None = None) -> None:
    """Print the method names, or the stored name of one method."""
    parser = argparse.ArgumentParser(
        prog="python -m fedrouter.methods", description="List the federated methods."
    )
    parser.add_argument("--canonical", metavar="NAME", help="print the stored name of NAME")
    args = parser.parse_args(argv)
    lines = [canonical(args.canonical)] if args.canonical else names()
    sys.stdout.write("\n".join(lines) + "\n")  # the shell launchers read this


if __name__ == "__main__":
    main()
