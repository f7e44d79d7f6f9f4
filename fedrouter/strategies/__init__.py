"""Strategies: FedRouter and the baselines, on Flower's Message-API Strategy."""

from fedrouter import methods


def build_strategy(cfg):
    """Return the strategy of ``cfg.fed_alg``, as the method registry defines it."""
    method = methods.get(cfg.fed_alg)
    return method.strategy_class()(cfg, method.client)
