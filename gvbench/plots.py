"""Figures of sweep results (seaborn). Plots read datasets; they never run estimators."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is assumed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

TITLES = {"variance": "variance (trace)", "bias2": "bias²", "mse": "MSE"}
Z95 = 1.96


def long_table(ds: xr.Dataset, metric: str) -> pd.DataFrame:
    """One row per finished cell: label, τ, K, B, value and its 95% band."""
    table = ds[[metric, f"{metric}_se", "label"]].to_dataframe().reset_index()
    table = table.rename(columns={metric: "value", f"{metric}_se": "se"}).dropna(subset=["value"])
    table["low"] = table["value"] - Z95 * table["se"]
    table["high"] = table["value"] + Z95 * table["se"]
    return table


def _line_with_band(data: pd.DataFrame, color: object = None, **kwargs: object) -> None:
    """One estimator's metric against τ, with its 95% band, on log axes (non-positive dropped)."""
    ax = plt.gca()
    data = data.sort_values("tau")
    positive = data[data["value"] > 0]
    if positive.empty:
        return
    ax.plot(positive["tau"], positive["value"], marker="o", markersize=3, color=color, **kwargs)
    floor = positive["value"].min() * 1e-3
    ax.fill_between(
        positive["tau"],
        positive["low"].clip(lower=floor),
        positive["high"],
        color=color,
        alpha=0.2,
        lw=0,
    )


def plot_metric(ds: xr.Dataset, metric: str) -> sns.FacetGrid:
    """``metric`` against τ, one line per estimator, faceted by K (columns) and B (rows)."""
    table = long_table(ds, metric)
    order = [label for label in ds["label"].values if label in set(table["label"])]
    grid = sns.FacetGrid(
        table,
        col="k",
        row="batch_size",
        hue="label",
        hue_order=order,
        margin_titles=True,
        height=2.8,
        aspect=1.1,
        sharey=True,
        palette="tab10",
    )
    grid.map_dataframe(_line_with_band)
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("temperature τ", TITLES.get(metric, metric))
    grid.set_titles(col_template="K = {col_name}", row_template="B = {row_name}")
    grid.add_legend(title="estimator")
    reps = ds.attrs.get("reps", "?")
    seeds = f", mean of {ds.attrs['seeds']} seeds" if "seeds" in ds.attrs else ""
    grid.figure.suptitle(
        f"{ds.attrs.get('task', '')}: {TITLES.get(metric, metric)} of the gradient "
        f"({reps} draws per cell{seeds}; bands: 95%; non-positive values not shown)",
        y=1.02,
    )
    return grid


def plot_gumbel_rao_advantage(ds: xr.Dataset) -> plt.Figure | None:
    """ST-GS variance over GR-MCK variance against τ, one line per K (the paper's Figure 1 story)."""
    names = list(ds["estimator"].values)
    if "gumbel_rao" not in names or "st_gumbel_softmax" not in names:
        return None
    gr = ds.sel(estimator="gumbel_rao")
    st = ds.sel(estimator="st_gumbel_softmax")
    ratio = st["variance"] / gr["variance"]
    # Delta method for a ratio of independent estimates.
    ratio_se = ratio * np.hypot(
        st["variance_se"] / st["variance"], gr["variance_se"] / gr["variance"]
    )
    table = xr.Dataset({"value": ratio, "se": ratio_se}).to_dataframe().reset_index().dropna()
    table["low"], table["high"] = (
        table["value"] - Z95 * table["se"],
        table["value"] + Z95 * table["se"],
    )
    grid = sns.FacetGrid(
        table, col="batch_size", hue="k", palette="viridis", height=3.2, aspect=1.2
    )
    grid.map_dataframe(_line_with_band)
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("temperature τ", "variance ST-GS / GR-MCK")
    grid.set_titles(col_template="B = {col_name}")
    grid.add_legend(title="K")
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    grid.figure.suptitle("Variance reduction of Gumbel-Rao over ST-GS (same bias)", y=1.04)
    return grid.figure


def plot_sweep(
    ds: xr.Dataset | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ("variance", "bias2", "mse"),
    formats: Sequence[str] = ("png", "pdf"),
    stem: str | None = None,
) -> list[Path]:
    """Write the figures of a sweep (a Dataset or a netCDF path); returns the files written."""
    if not isinstance(ds, xr.Dataset):
        from gvbench.harness.store import read

        stem = stem or Path(ds).stem
        out_dir = Path(out_dir) if out_dir is not None else Path(ds).parent
        ds = read(ds)
    else:
        stem = stem or ds.attrs.get("task", "sweep")
        out_dir = Path(out_dir or ".")
    if "seed" in ds.dims:
        ds = pool_seeds(ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    written = []
    figures = [(metric, plot_metric(ds, metric).figure) for metric in metrics]
    advantage = plot_gumbel_rao_advantage(ds)
    if advantage is not None:
        figures.append(("gumbel-rao-advantage", advantage))
    for name, figure in figures:
        written += save_figure(figure, out_dir / f"{stem}-{name}", formats)
    return written


def pool_seeds(ds: xr.Dataset) -> xr.Dataset:
    """Several seeds are independent replicates of every cell: each metric becomes their mean,
    its SE the SE of that mean (√Σse²/n), and ``attrs["seeds"]`` says how many were pooled."""
    seeds = ds.sizes["seed"]
    pooled = ds.drop_vars([n for n in ds.data_vars if "seed" in ds[n].dims])
    for name in ds.data_vars:
        if "seed" not in ds[name].dims or ds[name].dtype.kind not in "fiu":
            continue
        if name.endswith("_se"):
            pooled[name] = np.sqrt((ds[name] ** 2).sum("seed", skipna=False)) / seeds
        else:
            pooled[name] = ds[name].mean("seed", skipna=False)
        pooled[name].attrs = ds[name].attrs
    if "status" in ds:  # a cell is done when every seed is
        done = (ds["status"] == "done").all("seed")
        pooled["status"] = done.where(~done, "done").where(done, "incomplete")
    pooled.attrs = {**ds.attrs, "seeds": seeds}
    return pooled


def plot_curves(ds: xr.Dataset) -> plt.Figure:
    """A training run's curves (``curves.nc``): each measured quantity against the step."""
    names = [n for n in ds.data_vars if ds[n].dims == ("step",) and not n.endswith("_se")]
    figure, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = ds[name].dropna("step")
        ax.plot(values["step"], values, marker="o", markersize=3)
        if f"{name}_se" in ds:
            se = ds[f"{name}_se"].sel(step=values["step"])
            ax.fill_between(values["step"], values - Z95 * se, values + Z95 * se, alpha=0.2, lw=0)
        if name.startswith("gradient_variance") and (values > 0).all():
            ax.set_yscale("log")
        units = ds[name].attrs.get("units", "1")
        ax.set_xlabel("step")
        ax.set_ylabel(name.replace("_", " ") + ("" if units == "1" else f" ({units})"))
    figure.suptitle(ds.attrs.get("title", "training curves"))
    figure.tight_layout()
    return figure


def file_kind(ds: xr.Dataset) -> str | None:
    """Which of gvbench's files ``ds`` is: ``sweep``, ``simplex``, ``curves`` or None."""
    if {"p1", "p2", "p3"} <= set(ds.coords) and "point" in ds.dims and "variance" in ds:
        return "simplex"
    if {"estimator", "tau", "k", "batch_size"} <= set(ds.dims) and "variance" in ds:
        return "sweep"
    if "step" in ds.dims and ds.data_vars:
        return "curves"
    return None


def plot_file(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ("variance", "bias2", "mse"),
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """The figures of any file gvbench writes (a sweep, ``simplex.nc``, a run's ``curves.nc``).

    Raises:
        ValueError: a file of another kind (the message says which kinds are plotted).
    """
    from gvbench.harness.store import read

    path = Path(path)
    ds = read(path)
    kind = file_kind(ds)
    if kind == "sweep":
        return plot_sweep(
            ds, out_dir=out_dir or path.parent, metrics=metrics, formats=formats, stem=path.stem
        )
    if kind is None:
        raise ValueError(
            f"{path} is not a file that `gvbench plot` draws: it draws sweeps (gvbench sweep, "
            "demo), simplex.nc (gvbench simplex) and a run's curves.nc (gvbench train)"
        )
    figure = plot_simplex(ds) if kind == "simplex" else plot_curves(ds)
    out_dir = Path(out_dir or path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, out_dir / path.stem, formats)


def save_figure(figure: plt.Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``figure`` as ``stem.EXT`` for every format, close it; the files written."""
    written = []
    for extension in formats:
        target = stem.with_name(f"{stem.name}.{extension}")
        figure.savefig(target, bbox_inches="tight", dpi=150)
        written.append(target)
    plt.close(figure)
    return written


def plot_simplex(ds: xr.Dataset, k: int | None = None) -> plt.Figure:
    """The paper's Figure 1: log₁₀ tr Cov(ST-GS) − log₁₀ tr Cov(GR-MCK) over the simplex, per τ.

    ``ds`` comes from a sweep over simplex points (coords ``p1, p2, p3`` along ``point``);
    ``k`` defaults to the largest K in the file.
    """
    k = int(ds["k"].max()) if k is None else k
    ds = ds.sel(batch_size=ds["batch_size"].values[0], k=k)
    difference = np.log10(ds["variance"].sel(estimator="st_gumbel_softmax")) - np.log10(
        ds["variance"].sel(estimator="gumbel_rao")
    )
    # Barycentric (p1, p2, p3) → the plane of an equilateral triangle.
    x = ds["p2"].values + 0.5 * ds["p3"].values
    y = np.sqrt(3) / 2 * ds["p3"].values
    taus = ds["tau"].values
    figure, axes = plt.subplots(1, len(taus), figsize=(3.6 * len(taus), 3.4), squeeze=False)
    limit = float(np.nanmax(np.abs(difference.values)))
    for ax, tau in zip(axes[0], taus, strict=True):
        values = difference.sel(tau=tau).values
        image = ax.tripcolor(x, y, values, shading="gouraud", cmap="viridis", vmin=0, vmax=limit)
        ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="black", lw=0.8)
        ax.set_title(f"τ = {tau:g}")
        ax.set_aspect("equal")
        ax.axis("off")
    figure.colorbar(
        image, ax=axes[0].tolist(), shrink=0.8, label=f"log₁₀ tr Cov ST-GS − log₁₀ tr Cov GR-MC{k}"
    )
    figure.suptitle("Variance reduction of Gumbel-Rao over the probability simplex (3 categories)")
    return figure
