"""ListOps' claims (paper §5.2), decided over seeds, and its report section."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

from gvbench.plots import estimator_style, legend_for
from gvbench.report.builder import Report, plus_minus, seed_table
from gvbench.report.claims import SEED_RULE, Claim, Estimate, undecided, verdict
from gvbench.report.figures import (
    jitter,
    over_seeds,
    panels,
    plot_training_variance,
    wrapped_title,
)


def listops_claims(listops: xr.Dataset) -> list[Claim]:
    """ST-GS degrades at τ = 0.01; GR-MCK does not (it trains better than ST-GS there)."""
    taus = sorted(listops["tau"].values)
    runs = list(listops["run"].values)
    gr_runs = [r for r in runs if str(r).startswith("GR-MC")]
    if "ST-GS" not in runs or not gr_runs or len(taus) < 2:
        return []
    gr = max(gr_runs, key=lambda r: int(str(r)[5:]))
    low, next_up = taus[0], taus[1]
    claims = []
    for length in listops["max_length"].values:
        acc = listops["test_accuracy"].sel(max_length=length)

        def at(run: str, tau: float, acc: xr.DataArray = acc) -> Estimate:
            return Estimate.over_seeds(acc.sel(run=run, tau=tau))

        drop = at("ST-GS", next_up) - at("ST-GS", low)
        gr_drop = at(gr, next_up) - at(gr, low)
        claims.append(
            Claim(
                "listops",
                f"L = {length}: ST-GS's test accuracy degrades at τ = {low:g}.",
                verdict(drop.z()),
                f"ST-GS at τ = {next_up:g}: {at('ST-GS', next_up).text()}; at τ = {low:g}: "
                f"{at('ST-GS', low).text()}; drop {drop.test()}. For comparison {gr}: "
                f"{at(gr, next_up).text()} and {at(gr, low).text()}, drop {gr_drop.test()}."
                + undecided(drop),
                SEED_RULE,
                z=drop.z(),
                power=drop,
            )
        )
        gain = at(gr, low) - at("ST-GS", low)
        claims.append(
            Claim(
                "listops",
                f"L = {length}: at τ = {low:g}, GR-MCK keeps training where ST-GS does not "
                f"({gr} reaches a higher test accuracy than ST-GS).",
                verdict(gain.z()),
                f"at τ = {low:g}, {gr}: {at(gr, low).text()}; ST-GS: {at('ST-GS', low).text()}; "
                f"difference {gain.test()}." + undecided(gain),
                SEED_RULE,
                z=gain.z(),
                power=gain,
            )
        )
    return claims


def plot_listops_accuracy(ds: xr.Dataset) -> plt.Figure:
    """Test accuracy against τ, one panel per maximum length L, mean ± SE over seeds."""
    mean, se, n = over_seeds(ds["test_accuracy"])
    runs = [str(r) for r in ds["run"].values]
    figure, axes = panels(ds.sizes["max_length"])
    for ax, length in zip(axes, ds["max_length"].values, strict=True):
        for i, run in enumerate(runs):
            colour, marker = estimator_style(run)
            m, s = mean.sel(run=run, max_length=length), se.sel(run=run, max_length=length)
            x = ds["tau"].values * jitter(i, len(runs))
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
    wrapped_title(
        figure,
        f"ListOps: test accuracy of the model selected on validation (mean ± SE over {seeds} seeds)",
    )
    figure.tight_layout()
    return figure


def validation_stability(ds: xr.Dataset) -> pd.DataFrame:
    """Per (L, estimator, τ): the mean validation accuracy over seeds at the last step (± SE),
    the peak of that mean curve and its step, and how far the last step is below the peak —
    whether training holds what it reached or collapses."""
    mean, se, _ = over_seeds(ds["valid_accuracy"])
    rows = []
    for length in ds["max_length"].values:
        for run in ds["run"].values:
            for tau in ds["tau"].values:
                at = {"max_length": length, "run": run, "tau": tau}
                curve = mean.sel(at).dropna("step")
                if curve.size == 0:
                    continue
                last = curve.isel(step=-1)
                peak = int(curve.argmax("step"))
                rows.append(
                    {
                        "max_length": int(length),
                        "run": str(run),
                        "tau": float(tau),
                        "last_step": int(last["step"]),
                        "last": float(last),
                        "last_se": float(se.sel(at).sel(step=last["step"])),
                        "peak": float(curve[peak]),
                        "peak_step": int(curve["step"][peak]),
                        "below_peak": float(curve[peak] - last),
                    }
                )
    return pd.DataFrame(rows)


def plot_listops_validation(ds: xr.Dataset) -> plt.Figure:
    """Validation accuracy against the training step, one panel per (L, τ), one line per
    estimator: mean over seeds with a ±1 SE band."""
    mean, se, n = over_seeds(ds["valid_accuracy"])
    runs = [str(r) for r in ds["run"].values]
    cells = [(length, tau) for length in ds["max_length"].values for tau in ds["tau"].values]
    figure, axes = panels(len(cells))
    for ax, (length, tau) in zip(axes, cells, strict=True):
        for run in runs:
            at = {"max_length": length, "tau": tau, "run": run}
            line, band = mean.sel(at).dropna("step"), se.sel(at).dropna("step")
            if line.size == 0:
                continue
            colour, marker = estimator_style(run)
            ax.plot(line["step"], line, color=colour, marker=marker, ms=3, lw=1.2)
            if band.size == line.size:
                ax.fill_between(line["step"], line - band, line + band, color=colour, alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy")
        title = f"τ = {tau:g}" if ds.sizes["max_length"] == 1 else f"L = {length}, τ = {tau:g}"
        ax.set_title(title)
    axes[-1].legend(handles=legend_for(runs), title="estimator", fontsize=8, loc="best")
    wrapped_title(
        figure,
        f"ListOps: validation accuracy during training (mean ± SE over {int(n.max())} seeds)",
    )
    figure.tight_layout()
    return figure


def listops_section(report: Report, ds: xr.Dataset) -> None:
    blocks = report.section("ListOps latent parse trees (paper §5.2)")
    report.figure(
        blocks,
        "listops-accuracy",
        lambda: plot_listops_accuracy(ds),
        "ListOps test accuracy (model selected on validation accuracy) against τ; "
        "bars: ±1 SE over seeds.",
    )
    report.figure(
        blocks,
        "listops-training-variance",
        lambda: plot_training_variance(ds, "tau", "ListOps"),
        "Gradient variance (trace, on a validation batch of L expressions) measured "
        "during training, mean over seeds.",
    )
    if "valid_accuracy" in ds:
        report.figure(
            blocks,
            "listops-validation",
            lambda: plot_listops_validation(ds),
            "Validation accuracy (greedy merges) during training; bands: ±1 SE over seeds.",
        )
        stability = validation_stability(ds)
        shown = stability.assign(
            last=plus_minus(stability["last"], stability["last_se"]),
            peak=[
                f"{peak:.3f} (step {step})"
                for peak, step in zip(stability["peak"], stability["peak_step"], strict=True)
            ],
            below_peak=[f"{b:.3f}" for b in stability["below_peak"]],
        )[["max_length", "run", "tau", "last", "peak", "below_peak"]]
        report.table(
            blocks,
            "listops-validation",
            "Validation accuracy at the last step (mean ± SE over seeds) against the peak of "
            "the mean curve: how much of what training reached it keeps",
            stability,
            shown,
        )
    table = seed_table(ds["test_accuracy"], ["run", "tau", "max_length"])
    shown = table.assign(value=plus_minus(table["mean"], table["se"])).pivot(
        index=["max_length", "run"], columns="tau", values="value"
    )
    report.table(
        blocks, "listops-accuracy", "Test accuracy, mean ± SE over seeds (columns τ)", table, shown
    )
    if "tuned_lr" in ds:
        trials = ds[["search_lr", "search_valid_accuracy"]].to_dataframe().reset_index()
        shown = (
            ds["tuned_lr"]
            .to_dataframe()
            .reset_index()
            .pivot(index=["max_length", "run"], columns="tau", values="tuned_lr")
        )
        ranked = json.loads(ds.attrs.get("config", "{}")).get("search_selection") or "best"
        report.table(
            blocks,
            "listops-search",
            f"Learning rate chosen by random search on validation accuracy "
            f"({ds.sizes['trial']} trials per estimator and τ, each ranked by its {ranked} "
            f"validation accuracy; every trial in the CSV)",
            trials,
            shown,
        )
    variance = ds[["variance", "variance_se"]].to_dataframe().reset_index()
    report.table(
        blocks,
        "listops-checkpoint-variance",
        "Gradient variance of ST-GS and GR-MCK over K at a briefly trained checkpoint",
        variance,
    )
