"""Errors that the command line reports as one line, without a traceback."""


class FedRouterError(Exception):
    """A problem the user can fix: bad config, missing data or model, unusable output dir."""
