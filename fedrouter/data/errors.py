"""Errors raised by the data layer."""

from fedrouter.errors import FedRouterError


class DataError(FedRouterError, ValueError):
    """Report data that cannot be loaded or split as asked, with what to do about it."""
