"""fedrouter: task-centric personalized federated fine-tuning of language models on Flower."""

from fedrouter.version import __version__

__all__ = ["Router", "__version__"]


def __getattr__(name: str):
    """Import ``Router`` on first use, so that ``import fedrouter`` stays light."""
    if name == "Router":
        from fedrouter.router import Router

        return Router
    raise AttributeError(f"module 'fedrouter' has no attribute {name!r}")
