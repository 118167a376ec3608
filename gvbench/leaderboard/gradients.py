"""Gradient quality of a column: one harness sweep of its task at its
:class:`~gvbench.leaderboard.column.GradientCheck`, read into the leaderboard's long table.

The sweep is the harness's own (:func:`gvbench.harness.sweep.sweep`), so its numbers, SEs
and costs per draw are those ``gvbench sweep`` gives, and its file under the leaderboard's
folder makes the part resumable: a rerun computes only the cells it lacks. Each estimator is
read at its own τ and K (the check's, or the column's options for it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import xarray as xr

from gvbench.harness.sweep import sweep
from gvbench.leaderboard.column import Column, ColumnFolder, GradientCheck
from gvbench.leaderboard.measures import MEASURES, Entry, entry
from gvbench.leaderboard.rows import options
from gvbench.tasks import Task


def gradient_sweep(
    column: Column,
    task: Task,
    estimators: Sequence[str],
    folder: ColumnFolder,
    *,
    seed: int = 0,
    executor: Any = None,
    progress: bool = True,
) -> xr.Dataset:
    """The sweep of ``task`` over ``estimators`` at the column's check, resumed from and
    saved to ``folder.sweep``: τ and K are the check's and every value the column's options
    give an estimator."""
    check = _check(column)
    chosen = [options(column, name, check.tau, check.k) for name in estimators]
    taus = sorted({check.tau, *(o.tau for o in chosen if o.tau is not None)})
    ks = sorted({check.k, *(o.k for o in chosen if o.k is not None)})
    folder.sweep.parent.mkdir(parents=True, exist_ok=True)
    return sweep(
        task,
        estimators=list(estimators),
        tau=taus,
        k=ks,
        batch_size=check.batch_size,
        reps=check.reps,
        seed=seed,
        path=folder.sweep,
        executor=executor,
        progress=progress,
        reference_reps=check.reference_reps,
        **({} if check.warmup is None else {"warmup": check.warmup}),
    )


def gradient_entries(column: Column, ds: xr.Dataset) -> list[Entry]:
    """Every gradient measure of every estimator of the sweep ``ds``, at its own τ and K:
    value ± SE over the check's draws, or the cell's status where it has no value."""
    check = _check(column)
    rows = []
    measured = [m for m in MEASURES.values() if m.part == "gradients"]
    for name in ds["estimator"].values.tolist():
        at = options(column, name, check.tau, check.k)
        cell = ds.sel(
            estimator=name,
            tau=check.tau if at.tau is None else at.tau,
            k=check.k if at.k is None else at.k,
            batch_size=check.batch_size,
        )
        status = str(cell["status"].values)
        for measure in measured:
            if status != "done":
                rows.append(entry(column.name, name, measure.name, note=status))
                continue
            se = float(cell[f"{measure.name}_se"]) if measure.se else float("nan")
            value = float(cell[measure.name])
            # A done cell has every error term; a cosine is undefined at a zero mean estimate.
            note = "" if math.isfinite(value) else "undefined: the mean estimate is 0"
            row = entry(column.name, name, measure.name, value, se, check.reps, "draws", note)
            rows.append(row)
    return rows


def _check(column: Column) -> GradientCheck:
    if column.gradients is None:
        raise ValueError(f"column {column.name} has no gradient check")
    return column.gradients
