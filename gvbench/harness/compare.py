"""Estimators compared: two of one sweep cell by cell, all of them at equal cost (the
variance–cost frontier), and the same cells of several sweeps side by side.

Statistics only: tables as xarray/pandas objects, with standard errors. Figures draw them
(:mod:`gvbench.plots`), the CLI prints them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from gvbench.harness import quantities

# The costs a comparison fixes, by the name a command gives each: the cell's variable, and
# how a sentence names it (both from the one table of quantities).
COSTS = {cost.option: cost.variable for cost in quantities.COSTS}
UNITS = {cost.option: cost.per_draw for cost in quantities.COSTS}
# A winner, or a difference, is declared only at this family-wise error rate (Holm over the
# comparisons a table makes).
FAMILY_ERROR = 0.001
# Dimensions a sweep may have beyond a cell's own: seeds, and the points of a grid of tasks
# (the simplex; "grid_point" in tables, where "point" names an estimator's point).
REPLICATES = ("seed", "grid_point")
# A cell's index in a table, in one order whichever order a file's dimensions have.
LEVELS = [*REPLICATES, "estimator", "tau", "k", "batch_size"]


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: a comparison is declared at family-wise error α
    where its adjusted p is at most α, whatever the dependence between the comparisons.
    NaN (no comparison made) stays NaN and does not count in the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    made = np.flatnonzero(np.isfinite(p))
    order = made[np.argsort(p[made], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def two_sided_p(z: float) -> float:
    """The two-sided normal p-value of ``z`` (NaN for NaN)."""
    return float(2 * stats.norm.sf(abs(z))) if math.isfinite(z) else math.nan


def _cells_table(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` ready for a table: scalar coordinates dropped (a selected seed would be a
    column twice), a grid of tasks' ``point`` renamed ``grid_point``."""
    ds = ds.drop_vars([name for name in ds.coords if ds[name].ndim == 0])
    return ds.rename({"point": "grid_point"}) if "point" in ds.dims else ds


def variance_ratio(
    ds: xr.Dataset, numerator: str = "st_gumbel_softmax", denominator: str = "gumbel_rao"
) -> xr.Dataset:
    """Var(numerator) / Var(denominator) in every cell, with the SE of its logarithm.

    The two variances are estimated from independent draws, so by the delta method
    SE(log r)² = (se₁/V₁)² + (se₂/V₂)²; a band exp(log r ± z·SE) stays positive.

    Returns:
        Dataset with ``ratio`` and ``log_se`` over the sweep's remaining dimensions.
    """
    top, bottom = ds.sel(estimator=numerator), ds.sel(estimator=denominator)
    ratio = top["variance"] / bottom["variance"]
    log_se = np.hypot(
        top["variance_se"] / top["variance"], bottom["variance_se"] / bottom["variance"]
    )
    return xr.Dataset({"ratio": ratio, "log_se": log_se}).drop_vars("estimator", errors="ignore")


def option_grid(
    data: xr.DataArray | xr.Dataset, name: str, option: str
) -> xr.DataArray | xr.Dataset:
    """The variants of one estimator (``"name(option=value)"``, see
    :func:`gvbench.estimators.variants`) laid out along a new ``option`` dimension.

    A sweep keeps one estimator axis and one τ axis; decoupled ST's forward temperature, for
    one, lives in the estimator's name. This turns ``estimator`` into ``option`` for the
    variants of ``name`` (sorted by value), e.g. a (forward_tau, tau) grid for a heat map.
    """
    from gvbench.estimators import parse

    picked, values = [], []
    for label in data["estimator"].values.tolist():
        base, options = parse(str(label))
        if base == name and set(options) == {option}:
            picked.append(label)
            values.append(options[option])
    if not picked:
        raise ValueError(
            f"no variant {name}({option}=…) among the estimators "
            f"({', '.join(map(str, data['estimator'].values))})"
        )
    order = np.argsort(values, kind="stable")
    grid = data.sel(estimator=[picked[i] for i in order])
    grid = grid.assign_coords(estimator=[values[i] for i in order]).rename(estimator=option)
    return grid.transpose(option, ...)


def cost_points(ds: xr.Dataset, cost: str = "evaluations") -> pd.DataFrame:
    """One row per finished (estimator, K) at each τ and batch size: its cost per draw, its
    variance and bias² ± SE, and its variance at equal cost (× cost) ± SE.

    An estimator without K is one point (its cells along K are one cell); one without τ is
    the same point at every τ.
    """
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    ds = _cells_table(ds)
    extra = [d for d in REPLICATES if d in ds.dims]
    names = ["variance", "variance_se", "bias2", "bias2_se", COSTS[cost], "status"]
    table = ds[names].to_dataframe().reset_index()
    table = table[table["status"] == "done"].rename(columns={COSTS[cost]: "cost"})
    if table.empty:
        cells = int(ds["status"].size)
        raise ValueError(
            f"no finished cell among its {cells} (all failed or pending): nothing to compare"
        )
    described = ds[["label", "uses_k", "unbiased"]].to_dataframe()
    table = table.join(described, on="estimator")
    without_k = ~table["uses_k"].astype(bool)
    keys = [*extra, "estimator", "tau", "batch_size"]
    table.loc[without_k, "k"] = table.loc[without_k].groupby(keys)["k"].transform("min")
    table = table.drop_duplicates([*keys, "k"])
    table["point"] = [
        f"{label} K={int(k)}" if uses_k else label
        for label, k, uses_k in zip(table["label"], table["k"], table["uses_k"], strict=True)
    ]
    table["unbiased"] = table["unbiased"].astype(bool)
    table["at_equal_cost"] = table["variance"] * table["cost"]
    table["at_equal_cost_se"] = table["variance_se"] * table["cost"]
    columns = [*extra, "tau", "batch_size", "estimator", "k", "point", "unbiased", "cost"]
    columns += ["variance", "variance_se", "bias2", "bias2_se", "at_equal_cost", "at_equal_cost_se"]
    return table[columns].reset_index(drop=True)


def _groups(points: pd.DataFrame) -> list[str]:
    """What a frontier is drawn within: τ and B, and each seed or grid point apart."""
    return [*(d for d in REPLICATES if d in points.columns), "tau", "batch_size"]


def frontier(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with ``on_front``: among the unbiased estimators at the same τ and B, none
    is both cheaper (or as cheap) and of lower variance — the Pareto front of the
    (cost, variance) plane. Biased points are never on it: their variance is not their error
    (ST's is 1e-14 at τ = 0.1 on the toy)."""
    marked = []
    for _, group in points.groupby(_groups(points), sort=True):
        group = group.assign(on_front=False)
        fair = group[group["unbiased"]].sort_values(["cost", "variance"])
        lowest = np.minimum.accumulate(fair["variance"].to_numpy())
        before = np.concatenate([[np.inf], lowest[:-1]])
        group.loc[fair.index, "on_front"] = fair["variance"].to_numpy() < before
        marked.append(group)
    return pd.concat(marked).sort_index() if marked else points.assign(on_front=[])


def best_at_budget(points: pd.DataFrame, metric: str = "variance") -> pd.DataFrame:
    """Which estimator is best at each budget, with its standard error.

    Within a budget of C per gradient, an estimator whose draw costs c ≤ C averages C/c
    draws: its variance becomes V·c/C and its MSE bias² + V·c/C (averaging does not remove
    bias). ``metric="variance"`` ranks the unbiased estimators by V·c; ``"mse"`` ranks every
    estimator by its MSE at the budget. The table gives, per budget (the points' own costs),
    the best, what it achieves ± SE, the runner-up and the z of their difference (the cells
    are independent).

    A ``winner`` is declared only where the best is resolved to beat every other candidate
    at a family-wise error rate of :data:`FAMILY_ERROR` over the whole table: ``p`` is the
    largest two-sided p-value of the best against each other candidate (beating all of them
    is an intersection of tests, so its p is their largest), ``p_holm`` that p corrected by
    Holm over the table's rows. Elsewhere ``winner`` is empty: the best is not resolved.

    ``tie`` marks a best that the runner-up matches exactly (z = 0, or NaN for two exact
    points): estimators that coincide at these settings. The best of a tie is only the
    first in the table's order, never a winner; ``tied_with`` names the others it ties with.
    """
    if metric not in ("variance", "mse"):
        raise ValueError(f"metric must be 'variance' or 'mse', got {metric!r}")
    rows = []
    keys = _groups(points)
    for group_key, group in points.groupby(keys, sort=True):
        candidates = group[group["unbiased"]] if metric == "variance" else group
        for budget in sorted(candidates["cost"].unique()):
            fits = candidates[candidates["cost"] <= budget]
            share = fits["cost"] / budget
            achieved = fits["variance"] * share
            spread = fits["variance_se"] * share
            if metric == "mse":
                achieved = achieved + fits["bias2"]
                spread = np.hypot(spread, fits["bias2_se"])
            order = np.argsort(achieved.to_numpy(), kind="stable")
            best = order[0]
            row = dict(zip(keys, group_key, strict=True))
            row |= {
                "budget": budget,
                "best": fits["point"].iloc[best],
                metric: float(achieved.iloc[best]),
                f"{metric}_se": float(spread.iloc[best]),
                "runner_up": None,
                "z": math.nan,
                "p": math.nan,
            }
            if len(order) > 1:
                second = order[1]
                row["runner_up"] = fits["point"].iloc[second]
                row["z"] = _z(achieved, spread, best, second)
                row["p"] = max(
                    two_sided_p(_z(achieved, spread, best, other)) for other in order[1:]
                )
            tied = [
                fits["point"].iloc[i] for i in order[1:] if achieved.iloc[i] == achieved.iloc[best]
            ]
            rows.append(row | {"tie": bool(tied), "tied_with": ", ".join(tied)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p"].to_numpy())
    table["winner"] = np.where(table["p_holm"] <= FAMILY_ERROR, table["best"], "")
    return table


def shown_best(best: pd.DataFrame) -> pd.Series:
    """The ``best`` column as a table prints it: a tie as ``"A = B (tie)"``, never as a
    winner."""
    return pd.Series(
        [
            f"{name} = {' = '.join(others.split(', '))} (tie)" if tie else name
            for name, tie, others in zip(best["best"], best["tie"], best["tied_with"], strict=True)
        ],
        index=best.index,
        dtype=object,
    )


def _z(achieved: pd.Series, spread: pd.Series, best: int, other: int) -> float:
    """The z of ``other`` minus ``best`` (independent cells), NaN where both SEs are 0."""
    gap = math.hypot(spread.iloc[best], spread.iloc[other])
    return float(achieved.iloc[other] - achieved.iloc[best]) / gap if gap else math.nan


# Attributes two sweeps must share to be compared cell by cell: the same problem. Commits,
# machines, seeds, draw modes and estimator sets may differ.
SAME_PROBLEM = ("task", "task_config", "dtype")


def check_comparable(datasets: Mapping[str, xr.Dataset]) -> None:
    """Refuse, in one line naming the first difference, sweeps that are not of one problem."""
    (first, reference), *others = datasets.items()
    for name, ds in others:
        for key in SAME_PROBLEM:
            if str(ds.attrs.get(key)) != str(reference.attrs.get(key)):
                raise ValueError(
                    f"{name} and {first} are sweeps of different problems ("
                    f"{_difference(key, ds.attrs.get(key), reference.attrs.get(key))}); only "
                    "their frontiers can be put side by side (--frontier)"
                )


def _difference(key: str, value: object, other: object, width: int = 60) -> str:
    """Where two attributes differ: the first differing entry of two JSON objects (a task's
    configuration), else both values, each cut to ``width``."""
    try:
        a, b = json.loads(str(value)), json.loads(str(other))
    except ValueError:
        a = b = None
    if isinstance(a, dict) and isinstance(b, dict):
        for entry in sorted(set(a) | set(b)):
            if a.get(entry) != b.get(entry):
                return (
                    f"{key}.{entry}: {_short(a.get(entry), width)} vs {_short(b.get(entry), width)}"
                )
    return f"{key}: {_short(value, width)} vs {_short(other, width)}"


def _short(value: object, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width] + "…"


def differences(
    datasets: Mapping[str, xr.Dataset], metrics: Sequence[str] = ("variance", "bias2", "mse")
) -> pd.DataFrame:
    """The cells the sweeps share, side by side: each sweep's metric ± SE and every later
    sweep's difference from the first, with its SE and z (the sweeps' draws are
    independent; sweeps of one seed and one code give identical numbers and z = 0).

    A difference is declared (``… differs``) only at a family-wise error rate of
    :data:`FAMILY_ERROR` over every difference the table shows: Holm over their two-sided
    p-values (``… p_holm``). Seeds and grid points are compared cell by cell like τ and K.
    """
    check_comparable(datasets)
    names = list(datasets)
    seeds = sorted(
        {int(v) for ds in datasets.values() if "seed" in ds.dims for v in ds["seed"].values}
    )
    tables = []
    for name, ds in datasets.items():
        columns = [n for m in metrics for n in (m, f"{m}_se")] + ["status"]
        if seeds and "seed" not in ds.dims:  # one seed's sweep faces each seed of the others
            ds = ds.drop_vars("seed", errors="ignore").expand_dims(seed=seeds)
        table = _cells_table(ds)[columns].to_dataframe()
        table = table.reorder_levels(sorted(table.index.names, key=LEVELS.index))
        table = table[table["status"] == "done"].drop(columns="status")
        tables.append(table.rename(columns=lambda c, name=name: f"{c} [{name}]"))
    joined = pd.concat(tables, axis=1, join="inner")
    if joined.empty:
        raise ValueError(f"{', '.join(names)} share no finished cell: nothing to compare")
    tests = []
    for name in names[1:]:
        for metric in metrics:
            a, b = f"{metric} [{names[0]}]", f"{metric} [{name}]"
            se = np.hypot(joined[f"{metric}_se [{names[0]}]"], joined[f"{metric}_se [{name}]"])
            label = f"{metric} {name} − {names[0]}"
            joined[label] = joined[b] - joined[a]
            joined[f"{label} se"] = se
            joined[f"{label} z"] = (joined[b] - joined[a]) / se.where(se > 0)
            tests.append(label)
    # One family: every difference of every cell, metric and sweep in the table.
    p = np.concatenate([[two_sided_p(z) for z in joined[f"{label} z"]] for label in tests])
    adjusted = holm(p).reshape(len(tests), len(joined))
    for label, column in zip(tests, adjusted, strict=True):
        joined[f"{label} p_holm"] = column
        joined[f"{label} differs"] = column <= FAMILY_ERROR
    return joined.reset_index()
