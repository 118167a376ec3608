"""Figures of trained experiments: results over seeds, with error bars, and the gradient
variance measured during training.

Colours and markers are :func:`gvbench.plots.estimator_style`'s, as in every gvbench figure.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from gvbench.plots import estimator_style, legend_for, tidy_log_axis


def over_seeds(values: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Mean over seeds, its SE (sample sd / √n) and n, ignoring runs that diverged (NaN)."""
    n = values.notnull().sum("seed")
    mean = values.mean("seed")
    se = values.std("seed", ddof=1) / np.sqrt(n)
    return mean, se.where(n > 1), n


SYMBOLS = {"tau": "τ", "batch_size": "B", "arity": "a", "max_length": "L"}


def wrapped_title(figure: plt.Figure, text: str) -> None:
    """A suptitle wrapped to the figure's width (one-panel figures are narrow)."""
    characters = int(figure.get_figwidth() * 15)
    figure.suptitle(textwrap.fill(text, max(characters, 40)), fontsize=10)


def panels(count: int, width: float = 4.0, height: float = 3.2) -> tuple[plt.Figure, list]:
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return figure, list(axes[0])


def jitter(index: int, count: int, spread: float = 0.06) -> float:
    """A multiplicative offset so that error bars of runs at the same x do not overlap."""
    return float(10 ** (spread * (index - (count - 1) / 2)))


def plot_training_variance(ds: xr.Dataset, panel: str, title: str) -> plt.Figure:
    """The gradient variance measured during training against the step, one line per run
    (mean over seeds and every dimension but ``panel``), one panel per value of ``panel``."""
    values = ds["gradient_variance"]
    others = [d for d in values.dims if d not in ("run", "step", panel)]
    mean = values.mean(others)
    runs = [str(r) for r in ds["run"].values]
    figure, axes = panels(ds.sizes[panel])
    for ax, value in zip(axes, ds[panel].values, strict=True):
        drawn = []
        for run in runs:
            line = mean.sel(run=run, **{panel: value}).dropna("step")
            if line.size == 0 or not (line > 0).all():
                continue
            colour, marker = estimator_style(run)
            ax.plot(line["step"], line, color=colour, marker=marker, ms=3.5, lw=1.2)
            drawn.append(run)
        if drawn:
            ax.set_yscale("log")
            tidy_log_axis(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("gradient variance (trace)")
        ax.set_title(f"{SYMBOLS.get(panel, panel)} = {value:g}")
    axes[-1].legend(handles=legend_for(runs), title="estimator", fontsize=8, loc="best")
    averaged = " and ".join(
        "seeds" if d == "seed" else f"{SYMBOLS.get(d, d)} ({ds.sizes[d]} values)" for d in others
    )
    wrapped_title(
        figure, f"{title}: trace of the gradient covariance during training (mean over {averaged})"
    )
    figure.tight_layout()
    return figure
