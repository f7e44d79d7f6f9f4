"""Strategies: FedRouter and the baselines, on Flower's Message-API Strategy."""

from fedrouter.strategies.base import ClusteredStrategy
from fedrouter.strategies.baselines import (
    CFLStrategy,
    FedAvgStrategy,
    FedDPAStrategy,
    LocalStrategy,
    OracleRouterStrategy,
)

# One entry per fed_alg value; every method shares data, model, training and evaluation.
STRATEGIES = {
    "clustered": ClusteredStrategy,  # FedRouter
    "fedavg": FedAvgStrategy,
    "local": LocalStrategy,
    "cfl": CFLStrategy,
    "feddpa": FedDPAStrategy,
    "router_oracle": OracleRouterStrategy,
}


def build_strategy(cfg):
    """Return the strategy of ``cfg.fed_alg``."""
    try:
        return STRATEGIES[cfg.fed_alg](cfg)
    except KeyError:
        valid = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"fed_alg '{cfg.fed_alg}' is not implemented; valid: {valid}") from None
