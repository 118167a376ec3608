"""gvbench: gradient-variance analysis and benchmarking for discrete gradient estimators.

``gvbench.sweep`` and ``gvbench.__version__`` are loaded on first use (PEP 562): importing
``gvbench.estimators`` runs this file too, and must not load the harness (xarray, tqdm) or
read the installed metadata.
"""

from __future__ import annotations

import importlib
from typing import Any

# Attribute → (module, name in it).
_LAZY = {
    "__version__": ("gvbench.version", "__version__"),
    "sweep": ("gvbench.harness.sweep", "sweep"),
}

__all__ = ["__version__", "sweep"]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
