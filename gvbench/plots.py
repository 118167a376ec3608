"""Figures of sweep results (seaborn). Plots read datasets; they never run estimators."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is assumed

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.lines import Line2D

from gvbench.harness.compare import (
    COSTS,
    UNITS,
    check_comparable,
    cost_points,
    frontier,
    variance_ratio,
)

TITLES = {"variance": "variance (trace)", "bias2": "bias²", "mse": "MSE"}
Z95 = 1.96
# A log axis shows this many decades below its largest value; smaller values are marked ▼ on
# its floor (ST's variance of 1e-156 at τ = 0.01 would otherwise flatten every other line).
DECADES = 6

# One colour and marker per estimator in every figure. The paper's estimators get the
# Okabe-Ito colours (colour-blind safe); the others Paul Tol's muted set; markers tell apart
# what a colour-blind reader or a grey-scale print could still confuse.
STYLE = {
    "ST": ("#D55E00", "v"),
    "ST-GS": ("#E69F00", "s"),
    "GS": ("#009E73", "^"),
    "GR-MCK": ("#0072B2", "o"),
    "REINFORCE": ("#CC79A7", "D"),
    "RLOO": ("#56B4E9", "P"),
    "ReinMax": ("#000000", "X"),
    "GST-1.0": ("#332288", "<"),
    "GST-p": ("#88CCEE", ">"),
    "US-BL": ("#44AA99", "h"),
    "REBAR": ("#117733", "p"),
    "RELAX": ("#999933", "*"),
    "FouST (reconstruction)": ("#882255", "d"),
    "ARM": ("#AA4499", "H"),
    "DisARM": ("#DDCC77", "8"),
    "Exact": ("#777777", "."),
    # the field's estimators since 2021: Paul Tol's vibrant set (every filled marker is taken)
    "IndeCateR": ("#EE3377", "s"),
    "ARMS": ("#0077BB", "^"),
    "CARMS": ("#33BBEE", "v"),
    "DisARM (categorical)": ("#CC3311", "8"),
    "Double CV": ("#009988", "D"),
    "RODEO": ("#EE7733", "*"),
    "Decoupled ST": ("#CC6677", "<"),
}
_OTHERS = sns.color_palette("colorblind", 10).as_hex()


def estimator_style(label: str) -> tuple[str, str]:
    """``(colour, marker)`` of an estimator's label, the same in every figure.

    GR-MC10, GR-MC100, … share GR-MCK's hue, lighter for smaller K; a variant
    ("Decoupled ST (forward_tau=0.5)") its estimator's hue, shaded by its options; a label
    gvbench does not know (a user's estimator) gets a stable colour from its name.
    """
    if label in STYLE:
        return STYLE[label]
    variant = re.fullmatch(r"(.+) \((.+=.+)\)", label)  # "Decoupled ST (forward_tau=0.5)"
    if variant and variant.group(1) in STYLE:
        colour, marker = STYLE[variant.group(1)]
        lighten = (0.0, 0.3, 0.55)[sum(map(ord, variant.group(2))) % 3]
        rgb = np.array(mcolors.to_rgb(colour))
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), marker
    match = re.fullmatch(r"GR-MC(\d+)", label)
    if match:
        lighten = max(0.0, 0.6 - 0.2 * np.log10(int(match.group(1))))  # K = 1000: full colour
        rgb = np.array(mcolors.to_rgb(STYLE["GR-MCK"][0]))
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), "o"
    return _OTHERS[sum(map(ord, label)) % len(_OTHERS)], "o"


def tidy_log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log-axis ticks that stay readable: no minor-tick labels, and on a range narrower than
    a decade plain numbers (0.8, 1, 1.5) instead of "6×10⁰"."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    target.set_minor_formatter(ticker.NullFormatter())
    if low > 0 and high / low < 10:
        target.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        target.set_major_formatter(ticker.FormatStrFormatter("%g"))


def legend_for(labels: Sequence[str]) -> list[Line2D]:
    """Legend handles for the estimators actually drawn (no entry without a line)."""
    handles = []
    for label in labels:
        colour, marker = estimator_style(label)
        handles.append(Line2D([], [], color=colour, marker=marker, markersize=4, label=label))
    return handles


def long_table(ds: xr.Dataset, metric: str) -> pd.DataFrame:
    """One row per finished cell: label, τ, K, B, value and its 95% band."""
    table = ds[[metric, f"{metric}_se", "label"]].to_dataframe().reset_index()
    table = table.rename(columns={metric: "value", f"{metric}_se": "se"}).dropna(subset=["value"])
    table["low"] = table["value"] - Z95 * table["se"]
    table["high"] = table["value"] + Z95 * table["se"]
    return table


def _line_with_band(
    data: pd.DataFrame,
    color: object = None,
    floor: float | None = None,
    marker: str = "o",
    signed: bool = False,
    **kwargs: object,
) -> None:
    """A metric against τ with its 95% band on log axes.

    Estimates resolved from zero are drawn at their value, joined, with their band; those
    below ``floor`` (tiny but resolved, such as ST's variance of 1e-156) as ▼ on the floor.
    A ``signed`` metric (bias², estimated without bias and so of either sign near zero) within
    two standard errors of zero is not a value a log axis can show: it is an open marker at
    its upper bound (value + 2 SE) with a line down to the axis, never a point at the floor
    among resolved ones.
    """
    ax = plt.gca()
    data = data.sort_values("tau")
    if data.empty:
        return
    resolved = data["value"] >= 2 * data["se"] if signed else data["value"] > 0
    floor = floor if floor is not None else data.loc[data["value"] > 0, "value"].min() * 1e-3
    if not np.isfinite(floor):
        floor = float((data["value"] + 2 * data["se"]).max()) * 1e-3
    kept = data[resolved]
    if not kept.empty:
        shown = kept["value"].clip(lower=floor)
        ax.plot(kept["tau"], shown, marker=marker, markersize=3.5, color=color, **kwargs)
        below = kept["value"] < floor
        if below.any():
            ax.plot(
                kept.loc[below, "tau"], np.full(int(below.sum()), floor), "v", color=color, ms=6
            )
        ax.fill_between(
            kept["tau"],
            kept["low"].clip(lower=floor),
            kept["high"].clip(lower=floor),
            color=color,
            alpha=0.2,
            lw=0,
        )
    open_ = data[~resolved]
    if not open_.empty:
        upper = (open_["value"] + 2 * open_["se"]).clip(lower=floor)
        ax.vlines(open_["tau"], floor, upper, color=color, lw=0.8, alpha=0.6)
        ax.plot(
            open_["tau"],
            upper,
            ls="none",
            marker=marker,
            markersize=5,
            markerfacecolor="none",
            color=color,
        )


def plot_metric(ds: xr.Dataset, metric: str, decades: float = DECADES) -> sns.FacetGrid:
    """``metric`` against τ, one line per estimator, faceted by K (columns) and B (rows).

    The log axis spans what is drawn (at most ``decades`` below its largest value; smaller
    resolved values are marked ▼ on its floor). Estimates within two standard errors of zero
    are open markers at their upper bound (see :func:`_line_with_band`). bias² leaves out the
    unbiased estimators (their bias is 0 by construction, and its estimate is noise around 0).
    """
    table = long_table(ds, metric)
    if metric == "bias2" and "unbiased" in ds:
        unbiased = set(ds["label"].values[ds["unbiased"].values.astype(bool)])
        table = table[~table["label"].isin(unbiased)]
    order = [label for label in dict.fromkeys(ds["label"].values) if label in set(table["label"])]
    signed = metric == "bias2"
    resolved = table["value"] >= 2 * table["se"] if signed else table["value"] > 0
    drawn = pd.concat(
        [
            table.loc[resolved, "value"],
            table.loc[~resolved, "value"] + 2 * table.loc[~resolved, "se"],
        ]
    )
    drawn = drawn[drawn > 0]
    top = float(drawn.max()) if not drawn.empty else 1.0
    floor = max(float(drawn.min()), top / 10**decades) if not drawn.empty else top / 10**decades
    bottom = float(table.loc[resolved, "low"].clip(lower=floor).min()) if resolved.any() else floor
    grid = sns.FacetGrid(
        table,
        col="k",
        row="batch_size",
        margin_titles=True,
        height=2.8,
        aspect=1.1,
        sharey=True,
    )
    for label in order:
        colour, marker = estimator_style(label)
        rows = table[table["label"] == label]
        for (b, k), part in rows.groupby(["batch_size", "k"]):
            plt.sca(grid.axes[list(grid.row_names).index(b), list(grid.col_names).index(k)])
            _line_with_band(part, color=colour, floor=floor, marker=marker, signed=signed)
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(min(floor, bottom) / 2, top * 1.5)  # what is drawn, no empty margins
        tidy_log_axis(ax)
    grid.set_axis_labels("temperature τ", TITLES.get(metric, metric))
    grid.set_titles(col_template="K = {col_name}", row_template="B = {row_name}")
    grid.add_legend(legend_data={h.get_label(): h for h in legend_for(order)}, title="estimator")
    reps = ds.attrs.get("reps", "?")
    seeds = f", mean of {ds.attrs['seeds']} seeds" if "seeds" in ds.attrs else ""
    left_out = " unbiased estimators left out;" if metric == "bias2" else ""
    unresolved = (
        " open markers: within 2 SE of 0, drawn at value + 2 SE;"
        if signed and (~resolved).any()
        else ""
    )
    grid.figure.suptitle(
        f"{ds.attrs.get('task', '')}: {TITLES.get(metric, metric)} of the gradient "
        f"(N = {reps} draws per cell{seeds}; bands: 95%;{left_out}{unresolved} ▼: below "
        f"{floor:.0e})",
        y=1.02,
    )
    return grid


def plot_gumbel_rao_advantage(ds: xr.Dataset) -> plt.Figure | None:
    """ST-GS variance over GR-MCK variance against τ, one line per K (the paper's Figure 1 story)."""
    names = list(ds["estimator"].values)
    if "gumbel_rao" not in names or "st_gumbel_softmax" not in names:
        return None
    compared = variance_ratio(ds)
    ratio, log_se = compared["ratio"], compared["log_se"]
    table = xr.Dataset({"value": ratio, "log_se": log_se}).to_dataframe().reset_index().dropna()
    table["low"] = table["value"] * np.exp(-Z95 * table["log_se"])
    table["high"] = table["value"] * np.exp(Z95 * table["log_se"])
    table["se"] = 0.0  # a ratio of variances is resolved from zero; its band is on log scale
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
        tidy_log_axis(ax)
    grid.figure.suptitle(
        "Variance reduction of Gumbel-Rao over ST-GS (same bias; > 1: GR-MCK lower)\n"
        f"N = {ds.attrs.get('reps', '?')} draws per cell, bands: 95% (delta method, log scale)",
        y=1.12,
    )
    return grid.figure


def plot_frontier(
    sweeps: xr.Dataset | Mapping[str, xr.Dataset], cost: str = "evaluations"
) -> sns.FacetGrid:
    """The variance–cost plane: one point per (estimator, K) with its 95% bar, per τ
    (columns) and B (rows; one row per sweep and B when several sweeps, of any task, are
    put side by side). The Pareto front of the unbiased estimators (nothing cheaper has lower
    variance) is joined by a dashed line; unbiased points off it are lighter; biased ones are
    open (their variance is not their error). At equal cost lower is better: within a budget C
    an estimator of cost c averages C/c draws."""
    named = {"": sweeps} if isinstance(sweeps, xr.Dataset) else dict(sweeps)
    tables = []
    for name, ds in named.items():
        points = frontier(cost_points(ds, cost))
        points["label"] = points["estimator"].map(ds[["label"]].to_dataframe()["label"])
        prefix = f"{name}: " if name else ""
        points["row"] = [f"{prefix}B = {b}" for b in points["batch_size"]]
        for replicate, word in (("seed", "seed"), ("grid_point", "point")):
            if replicate in points.columns:  # each seed, or task of a grid, on a row of its own
                points["row"] += [f", {word} {v}" for v in points[replicate]]
        tables.append(points)
    points = pd.concat(tables, ignore_index=True)
    top = float(points["variance"].max())
    floor = max(float(points.loc[points["variance"] > 0, "variance"].min()), top / 10**DECADES)
    grid = sns.FacetGrid(points, col="tau", row="row", margin_titles=True, height=2.9, aspect=1.15)
    for (row, tau), part in points.groupby(["row", "tau"]):
        ax = grid.axes[list(grid.row_names).index(row), list(grid.col_names).index(tau)]
        front = part[part["on_front"]].sort_values("cost")
        ax.step(front["cost"], front["variance"], where="post", color="grey", lw=1, ls="--")
        for _, point in part.iterrows():
            colour, marker = estimator_style(point["label"])
            value, half = point["variance"], Z95 * point["variance_se"]
            if value < floor:  # ST's 1e-14 would flatten the plane: ▼ on the floor
                ax.plot(point["cost"], floor, "v", color=colour, ms=6, markerfacecolor="none")
                continue
            ax.errorbar(
                point["cost"],
                value,
                yerr=[[min(half, value * 0.9)], [half]],
                color=colour,
                marker=marker,
                ms=5,
                markerfacecolor=colour if point["unbiased"] else "none",
                alpha=1.0 if point["on_front"] or not point["unbiased"] else 0.45,
                capsize=1.5,
                lw=0.8,
            )
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(floor / 2, top * 3)
        tidy_log_axis(ax)
        tidy_log_axis(ax, "x")
    grid.set_axis_labels(UNITS[cost], "variance (trace)")
    grid.set_titles(col_template="τ = {col_name}", row_template="{row_name}")
    drawn = list(dict.fromkeys(points["label"]))
    grid.add_legend(legend_data={h.get_label(): h for h in legend_for(drawn)}, title="estimator")
    tasks = ", ".join(dict.fromkeys(str(ds.attrs.get("task", "")) for ds in named.values()))
    reps = ", ".join(dict.fromkeys(str(ds.attrs.get("reps", "?")) for ds in named.values()))
    grid.figure.suptitle(
        f"{tasks}: variance against its cost ({UNITS[cost]}); dashed: the Pareto front of the "
        "unbiased estimators, lighter: unbiased points off it, open: biased estimators (▼: "
        f"below {floor:.0e}); bars: 95%; N = {reps} draws per cell",
        y=1.03,
    )
    return grid


def plot_comparison(sweeps: Mapping[str, xr.Dataset], metric: str) -> sns.FacetGrid:
    """``metric`` of the same cells of several sweeps of one problem against τ: one colour
    per estimator, one line style per sweep (two commits, two machines), 95% bands."""
    check_comparable(sweeps)
    styles = ["-", "--", ":", "-."]
    tables = []
    for index, (name, ds) in enumerate(sweeps.items()):
        if "seed" in ds.dims:
            ds = pool_seeds(ds)
        table = long_table(ds, metric)
        table["sweep"], table["style"] = name, styles[index % len(styles)]
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    positive = table.loc[table["value"] > 0, "value"]
    top = float(positive.max()) if not positive.empty else 1.0
    floor = max(float(positive.min()), top / 10**DECADES) if not positive.empty else top / 1e6
    grid = sns.FacetGrid(
        table, col="k", row="batch_size", margin_titles=True, height=2.8, aspect=1.1
    )
    for (label, _, style), part in table.groupby(["label", "sweep", "style"]):
        colour, marker = estimator_style(label)
        for (b, k), cells in part.groupby(["batch_size", "k"]):
            plt.sca(grid.axes[list(grid.row_names).index(b), list(grid.col_names).index(k)])
            _line_with_band(
                cells, color=colour, floor=floor, marker=marker, signed=metric == "bias2", ls=style
            )
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(floor / 2, top * 2)
        tidy_log_axis(ax)
    grid.set_axis_labels("temperature τ", TITLES.get(metric, metric))
    grid.set_titles(col_template="K = {col_name}", row_template="B = {row_name}")
    handles = legend_for(list(dict.fromkeys(table["label"])))
    handles += [
        Line2D([], [], color="black", ls=styles[i % len(styles)], label=name)
        for i, name in enumerate(sweeps)
    ]
    grid.add_legend(legend_data={h.get_label(): h for h in handles}, title="estimator, sweep")
    grid.figure.suptitle(
        f"{next(iter(sweeps.values())).attrs.get('task', '')}: {TITLES.get(metric, metric)} "
        f"of {len(sweeps)} sweeps of one problem (line style: sweep; bands: 95%)",
        y=1.02,
    )
    return grid


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
    figures += [(f"frontier-{cost}", plot_frontier(ds, cost).figure) for cost in COSTS]
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
            tidy_log_axis(ax)
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


def plot_files(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] = ("variance", "bias2", "mse"),
    formats: Sequence[str] = ("png", "pdf"),
    frontier_only: bool = False,
) -> list[Path]:
    """Several sweeps side by side: of one problem, each metric with a line style per sweep
    and their frontiers in one figure; of different problems (``frontier_only``), only the
    frontiers. Named ``compare-<stems>-…`` beside the first file."""
    from gvbench.harness.store import read

    paths = [Path(p) for p in paths]
    sweeps = {}
    for path in paths:
        ds = read(path)
        if file_kind(ds) != "sweep":
            raise ValueError(f"{path} is not a sweep: only sweeps are put side by side")
        sweeps[path.stem] = ds.isel(seed=0) if "seed" in ds.dims else ds
    if len(set(sweeps)) < len(paths):
        raise ValueError("the sweeps to put side by side need different file names")
    if not frontier_only:
        check_comparable(sweeps)
    out_dir = Path(out_dir or paths[0].parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / ("compare-" + "-".join(sweeps))
    sns.set_theme(style="whitegrid", context="paper")
    figures = [] if frontier_only else [(m, plot_comparison(sweeps, m).figure) for m in metrics]
    figures += [(f"frontier-{cost}", plot_frontier(sweeps, cost).figure) for cost in COSTS]
    written = []
    for name, figure in figures:
        written += save_figure(figure, stem.with_name(f"{stem.name}-{name}"), formats)
    return written


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
        if len(x) >= 3:
            image = ax.tripcolor(
                x, y, values, shading="gouraud", cmap="viridis", vmin=0, vmax=limit
            )
        else:  # a coarse grid (--resolution 3 has one interior point) has no triangle to fill
            image = ax.scatter(x, y, c=values, s=160, cmap="viridis", vmin=0, vmax=limit)
        ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="black", lw=0.8)
        # The corners are the one-hot points: p = (1, 0, 0), (0, 1, 0), (0, 0, 1).
        for (cx, cy), text, align in (
            ((0.0, 0.0), "p₁ = 1", "right"),
            ((1.0, 0.0), "p₂ = 1", "left"),
            ((0.5, np.sqrt(3) / 2), "p₃ = 1", "center"),
        ):
            ax.annotate(
                text,
                (cx, cy),
                xytext=(0, 6 if cy else -10),
                textcoords="offset points",
                ha=align,
                fontsize=8,
            )
        ax.set_title(f"τ = {tau:g}")
        ax.set_aspect("equal")
        ax.set_xlim(-0.15, 1.15)
        ax.set_ylim(-0.12, 1.0)
        ax.axis("off")
    figure.colorbar(
        image, ax=axes[0].tolist(), shrink=0.8, label=f"log₁₀ (Var ST-GS / Var GR-MC{k})"
    )
    reps = ds.attrs.get("reps", "?")
    figure.suptitle(
        "Variance reduction of Gumbel-Rao over the probability simplex\n"
        f"(3 categories, {ds.sizes['point']} points, N = {reps} draws each; > 0: GR-MCK lower)"
    )
    return figure


def plot_option_grid(ds: xr.Dataset, name: str, option: str, metric: str = "mse") -> plt.Figure:
    """A heat map of ``metric`` over an estimator's variants (``option``, rows) and τ
    (columns), one panel per K and B that vary: e.g. decoupled ST's (τ_f, τ_b) grid. Each
    cell is annotated with its value and SE; the colour is log₁₀ of the value."""
    from gvbench.harness.compare import option_grid

    grid = option_grid(ds[[metric, f"{metric}_se"]], name, option)
    panels = [d for d in ("k", "batch_size") if d in grid.dims and grid.sizes[d] > 1]
    stacked = grid.stack(panel=panels) if panels else grid.expand_dims(panel=[0])
    count = stacked.sizes["panel"]
    figure, axes = plt.subplots(
        1,
        count,
        figsize=(1.2 + 1.1 * grid.sizes["tau"] * count, 0.9 + 0.55 * grid.sizes[option]),
        squeeze=False,
    )
    for ax, index in zip(axes[0], range(count), strict=True):
        panel = stacked.isel(panel=index).squeeze()
        values = panel[metric].transpose(option, "tau").values
        errors = panel[f"{metric}_se"].transpose(option, "tau").values
        positive = np.where(values > 0, values, np.nan)
        sns.heatmap(
            np.log10(positive),
            ax=ax,
            cmap="viridis",
            cbar=index == count - 1,
            cbar_kws={"label": f"log₁₀ {TITLES.get(metric, metric)}"},
            annot=[
                [f"{v:.2g}\n±{e:.1g}" for v, e in zip(row, erow, strict=True)]
                for row, erow in zip(values, errors, strict=True)
            ],
            fmt="",
            annot_kws={"fontsize": 7},
            xticklabels=[f"{t:g}" for t in panel["tau"].values],
            yticklabels=[f"{v:g}" for v in panel[option].values],
        )
        ax.set_xlabel("τ (backward, τ_b)")
        ax.set_ylabel(option.replace("_", " "))
        if panels:
            ax.set_title(", ".join(f"{d} = {panel[d].item()}" for d in panels), fontsize=9)
    figure.suptitle(
        f"{ds.attrs.get('task', '')}: {TITLES.get(metric, metric)} of {name} over {option} and "
        f"τ (N = {ds.attrs.get('reps', '?')} draws per cell)",
        y=1.02,
        fontsize=10,
    )
    figure.tight_layout()
    return figure
