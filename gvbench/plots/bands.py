"""A metric with its 95% band against τ on log axes, from a sweep's cells."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from gvbench.harness.quantities import QUANTITIES

Z95 = 1.96


def is_signed(metric: str) -> bool:
    """Whether ``metric`` is an unbiased estimate of a quantity >= 0 (bias²), so of either sign
    near zero: a log axis shows it only where it is resolved from zero."""
    return metric in QUANTITIES and QUANTITIES[metric].signed


def long_table(ds: xr.Dataset, metric: str) -> pd.DataFrame:
    """One row per finished cell: label, τ, K, B, value and its 95% band."""
    table = ds[[metric, f"{metric}_se", "label"]].to_dataframe().reset_index()
    table = table.rename(columns={metric: "value", f"{metric}_se": "se"}).dropna(subset=["value"])
    table["low"] = table["value"] - Z95 * table["se"]
    table["high"] = table["value"] + Z95 * table["se"]
    return table


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


def line_with_band(
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
