"""The figures of the files gvbench writes (sweeps, ``simplex.nc``, a run's ``curves.nc``),
written beside them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
import xarray as xr

from gvbench.harness.compare import COSTS, check_comparable
from gvbench.harness.quantities import ERRORS
from gvbench.harness.store import read
from gvbench.harness.views import select_group
from gvbench.plots.bands import pool_seeds
from gvbench.plots.comparison import plot_comparison, plot_frontier
from gvbench.plots.curves import plot_curves
from gvbench.plots.simplex import plot_simplex
from gvbench.plots.sweep import plot_gumbel_rao_advantage, plot_metric


def file_kind(ds: xr.Dataset) -> str | None:
    """Which of gvbench's files ``ds`` is: ``sweep``, ``simplex``, ``curves`` or None."""
    if {"p1", "p2", "p3"} <= set(ds.coords) and "point" in ds.dims and "variance" in ds:
        return "simplex"
    if {"estimator", "tau", "k", "batch_size"} <= set(ds.dims) and "variance" in ds:
        return "sweep"
    if "step" in ds.dims and ds.data_vars:
        return "curves"
    return None


def save_figure(figure: plt.Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``figure`` as ``stem.EXT`` for every format, close it; the files written."""
    written = []
    for extension in formats:
        target = stem.with_name(f"{stem.name}.{extension}")
        figure.savefig(target, bbox_inches="tight", dpi=150)
        written.append(target)
    plt.close(figure)
    return written


def plot_sweep(
    ds: xr.Dataset | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ERRORS,
    formats: Sequence[str] = ("png", "pdf"),
    stem: str | None = None,
    group: str | None = None,
) -> list[Path]:
    """Write the figures of a sweep (a Dataset or a netCDF path); returns the files written.

    With ``group``, every figure is of that parameter group's part of the gradient
    (:func:`~gvbench.harness.select_group`), named ``STEM-group-GROUP-…``.
    """
    if not isinstance(ds, xr.Dataset):
        stem = stem or Path(ds).stem
        out_dir = Path(out_dir) if out_dir is not None else Path(ds).parent
        ds = read(ds)
    else:
        stem = stem or ds.attrs.get("task", "sweep")
        out_dir = Path(out_dir or ".")
    if group is not None:
        ds, stem = select_group(ds, group), f"{stem}-group-{group}"
    if "seed" in ds.dims:
        ds = pool_seeds(ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    written = []
    figures = [(metric, plot_metric(ds, metric).figure) for metric in metrics]
    figures += [(f"frontier-{cost}", plot_frontier(ds, cost).figure) for cost in COSTS]
    advantage = plot_gumbel_rao_advantage(ds)
    if advantage is not None:
        figures.append(("gumbel-rao-advantage", advantage))
    for name, figure in figures:
        written += save_figure(figure, out_dir / f"{stem}-{name}", formats)
    return written


def plot_file(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ERRORS,
    formats: Sequence[str] = ("png", "pdf"),
    group: str | None = None,
) -> list[Path]:
    """The figures of any file gvbench writes (a sweep, ``simplex.nc``, a run's ``curves.nc``);
    of a sweep's parameter ``group`` where one is named.

    Raises:
        ValueError: a file of another kind (the message says which kinds are plotted), or a
            group the file does not have.
    """
    path = Path(path)
    ds = read(path)
    kind = file_kind(ds)
    if kind == "sweep":
        return plot_sweep(
            ds,
            out_dir=out_dir or path.parent,
            metrics=metrics,
            formats=formats,
            stem=path.stem,
            group=group,
        )
    if group is not None:
        raise ValueError(f"{path} is not a sweep: only a sweep's figures are drawn per group")
    if kind is None:
        raise ValueError(
            f"{path} is not a file that `gvbench plot` draws: it draws sweeps (gvbench sweep, "
            "demo), simplex.nc (gvbench simplex) and a run's curves.nc (gvbench train)"
        )
    figure = plot_simplex(ds) if kind == "simplex" else plot_curves(ds)
    out_dir = Path(out_dir or path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, out_dir / path.stem, formats)


def plot_files(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ERRORS,
    formats: Sequence[str] = ("png", "pdf"),
    frontier_only: bool = False,
    group: str | None = None,
) -> list[Path]:
    """Several sweeps side by side: of one problem, each metric with a line style per sweep
    and their frontiers in one figure; of different problems (``frontier_only``), only the
    frontiers. Named ``compare-<stems>-…`` beside the first file (``…-group-GROUP-…`` for
    one parameter group's figures)."""
    paths = [Path(p) for p in paths]
    sweeps = {}
    for path in paths:
        ds = read(path)
        if file_kind(ds) != "sweep":
            raise ValueError(f"{path} is not a sweep: only sweeps are put side by side")
        if group is not None:
            ds = select_group(ds, group)
        sweeps[path.stem] = ds.isel(seed=0) if "seed" in ds.dims else ds
    if len(set(sweeps)) < len(paths):
        raise ValueError("the sweeps to put side by side need different file names")
    if not frontier_only:
        check_comparable(sweeps)
    out_dir = Path(out_dir or paths[0].parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / ("compare-" + "-".join(sweeps) + (f"-group-{group}" if group else ""))
    sns.set_theme(style="whitegrid", context="paper")
    figures = [] if frontier_only else [(m, plot_comparison(sweeps, m).figure) for m in metrics]
    figures += [(f"frontier-{cost}", plot_frontier(sweeps, cost).figure) for cost in COSTS]
    written = []
    for name, figure in figures:
        written += save_figure(figure, stem.with_name(f"{stem.name}-{name}"), formats)
    return written
