"""The paper's Figure 1 as data: ST-GS against GR-MCK at every point of the 3-simplex."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from gvbench.harness.sweep import sweep_over
from gvbench.tasks.toy import Toy, simplex_points


def simplex_sweep(
    resolution: int = 12,
    tau: Sequence[float] = (0.1, 0.5, 1.0),
    k: Sequence[int] = (1000,),
    reps: int = 2000,
    seed: int = 0,
    folder: str | os.PathLike[str] = "results/simplex-points",
    executor: Any = None,
    progress: bool = True,
) -> xr.Dataset:
    """Variance, bias² and MSE of ST-GS and GR-MCK on the toy task with p = softmax θ at every
    interior point of a triangular grid of the simplex (``resolution`` points per edge).

    Returns the sweep over ``point`` with barycentric coordinates ``p1, p2, p3``; each point's
    cells are journaled under ``folder`` (resumable, any executor).
    """
    points = simplex_points(resolution)
    tasks = [Toy(theta=[math.log(p) for p in point]) for point in points]
    coords = {f"p{i + 1}": [point[i] for point in points] for i in range(3)}
    return sweep_over(
        tasks,
        coords,
        folder=Path(folder),
        executor=executor,
        estimators=["st_gumbel_softmax", "gumbel_rao"],
        tau=list(tau),
        k=list(k),
        reps=reps,
        seed=seed,
        progress=progress,
    )
