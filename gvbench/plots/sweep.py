"""Figures of one sweep: a metric against τ per K and B, Gumbel-Rao's advantage over ST-GS, and
a heat map over an estimator's variants."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from gvbench.harness.compare import option_grid, variance_ratio
from gvbench.harness.quantities import QUANTITIES, title
from gvbench.plots.bands import Z95, is_signed, line_with_band, long_table
from gvbench.plots.style import (
    DECADES,
    add_legend,
    estimator_dashes,
    estimator_style,
    legend_for,
    measured,
    tidy_log_axis,
)


def plot_metric(ds: xr.Dataset, metric: str, decades: float = DECADES) -> sns.FacetGrid:
    """``metric`` against τ, one line per estimator, faceted by K (columns) and B (rows).

    The log axis spans what is drawn (at most ``decades`` below its largest value; smaller
    resolved values are marked ▼ on its floor). Estimates within two standard errors of zero
    are open markers at their upper bound (see :func:`~gvbench.plots.bands.line_with_band`).
    bias² leaves out the unbiased estimators (their bias is 0 by construction, and its estimate
    is noise around 0).
    """
    table = long_table(ds, metric)
    of_bias = metric in QUANTITIES and QUANTITIES[metric].measures_bias
    if of_bias and "unbiased" in ds:
        unbiased = set(ds["label"].values[ds["unbiased"].values.astype(bool)])
        table = table[~table["label"].isin(unbiased)]
    order = [label for label in dict.fromkeys(ds["label"].values) if label in set(table["label"])]
    signed = is_signed(metric)
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
            line_with_band(
                part,
                color=colour,
                floor=floor,
                marker=marker,
                signed=signed,
                ls=estimator_dashes(label),
            )
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_ylim(min(floor, bottom) / 2, top * 1.5)  # what is drawn, no empty margins
        tidy_log_axis(ax)
        tidy_log_axis(ax, "x")
    grid.set_axis_labels("temperature τ", title(metric))
    grid.set_titles(col_template="K = {col_name}", row_template="B = {row_name}")
    handles = legend_for(order, dashes=True)
    add_legend(grid, handles, "estimator")
    reps = ds.attrs.get("reps", "?")
    seeds = f", mean of {ds.attrs['seeds']} seeds" if "seeds" in ds.attrs else ""
    left_out = " unbiased estimators left out;" if of_bias else ""
    unresolved = (
        " open markers: within 2 SE of 0, drawn at value + 2 SE;"
        if signed and (~resolved).any()
        else ""
    )
    grid.figure.suptitle(
        f"{ds.attrs.get('task', '')}: {title(metric)} of {measured(ds)} "
        f"(N = {reps} draws per cell{seeds}; bands: 95%;{left_out}{unresolved} ▼: below "
        f"{floor:.0e})",
        y=1.02,
    )
    return grid


def plot_gumbel_rao_advantage(ds: xr.Dataset) -> plt.Figure | None:
    """ST-GS variance over GR-MCK variance against τ, one line per K (the paper's Figure 1
    story); of one parameter group's variance for a :func:`~gvbench.harness.select_group`
    view (a supernet's total can hide what Gumbel-Rao does to its architecture)."""
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
    grid.map_dataframe(line_with_band)
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("temperature τ", "variance ST-GS / GR-MCK")
    grid.set_titles(col_template="B = {col_name}")
    grid.add_legend(title="K")
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        tidy_log_axis(ax)
    of = f", group {ds.attrs['group']}" if "group" in ds.attrs else ""
    grid.figure.suptitle(
        f"Variance reduction of Gumbel-Rao over ST-GS{of} (same bias; > 1: GR-MCK lower)\n"
        f"N = {ds.attrs.get('reps', '?')} draws per cell, bands: 95% (delta method, log scale)",
        y=1.12,
    )
    return grid.figure


def plot_option_grid(ds: xr.Dataset, name: str, option: str, metric: str = "mse") -> plt.Figure:
    """A heat map of ``metric`` over an estimator's variants (``option``, rows) and τ
    (columns), one panel per K and B that vary: e.g. decoupled ST's (τ_f, τ_b) grid. Each
    cell is annotated with its value and SE; the colour is log₁₀ of the value."""
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
            cbar_kws={"label": f"log₁₀ {title(metric)}"},
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
        f"{ds.attrs.get('task', '')}: {title(metric)} of {name} over {option} and "
        f"τ (N = {ds.attrs.get('reps', '?')} draws per cell)",
        y=1.02,
        fontsize=10,
    )
    figure.tight_layout()
    return figure
