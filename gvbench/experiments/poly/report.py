"""The polynomial experiment's claim (ReinMax ends below ST, Liu et al. 2023, §6), decided over
seeds, and its report section: the training curves of the exact expected loss and the final
values, for the polynomial and the toy."""

from __future__ import annotations

import matplotlib.pyplot as plt
import xarray as xr

from gvbench.plots import estimator_style
from gvbench.report.builder import Report, seed_table
from gvbench.report.claims import SEED_RULE, Claim, Estimate, undecided, verdict
from gvbench.report.figures import over_seeds

SOURCE = "Liu et al. 2023 (ReinMax), §6"


def poly_claims(summary: xr.Dataset) -> list[Claim]:
    """ReinMax's final exact expected loss below ST's, one claim per p (where both ran)."""
    runs = [str(r) for r in summary["run"].values]
    if not {"ReinMax", "ST"} <= set(runs):
        return []
    claims = []
    final = summary["final_expected_loss"].isel(target=0)
    for power in (float(p) for p in summary["power"].values):

        def at(run: str, power: float = power) -> Estimate:
            return Estimate.over_seeds(final.sel(run=run, power=power))

        gain = at("ST") - at("ReinMax")
        claims.append(
            Claim(
                "poly",
                f"ReinMax ends below ST on polynomial programming at p = {power:g} ({SOURCE}).",
                verdict(gain.z()),
                f"final exact expected loss of ST − ReinMax: {gain.test(4)}; ST "
                f"{at('ST').text(4)}, ReinMax {at('ReinMax').text(4)}." + undecided(gain),
                SEED_RULE,
                z=gain.z(),
                power=gain,
            )
        )
    return claims


def poly_section(report: Report, summary: xr.Dataset) -> None:
    """Curves and final values of the polynomial (one panel per p) and of the toy."""
    blocks = report.section("Polynomial programming and the quadratic toy")
    toy = _toy(summary)
    for name, data, setting in (("poly", summary, "power"), ("poly-toy", toy, "target")):
        report.figure(
            blocks,
            f"{name}-curves",
            lambda data=data, setting=setting: _curves(data, setting),
            "Exact expected loss along training, mean ± SE over seeds, one panel per "
            f"{'p' if setting == 'power' else 'target t'}.",
        )
        table = seed_table(data["final_expected_loss"], ["run", "power", "target"])
        report.table(blocks, f"{name}-final", "Final exact expected loss over seeds", table)


def _toy(summary: xr.Dataset) -> xr.Dataset:
    """The toy's part of the summary under the polynomial's names (``toy_`` dropped)."""
    names = [n for n in [*summary.data_vars, *summary.coords] if str(n).startswith("toy_")]
    toy = summary[[n for n in names if n in summary.data_vars]]
    return toy.rename({n: str(n)[len("toy_") :] for n in names if n in toy.variables})


def _curves(data: xr.Dataset, setting: str) -> plt.Figure:
    values = data[setting].values
    figure, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.2), squeeze=False)
    for axis, value in zip(axes[0], values, strict=True):
        curve = (
            data["expected_loss"]
            .sel({setting: value})
            .isel({"target" if setting == "power" else "power": 0})
        )
        mean, se, _ = over_seeds(curve)
        for run in data["run"].values:
            m, s = mean.sel(run=run), se.sel(run=run).fillna(0)
            colour, marker = estimator_style(str(run))
            axis.plot(data["step"], m, label=str(run), color=colour, marker=marker, ms=3)
            axis.fill_between(data["step"], m - s, m + s, alpha=0.2, color=colour)
        axis.set_title(f"{'p' if setting == 'power' else 't'} = {float(value):g}")
        axis.set_xlabel("step")
    axes[0][0].set_ylabel("exact expected loss")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    return figure
