"""Figures of the learning experiments (ListOps, VAE): results over seeds, with error bars.

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


def _title(figure: plt.Figure, text: str) -> None:
    """A suptitle wrapped to the figure's width (one-panel figures are narrow)."""
    characters = int(figure.get_figwidth() * 15)
    figure.suptitle(textwrap.fill(text, max(characters, 40)), fontsize=10)


def _panels(count: int, width: float = 4.0, height: float = 3.2) -> tuple[plt.Figure, list]:
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return figure, list(axes[0])


def _jitter(index: int, count: int, spread: float = 0.06) -> float:
    """A multiplicative offset so that error bars of runs at the same x do not overlap."""
    return float(10 ** (spread * (index - (count - 1) / 2)))


def plot_listops_accuracy(ds: xr.Dataset) -> plt.Figure:
    """Test accuracy against τ, one panel per maximum length L, mean ± SE over seeds."""
    mean, se, n = over_seeds(ds["test_accuracy"])
    runs = [str(r) for r in ds["run"].values]
    figure, axes = _panels(ds.sizes["max_length"])
    for ax, length in zip(axes, ds["max_length"].values, strict=True):
        for i, run in enumerate(runs):
            colour, marker = estimator_style(run)
            m, s = mean.sel(run=run, max_length=length), se.sel(run=run, max_length=length)
            x = ds["tau"].values * _jitter(i, len(runs))
            ax.errorbar(x, m, yerr=s, color=colour, marker=marker, ms=4, capsize=2, lw=1.2)
        if "test_majority_accuracy" in ds:
            majority = float(ds["test_majority_accuracy"].sel(max_length=length).mean())
            ax.axhline(majority, color="grey", ls=":", lw=1)
            ax.annotate(
                "majority class",
                (ds["tau"].values.min(), majority),
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
                color="grey",
            )
        ax.set_xscale("log")
        ax.set_xticks(ds["tau"].values, [f"{t:g}" for t in ds["tau"].values])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("temperature τ")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"L = {length}")
    axes[-1].legend(handles=legend_for(runs), title="estimator", fontsize=8, loc="best")
    seeds = int(n.max())
    _title(
        figure,
        f"ListOps: test accuracy of the model selected on validation (mean ± SE over {seeds} seeds)",
    )
    figure.tight_layout()
    return figure


def plot_vae_bound(ds: xr.Dataset) -> plt.Figure:
    """Test bound on −log p(x) against arity, one panel per batch size, mean ± SE over seeds."""
    mean, se, n = over_seeds(ds["test_iw_nll"])
    runs = [str(r) for r in ds["run"].values]
    figure, axes = _panels(ds.sizes["batch_size"])
    arities = ds["arity"].values
    for ax, b in zip(axes, ds["batch_size"].values, strict=True):
        for i, run in enumerate(runs):
            colour, marker = estimator_style(run)
            x = arities * _jitter(i, len(runs), 0.02)
            ax.errorbar(
                x,
                mean.sel(run=run, batch_size=b),
                yerr=se.sel(run=run, batch_size=b),
                color=colour,
                marker=marker,
                ms=4,
                capsize=2,
                lw=1.2,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(arities, [str(a) for a in arities])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("arity a of each latent")
        ax.set_ylabel("test −log p(x) bound (nats)")
        ax.set_title(f"B = {b}")
    axes[-1].legend(handles=legend_for(runs), title="estimator", fontsize=8, loc="best")
    samples = ds["test_iw_nll"].attrs.get("long_name", "")
    _title(
        figure,
        f"Discrete VAE: {samples or 'test bound'}, lower is better (mean ± SE over "
        f"{int(n.max())} seeds)",
    )
    figure.tight_layout()
    return figure


def plot_training_variance(ds: xr.Dataset, panel: str, title: str) -> plt.Figure:
    """The gradient variance measured during training against the step, one line per run
    (mean over seeds and every dimension but ``panel``), one panel per value of ``panel``."""
    values = ds["gradient_variance"]
    others = [d for d in values.dims if d not in ("run", "step", panel)]
    mean = values.mean(others)
    runs = [str(r) for r in ds["run"].values]
    figure, axes = _panels(ds.sizes[panel])
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
    _title(
        figure, f"{title}: trace of the gradient covariance during training (mean over {averaged})"
    )
    figure.tight_layout()
    return figure
