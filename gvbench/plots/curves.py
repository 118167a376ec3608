"""A training run's curves: each quantity it measured against the step."""

from __future__ import annotations

import matplotlib.pyplot as plt
import xarray as xr

from gvbench.plots.bands import Z95
from gvbench.plots.style import tidy_log_axis


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
