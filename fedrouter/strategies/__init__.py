"""Strategies: FedRouter and the baselines, on Flower's Message-API Strategy."""

from fedrouter.strategies.base import ClusteredStrategy

# One entry per fed_alg value; every method shares data, model, training and evaluation.
STRATEGIES = {
    "clustered": ClusteredStrategy,
    "router_oracle": ClusteredStrategy,  # clients cluster and route by the true task label
}


def build_strategy(cfg):
    """Return the strategy of ``cfg.fed_alg``."""
    try:
        return STRATEGIES[cfg.fed_alg](cfg)
    except KeyError:
        valid = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"fed_alg '{cfg.fed_alg}' is not implemented; valid: {valid}") from None
