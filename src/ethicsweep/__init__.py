"""ethicsweep: ethical constraints as loss terms, and a search over their trade-offs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ethicsweep")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
