"""Estimators and sweeps side by side: the variance–cost frontier, and the same cells of
several sweeps of one problem."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D

from gvbench.harness.compare import UNITS, check_comparable, cost_points, frontier
from gvbench.harness.quantities import title
from gvbench.plots.bands import Z95, is_signed, line_with_band, long_table, pool_seeds
from gvbench.plots.style import DECADES, add_legend, estimator_style, legend_for, tidy_log_axis

# The frontier's panels (one per τ, B, seed and sweep) wrap after this many columns.
FRONTIER_COLUMNS = 3


def plot_frontier(
    sweeps: xr.Dataset | Mapping[str, xr.Dataset], cost: str = "evaluations"
) -> sns.FacetGrid:
    """The variance–cost plane: one point per (estimator, K) with its 95% bar, one panel per
    τ and B (and per sweep when several, of any task, are put side by side), wrapped
    :data:`FRONTIER_COLUMNS` to a row. The Pareto front of the unbiased estimators (nothing
    cheaper has lower variance) is joined by a dashed line; unbiased points off it are
    lighter; biased ones are open (their variance is not their error). At equal cost lower
    is better: within a budget C an estimator of cost c averages C/c draws. The legend holds
    the estimators and this key; the caption below the panels says N."""
    named = {"": sweeps} if isinstance(sweeps, xr.Dataset) else dict(sweeps)
    points = pd.concat(
        [_frontier_points(name, ds, cost) for name, ds in named.items()], ignore_index=True
    )
    top = float(points["variance"].max())
    floor = max(float(points.loc[points["variance"] > 0, "variance"].min()), top / 10**DECADES)
    panels = list(dict.fromkeys(points["panel"]))
    grid = sns.FacetGrid(
        points,
        col="panel",
        col_order=panels,
        col_wrap=min(len(panels), FRONTIER_COLUMNS),
        height=2.9,
        aspect=1.15,
    )
    for panel, part in points.groupby("panel", sort=False):
        _frontier_panel(grid.axes_dict[panel], part, floor)
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(floor / 2, top * 3)
        tidy_log_axis(ax)
        tidy_log_axis(ax, "x")
    grid.set_axis_labels(UNITS[cost], title("variance"))
    grid.set_titles(col_template="{col_name}")
    drawn = list(dict.fromkeys(points["label"]))
    handles = [*legend_for(drawn), *_frontier_key(floor)]
    add_legend(grid, handles, "estimator")
    tasks = ", ".join(dict.fromkeys(str(ds.attrs.get("task", "")) for ds in named.values()))
    groups = ", ".join(
        dict.fromkeys(str(ds.attrs["group"]) for ds in named.values() if "group" in ds.attrs)
    )
    reps = ", ".join(dict.fromkeys(str(ds.attrs.get("reps", "?")) for ds in named.values()))
    grid.figure.suptitle(
        f"{tasks}{f' (group {groups})' if groups else ''}: variance against its cost", y=1.02
    )
    grid.figure.text(
        0.5,
        -0.03,
        f"At equal cost lower is better (a budget C buys C/c draws of cost c). Bars: 95%; "
        f"N = {reps} draws per cell.",
        ha="center",
        va="top",
        fontsize=8,
    )
    return grid


def _frontier_points(name: str, ds: xr.Dataset, cost: str) -> pd.DataFrame:
    """One sweep's (estimator, K) points, each with its label and its panel's title."""
    points = frontier(cost_points(ds, cost))
    points["label"] = points["estimator"].map(ds[["label"]].to_dataframe()["label"])
    prefix = f"{name}: " if name else ""
    points["panel"] = [
        f"{prefix}B = {b}, τ = {tau:g}"
        for b, tau in zip(points["batch_size"], points["tau"], strict=True)
    ]
    for replicate, word in (("seed", "seed"), ("grid_point", "point")):
        if replicate in points.columns:  # each seed, or task of a grid, in panels of its own
            points["panel"] += [f", {word} {v}" for v in points[replicate]]
    return points


def _frontier_panel(ax: plt.Axes, part: pd.DataFrame, floor: float) -> None:
    """One τ and B: the front dashed, each point with its bar (▼ on the floor below it)."""
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


def _frontier_key(floor: float) -> list[Line2D]:
    """What the frontier's lines and markers mean, as legend entries."""
    grey = dict(color="grey", markersize=5)
    return [
        Line2D([], [], ls="--", lw=1, color="grey", label="Pareto front (unbiased)"),
        Line2D([], [], ls="none", marker="o", alpha=0.45, label="unbiased, off the front", **grey),
        Line2D([], [], ls="none", marker="o", markerfacecolor="none", label="biased", **grey),
        Line2D(
            [],
            [],
            ls="none",
            marker="v",
            markerfacecolor="none",
            label=f"below {floor:.0e}",
            **grey,
        ),
    ]


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
            line_with_band(
                cells, color=colour, floor=floor, marker=marker, signed=is_signed(metric), ls=style
            )
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(floor / 2, top * 2)
        tidy_log_axis(ax)
    grid.set_axis_labels("temperature τ", title(metric))
    grid.set_titles(col_template="K = {col_name}", row_template="B = {row_name}")
    handles = legend_for(list(dict.fromkeys(table["label"])))
    handles += [
        Line2D([], [], color="black", ls=styles[i % len(styles)], label=name)
        for i, name in enumerate(sweeps)
    ]
    add_legend(grid, handles, "estimator, sweep")
    grid.figure.suptitle(
        f"{next(iter(sweeps.values())).attrs.get('task', '')}: {title(metric)} "
        f"of {len(sweeps)} sweeps of one problem (line style: sweep; bands: 95%)",
        y=1.02,
    )
    return grid
