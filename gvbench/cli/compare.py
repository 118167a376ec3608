"""``gvbench compare``: one sweep's estimators at equal cost, or several sweeps' shared cells."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gvbench.harness.compare import (
    COSTS,
    FAMILY_ERROR,
    best_at_budget,
    cost_points,
    differences,
    frontier,
    shown_best,
)
from gvbench.harness.store import read
from gvbench.harness.views import groups, select_group, variance_shares

# A group that holds at least this share of the total variance in every cell is said to
# dominate it: the totals then say little about the other groups.
DOMINANT_SHARE = 0.9


def add_parser(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="estimators at equal cost (the frontier, the best at each budget), or the same "
        "cells of several sweeps with their differences",
        description="One sweep: each (estimator, K) with its cost, variance and variance at "
        "equal cost, the Pareto front of the unbiased estimators, and which is best at each "
        "budget, with standard errors. Several sweeps of one problem (two commits, two "
        "machines): their shared cells side by side with differences, SEs and z.",
    )
    compare.add_argument("result", nargs="+", help="netCDF files written by gvbench sweep")
    compare.add_argument("--cost", choices=list(COSTS), default="evaluations", help="cost per draw")
    compare.add_argument(
        "--metric",
        choices=["variance", "mse"],
        default="variance",
        help="what a budget buys: the variance of the unbiased estimators, or every "
        "estimator's MSE",
    )
    compare.add_argument(
        "--frontier", action="store_true", help="each file's frontier, even of different tasks"
    )
    compare.add_argument(
        "--group",
        default=None,
        metavar="NAME",
        help="compare one parameter group's part of the gradient (a ModuleTask's group, e.g. "
        "encoder) in every table; a file with groups first shows each group's share of the "
        "total variance",
    )
    compare.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Tables: one sweep's estimators at equal cost; several sweeps' shared cells."""
    stored = {label: read(name) for label, name in labels(args.result).items()}
    sweeps = dict(stored)
    if args.group is not None:
        sweeps = {label: select_group(ds, args.group) for label, ds in stored.items()}
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        if len(sweeps) > 1 and not args.frontier:
            print(differences(sweeps).round(6).to_string(index=False))
            return 0
        for name, ds in sweeps.items():
            if groups(stored[name]):
                _shares(name, stored[name], args.group)
            _one(name, ds, args.cost, args.metric)
    return 0


def _shares(name: str, ds: Any, group: str | None) -> None:
    """Each group's share of the total variance, and the group that dominates it, if one."""
    shares = variance_shares(ds)
    names = groups(ds)
    shown = shares.assign(
        tau=[("–" if pd.isna(t) else f"{t:g}") for t in shares["tau"]],
        k=[("–" if pd.isna(k) else f"{int(k)}") for k in shares["k"]],
        **{g: [f"{100 * v:.1f}%" for v in shares[g]] for g in names},
    )
    extra = [c for c in ("seed", "point") if c in shown.columns]
    tables = f"; the tables below are of group {group}" if group else ""
    print(
        f"\n{name}: each parameter group's share of the total variance (tr Σ_group / tr Σ, "
        f"per cell; –: not a hyper-parameter of the estimator{tables})"
    )
    print(shown[[*extra, "label", "tau", "k", "batch_size", *names]].to_string(index=False))
    for dominant in (g for g in names if (shares[g] >= DOMINANT_SHARE).all()):
        others = ", ".join(g for g in names if g != dominant)
        print(
            f"{dominant} holds at least {DOMINANT_SHARE:.0%} of the total variance in every "
            f"cell: the totals are mostly its; --group {others.split(', ')[0]} compares "
            f"the estimators on {others}"
        )


def _one(name: str, ds: Any, cost: str, metric: str) -> None:
    try:
        points = frontier(cost_points(ds, cost))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    extra = [c for c in ("seed", "grid_point") if c in points.columns]
    of = f", group {ds.attrs['group']}" if "group" in ds.attrs else ""
    print(f"\n{name}: the variance–cost frontier ({cost} per draw{of})")
    shown = points.assign(front=points["on_front"].map({True: "*", False: ""}))
    columns = [*extra, "tau", "batch_size", "point", "cost", "variance"]
    columns += ["variance_se", "at_equal_cost", "at_equal_cost_se", "front"]
    print(shown[columns].to_string(index=False))
    print(
        f"\n{name}: best at each budget ({metric}{of}; z: best vs runner-up; "
        f"a winner only where it beats every other at family-wise error "
        f"{FAMILY_ERROR:g}, Holm over the rows; A = B (tie): z = 0)"
    )
    best = best_at_budget(points, metric)
    if best.empty:
        print("no unbiased estimator to rank by variance (--metric mse ranks all)")
    else:
        shown = best.assign(best=shown_best(best)).drop(columns=["tie", "tied_with"])
        print(shown.to_string(index=False))


def labels(paths: Sequence[str]) -> dict[str, str]:
    """A label for each results file: its name, or its path where two share a name (two
    machines' toy.nc); the same file twice is refused."""
    seen: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ValueError(
                f"{path} is given twice (as {seen[resolved]}): compare it with another"
            )
        seen[resolved] = path
    stems = [Path(p).stem for p in paths]
    unique = len(set(stems)) == len(stems)
    return {(Path(p).stem if unique else str(Path(p).with_suffix(""))): p for p in paths}
