"""A sweep's cell records as the store and the journal share them: where a cell lies in the
grid (its :data:`CellKey`) and its status.

A record itself is a plain dict of the cell's metrics, its ``status`` and its ``digest``
(:func:`gvbench.harness.store.sealed`). This module is a leaf: the store, which writes
records into Datasets, and the journal, which keeps them one file per cell, both import it.
"""

from __future__ import annotations

import math
from typing import Any

CellKey = tuple[str, float, int, int, int]  # estimator, tau, k, batch_size, seed
DIMS = ("estimator", "tau", "k", "batch_size", "seed")
PENDING = "pending"
DONE = "done"

__all__ = ["DIMS", "DONE", "PENDING", "CellKey", "plain"]


def plain(key: tuple[Any, ...]) -> list[Any]:
    """``key`` as JSON keeps it and as keys are compared: a NaN (τ of an estimator without
    τ) becomes ``None``, since NaN != NaN."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in key]
