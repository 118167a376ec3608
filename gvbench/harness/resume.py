"""Resuming a sweep from its file: only the same experiment, its finished cells kept, its grid
grown by the new values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import warnings
from typing import Any

import numpy as np
import xarray as xr

import gvbench.estimators as E
from gvbench.estimators.registry import SWEPT_HYPER
from gvbench.harness import store
from gvbench.tasks import Task

# Attributes that must agree for a stored file to be resumed: the same experiment.
IDENTITY = (
    "task",
    "task_config",
    "reps",
    "reference",
    "threads_per_cell",
    "warmup",
    "seed",
    "draw_mode",
)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a sweep starts from when its file exists."""

    records: dict[store.CellKey, dict[str, Any]]  # the finished cells, by grid point
    coords: dict[str, list[Any]]  # the stored grid and the new one, merged
    attrs: dict[str, Any]  # the new attributes, with the file's creation time


def resume(
    path: str | os.PathLike[str],
    task: Task,
    attrs: dict[str, Any],
    coords: dict[str, list[Any]],
) -> Resumed:
    """The finished cells of the sweep in ``path``, refused unless it is this experiment
    (``attrs``), with a warning for cells whose checksum fails (they are recomputed) and for a
    file written at another commit. A task that leaves its draw mode to gvbench takes the
    file's, so that new cells draw as the finished ones did."""
    stored = store.read(path, verify=False)
    if "task" not in stored.attrs or "status" not in stored:
        raise store.ResultsFileError(
            f"{path} is a netCDF file but not a gvbench sweep; it was left as it is: "
            "choose another path"
        )
    for key in IDENTITY:
        if key == "draw_mode":  # adopted below when the task leaves it to gvbench
            continue
        if str(stored.attrs.get(key)) != str(attrs[key]):
            raise ValueError(
                f"{path} holds a different experiment ({key}: "
                f"{_plain(stored.attrs.get(key))!r} vs {_plain(attrs[key])!r}); choose "
                "another path"
            )
    corrupted = store.corrupted_cells(stored)
    if corrupted:
        warnings.warn(
            f"{path}: {len(corrupted)} cell(s) do not match their checksum and will be "
            f"recomputed ({'; '.join(corrupted[:3])})",
            stacklevel=3,
        )
    if stored.attrs.get("git_commit") != attrs["git_commit"]:
        warnings.warn(
            f"{path} was written at commit {stored.attrs.get('git_commit')} and is resumed at "
            f"{attrs['git_commit']}: its finished cells are kept as they are",
            stacklevel=3,
        )
    merged = _merged_grid(stored, coords)
    records = _filled(store.finished_records(stored), merged, _hyper_of(stored))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    attrs = {**attrs, "created": stored.attrs.get("created", attrs["created"]), "updated": now}
    chosen = stored.attrs.get("draw_mode", "batched")  # the only mode before it was stored
    if task.draw_mode == "auto":
        task.set_draw_mode(str(chosen))  # the mode its finished cells were drawn in
    elif task.draw_mode != chosen:
        raise ValueError(
            f"{path} was drawn in {chosen} mode and this task is set to {task.draw_mode} "
            "(batched=…): the draws would differ; choose another path"
        )
    return Resumed(records, merged, attrs)


def _merged_grid(stored: xr.Dataset, coords: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The stored grid grown by the new values. τ (or K) values grow it only where an
    estimator asked for takes τ (or K): RLOO asked for at the default τ grid must not open
    τ values that the file's Gumbel-Rao cells were never asked for."""
    taken = {axis for name in coords["estimator"] for axis in E.info(name).hyper}
    merged = dict(coords)
    for name, values in coords.items():
        if name == "group":  # fixed by the task's configuration, which must match
            continue
        old = stored[name].values.tolist() if name in stored.dims else [int(stored.attrs["seed"])]
        if name in SWEPT_HYPER and name not in taken:
            values = []
        union = list(dict.fromkeys([*old, *values]))
        merged[name] = union if name == "estimator" else sorted(union)
    return merged


def _hyper_of(stored: xr.Dataset) -> dict[str, set[str]]:
    """The swept hyper-parameters each stored estimator takes: from the file (``uses_tau``,
    ``uses_k``), else from the registry; both where neither knows (nothing is filled)."""
    taken = {}
    for index, name in enumerate(stored["estimator"].values.tolist()):
        flags = {axis: f"uses_{axis}" for axis in SWEPT_HYPER}
        if all(flag in stored for flag in flags.values()):
            taken[name] = {a for a, flag in flags.items() if bool(stored[flag].values[index])}
        else:
            try:
                taken[name] = set(E.info(name).hyper)
            except KeyError:
                taken[name] = set(SWEPT_HYPER)
    return taken


def _filled(
    records: dict[store.CellKey, dict[str, Any]],
    grid: dict[str, list[Any]],
    taken: dict[str, set[str]],
) -> dict[store.CellKey, dict[str, Any]]:
    """``records`` with each cell of an estimator that takes no τ (or K) at every τ (or K) of
    the grown ``grid``: one cell, whose seed does not depend on the axis it does not take, so
    exactly what a sweep of the whole grid stores there (never a pending hole)."""
    filled = dict(records)
    for key, record in records.items():
        name, tau, k, batch_size, seed = key
        uses = taken.get(name, set(SWEPT_HYPER))
        for t in [tau] if "tau" in uses else grid["tau"]:
            for kk in [k] if "k" in uses else grid["k"]:
                filled.setdefault((name, t, kk, batch_size, seed), record)
    return filled


def _plain(value: Any) -> Any:
    """A netCDF attribute as Python shows it (``0``, not ``np.int64(0)``)."""
    return value.item() if isinstance(value, np.generic) else value
