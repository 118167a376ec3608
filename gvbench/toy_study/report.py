"""The toy study's report sections: the paper's toy (§5.1, Figure 1) and the field's
estimators on the two field toys."""

from __future__ import annotations

import xarray as xr

from gvbench.harness.compare import (
    COSTS,
    UNITS,
    best_at_budget,
    cost_points,
    frontier,
    option_grid,
    variance_ratio,
)
from gvbench.plots import (
    plot_frontier,
    plot_gumbel_rao_advantage,
    plot_metric,
    plot_option_grid,
    plot_simplex,
)
from gvbench.report.builder import Report, plus_minus
from gvbench.toy_study.presets import FIELD_TITLES


def toy_section(report: Report, toy: xr.Dataset, simplex: xr.Dataset | None) -> None:
    """The paper's toy: variance ratios, metrics, frontiers and Figure 1's simplex."""
    blocks = report.section("Toy problem (paper §5.1, Figure 1)")
    reps = toy.attrs.get("reps", "?")
    report.figure(
        blocks,
        "toy-variance-ratio",
        lambda: plot_gumbel_rao_advantage(toy),
        f"Var ST-GS / Var GR-MCK against τ, one line per K; N = {reps} draws per cell, "
        "95% bands by the delta method. Above 1: Gumbel-Rao has the lower variance.",
    )
    for metric, words in (
        ("variance", "trace of the gradient covariance"),
        ("bias2", "squared bias against the exact gradient"),
        ("mse", "mean squared error against the exact gradient"),
    ):
        report.figure(
            blocks,
            f"toy-{metric}",
            lambda m=metric: plot_metric(toy, m),
            f"Toy problem: {words}, per estimator, against τ and K (N = {reps} draws "
            "per cell; 95% bands; the axis spans 6 decades, smaller values marked ▼).",
        )
    for cost in COSTS:
        report.figure(
            blocks,
            f"toy-frontier-{cost}",
            lambda cost=cost: plot_frontier(toy, cost),
            f"The variance–cost plane ({UNITS[cost]}): each estimator at each K, the Pareto "
            "front of the unbiased estimators dashed. At equal cost lower is better: a budget "
            "C buys C/c draws of an estimator of cost c.",
        )
    _toy_tables(report, blocks, toy, simplex)


def _toy_tables(
    report: Report, blocks: list[str], toy: xr.Dataset, simplex: xr.Dataset | None
) -> None:
    """The toy's tables (best at each budget, variance ratios, every cell) and Figure 1."""
    points = frontier(cost_points(toy.isel(batch_size=[0])))
    best = best_at_budget(points, "mse")
    report.table(
        blocks,
        "toy-best-at-budget",
        "Lowest MSE within each budget (objective evaluations per gradient; a budget C "
        "averages C/c draws of an estimator of cost c; z: best against runner-up)",
        best,
        best.round(6),
    )
    if simplex is not None:
        report.figure(
            blocks,
            "toy-simplex",
            lambda: plot_simplex(simplex),
            "The paper's Figure 1: log₁₀ of ST-GS's over GR-MCK's gradient variance at "
            "every point of the 3-simplex, per τ.",
        )
    ds = toy.isel(batch_size=0)
    compared = variance_ratio(ds)
    ratio = compared["ratio"]
    ratio_se = ratio * compared["log_se"]  # delta method, on the ratio's own scale
    table = xr.Dataset({"ratio": ratio, "ratio_se": ratio_se}).to_dataframe().reset_index()
    table = table[["tau", "k", "ratio", "ratio_se"]]
    shown = table.assign(value=plus_minus(table["ratio"], table["ratio_se"])).pivot(
        index="tau", columns="k", values="value"
    )
    report.table(
        blocks, "toy-variance-ratio", "Var ST-GS / Var GR-MCK (rows τ, columns K)", table, shown
    )
    metrics = ds[["label", "variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se"]]
    long = metrics.to_dataframe().reset_index().dropna(subset=["variance"])
    long = long[
        [
            "estimator",
            "label",
            "tau",
            "k",
            "variance",
            "variance_se",
            "bias2",
            "bias2_se",
            "mse",
            "mse_se",
        ]
    ]
    report.table(
        blocks,
        "toy-metrics",
        "Every toy cell (variance, bias², MSE ± SE)"
        + (f": the first 40 of {len(long)} rows, all in the CSV" if len(long) > 200 else ""),
        long,
        long.head(40) if len(long) > 200 else long,
    )


def field_section(report: Report, name: str, ds: xr.Dataset) -> None:
    """The field's estimators since 2017 on one toy: every cell with its cost, the
    variance–cost plane, decoupled ST's (τ_f, τ_b) grid, and what did not apply."""
    blocks = report.section(f"Beyond the paper: the field's estimators on {FIELD_TITLES[name]}")
    reps = ds.attrs.get("reps", "?")
    report.figure(
        blocks,
        f"{name}-frontier",
        lambda: plot_frontier(ds, "evaluations"),
        f"Variance against objective evaluations per draw (N = {reps} draws per cell; the "
        "stateful estimators adapted for "
        f"{ds.attrs.get('warmup', '?')} steps first, then frozen); the Pareto front of the "
        "unbiased estimators dashed.",
    )
    cells = ds.isel(batch_size=0)
    table = (
        cells[
            [
                "label",
                "status",
                "evaluations",
                "variance",
                "variance_se",
                "bias2",
                "bias2_se",
                "work_normalized_variance",
                "work_normalized_variance_se",
            ]
        ]
        .to_dataframe()
        .reset_index()
    )
    unbiased = cells["unbiased"].to_series()
    table = table[table["estimator"].map(unbiased).astype(bool) | (table["tau"] == table["tau"])]
    done = table[table["status"] == "done"].drop_duplicates(subset=["estimator", "k", "variance"])
    shown = done.assign(
        variance=plus_minus(done["variance"], done["variance_se"]),
        bias2=plus_minus(done["bias2"], done["bias2_se"]),
        at_equal_cost=plus_minus(
            done["work_normalized_variance"], done["work_normalized_variance_se"]
        ),
    )[["label", "tau", "k", "evaluations", "variance", "bias2", "at_equal_cost"]]
    report.table(
        blocks,
        f"{name}-cells",
        "Every cell that ran (variance, bias² ± SE; at equal cost: variance × evaluations per "
        "draw, what a budget of evaluations buys)",
        done,
        shown,
    )
    skipped = table[table["status"] != "done"][["label", "status"]].drop_duplicates()
    if len(skipped):
        report.table(blocks, f"{name}-not-applicable", "Estimators that do not apply here", skipped)
    try:
        option_grid(cells, "decoupled_straight_through", "forward_tau")
    except ValueError:
        return
    report.figure(
        blocks,
        f"{name}-decoupled-grid",
        lambda: plot_option_grid(cells, "decoupled_straight_through", "forward_tau", "mse"),
        "Decoupled ST: MSE over the forward temperature τ_f (rows) and the backward one τ_b "
        "(columns); τ_f = 1 is ST-GS.",
    )
