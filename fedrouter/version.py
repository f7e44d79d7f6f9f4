"""The package version, in a module of its own: modules import it without the package's names."""

__version__ = "0.1.0"
