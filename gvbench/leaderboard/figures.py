"""The leaderboard's figures of a column: the variance–cost frontier of its sweep, and its
training curves with bands over seeds. They read results; they never run an estimator."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import gvbench.estimators as E
from gvbench.plots import estimator_style, legend_for, plot_frontier


def frontier_figure(ds: xr.Dataset, tau: float) -> plt.Figure | None:
    """Variance against objective evaluations per draw at the check's τ (every K the sweep
    has): the Pareto front of the unbiased estimators; ``None`` where no cell finished."""
    at_tau = ds.sel(tau=[tau])
    if not (at_tau["status"] == "done").any():
        return None
    return plot_frontier(at_tau, cost="evaluations").figure


def training_figure(
    curves: Mapping[str, xr.DataArray], selection: str, title: str
) -> plt.Figure | None:
    """The validation figure against the step, one line per estimator: the mean over seeds
    with a band of ± 1 SE (sd/√n of the seeds); ``None`` where no run has a curve."""
    drawn = {name: c for name, c in curves.items() if c.size and "step" in c.coords}
    if not drawn:
        return None
    figure, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = []
    for name, values in drawn.items():
        label = E.info(name).label
        colour, marker = estimator_style(label)
        n = values.notnull().sum("seed")
        mean = values.mean("seed")
        se = (values.std("seed", ddof=1) / np.sqrt(n)).where(n > 1, 0.0)
        steps = values["step"].values
        ax.plot(steps, mean, color=colour, marker=marker, ms=3, lw=1.2)
        ax.fill_between(steps, mean - se, mean + se, color=colour, alpha=0.2, lw=0)
        labels.append(label)
    ax.set_xlabel("training step")
    ax.set_ylabel(selection)
    ax.set_title(f"{title}: mean over seeds ± 1 SE", fontsize=10)
    ax.legend(handles=legend_for(labels), title="estimator", fontsize=7, loc="best")
    figure.tight_layout()
    return figure
