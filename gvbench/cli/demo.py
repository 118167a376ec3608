"""``gvbench demo``: the paper-scale toy sweep, its figures and its tables (``make demo``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import gvbench.estimators as E
from gvbench import engine
from gvbench.cli.options import at_least, cluster, progress
from gvbench.cli.sweep import written_sweep
from gvbench.harness.compare import (
    best_at_budget,
    cost_points,
    frontier,
    shown_best,
    variance_ratio,
)
from gvbench.harness.store import read
from gvbench.harness.sweep import DEFAULT_K, DEFAULT_REPS, DEFAULT_TAU, DEFAULT_WARMUP, sweep
from gvbench.plots import plot_sweep


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[cluster(2), progress()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the paper-scale toy sweep with its figures",
        description="Sweep every default estimator on the toy over the default τ and K grid "
        "and draw the figures (what `make demo` runs).",
    )
    demo.add_argument("--reps", type=int, default=DEFAULT_REPS, help="gradient draws per cell")
    demo.add_argument(
        "--warmup",
        type=at_least(0),
        default=DEFAULT_WARMUP,
        help="steps an estimator with state adapts before it is frozen and measured",
    )
    demo.add_argument("--out", default="results/toy.nc", help="results file; figures go beside it")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # the registry's default set, and decoupled ST off its diagonal (τ_f = 1 is ST-GS)
    estimators = [
        name
        for name, entry in E.available().items()
        if entry.default and entry.variable == "categorical"  # the toy's
    ]
    estimators += E.variants("decoupled_straight_through", forward_tau=[0.5, 2.0])
    out = Path(args.out)
    start = time.perf_counter()
    with engine.client(args.workers, args.scheduler) as executor:
        ds = sweep(
            "toy",
            estimators=estimators,
            tau=list(DEFAULT_TAU),
            k=list(DEFAULT_K),
            reps=args.reps,
            reference_reps="auto",  # as `gvbench sweep` does
            warmup=args.warmup,
            path=out,
            executor=executor,
            progress=not args.no_progress,
        )
    written_sweep(ds, out, time.perf_counter() - start)
    for written in plot_sweep(out):
        print(f"wrote {written}")
    _tables(read(out))
    return 0


def _tables(ds: Any) -> None:
    """What the toy shows, as the terminal prints it."""
    table = variance_ratio(ds.sel(batch_size=1))["ratio"]
    print("\nVariance of ST-GS over GR-MCK on the toy task (same bias; > 1: Gumbel-Rao wins):")
    print(table.to_pandas().round(2).to_string())
    points = frontier(cost_points(ds))
    first = points["tau"].min()  # the unbiased estimators take no τ: one frontier for all
    print(
        "\nUnbiased estimators at equal cost (objective evaluations per draw; * on the Pareto "
        "front; V × cost ranks them at any budget):"
    )
    shown = points[(points["tau"] == first) & points["unbiased"]].sort_values("cost")
    shown = shown.assign(front=shown["on_front"].map({True: "*", False: ""}))
    columns = ["point", "cost", "variance", "variance_se", "at_equal_cost", "front"]
    print(shown[columns].to_string(index=False))
    best = best_at_budget(points, "mse")
    print(
        "\nLowest MSE within a budget of one evaluation per gradient, by τ (z: vs runner-up; "
        "A = B (tie): the runner-up achieves exactly the same, z = 0):"
    )
    columns = ["tau", "best", "mse", "mse_se", "runner_up", "z"]
    best = best.assign(best=shown_best(best))
    print(best[best["budget"] == 1.0][columns].to_string(index=False))
    statuses = ds["status"].to_series()
    skipped = statuses[statuses.str.startswith("not applicable")].reset_index()
    if len(skipped):
        print("\nNot measured here:")
        for (name, reason), rows in skipped.groupby(["estimator", "status"], sort=False):
            ks = sorted(set(rows["k"]))
            partial = "k" in E.info(name).hyper and len(ks) < ds.sizes["k"]
            where = f" (K = {', '.join(map(str, ks))})" if partial else ""
            print(f"  {E.info(name).label}{where}: {reason}")
