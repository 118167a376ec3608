"""gvbench: gradient-variance analysis and benchmarking for discrete gradient estimators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gvbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from gvbench.harness import sweep

__all__ = ["__version__", "sweep"]
