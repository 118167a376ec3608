"""What every training run needs: atomic checkpoints and learning curves as xarray."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr


def save_atomic(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a temporary file and a rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def curves_dataset(
    rows: Sequence[Mapping[str, float]], attrs: Mapping[str, Any], units: Mapping[str, str]
) -> xr.Dataset:
    """Rows of ``{"step": …, metric: …}`` as a Dataset over ``step`` (NaN where not measured)."""
    steps = np.array([int(row["step"]) for row in rows], dtype=np.int64)
    names = sorted({key for row in rows for key in row if key != "step"})
    data = {
        name: (
            "step",
            np.array([float(row.get(name, np.nan)) for row in rows]),
            {"units": units.get(name, "1")},
        )
        for name in names
    }
    return xr.Dataset(data, coords={"step": steps}, attrs=dict(attrs))
