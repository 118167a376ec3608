"""gvbench's version, as installed (a leaf: it imports nothing of gvbench)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gvbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
