"""Estimators compared: two of one sweep cell by cell, all of them at equal cost (the
variance–cost frontier), and the same cells of several sweeps side by side.

Statistics only: tables as xarray/pandas objects, with standard errors. Figures draw them
(:mod:`gvbench.plots`), the CLI prints them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

# What a cell costs, by name: objective evaluations or seconds per draw.
COSTS = {"evaluations": "evaluations", "seconds": "draw_seconds"}
UNITS = {"evaluations": "objective evaluations per draw", "seconds": "seconds per draw"}


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
    if "seed" in ds.dims:
        raise ValueError("the frontier is drawn per seed: select one (ds.sel(seed=…))")
    names = ["variance", "variance_se", "bias2", "bias2_se", COSTS[cost], "status"]
    table = ds[names].to_dataframe().reset_index()
    table = table[table["status"] == "done"].rename(columns={COSTS[cost]: "cost"})
    described = ds[["label", "uses_k", "unbiased"]].to_dataframe()
    table = table.join(described, on="estimator")
    without_k = ~table["uses_k"].astype(bool)
    table.loc[without_k, "k"] = (
        table.loc[without_k].groupby(["estimator", "tau", "batch_size"])["k"].transform("min")
    )
    table = table.drop_duplicates(["estimator", "tau", "k", "batch_size"])
    table["point"] = [
        f"{label} K={int(k)}" if uses_k else label
        for label, k, uses_k in zip(table["label"], table["k"], table["uses_k"], strict=True)
    ]
    table["unbiased"] = table["unbiased"].astype(bool)
    table["at_equal_cost"] = table["variance"] * table["cost"]
    table["at_equal_cost_se"] = table["variance_se"] * table["cost"]
    columns = ["tau", "batch_size", "estimator", "k", "point", "unbiased", "cost"]
    columns += ["variance", "variance_se", "bias2", "bias2_se", "at_equal_cost", "at_equal_cost_se"]
    return table[columns].reset_index(drop=True)


def frontier(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with ``on_front``: among the unbiased estimators at the same τ and B, none
    is both cheaper (or as cheap) and of lower variance — the Pareto front of the
    (cost, variance) plane. Biased points are never on it: their variance is not their error
    (ST's is 1e-14 at τ = 0.1 on the toy)."""
    marked = []
    for _, group in points.groupby(["tau", "batch_size"], sort=True):
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
    """
    if metric not in ("variance", "mse"):
        raise ValueError(f"metric must be 'variance' or 'mse', got {metric!r}")
    rows = []
    for (tau, batch_size), group in points.groupby(["tau", "batch_size"], sort=True):
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
            row = {
                "tau": tau,
                "batch_size": batch_size,
                "budget": budget,
                "best": fits["point"].iloc[best],
                metric: float(achieved.iloc[best]),
                f"{metric}_se": float(spread.iloc[best]),
                "runner_up": None,
                "z": math.nan,
            }
            if len(order) > 1:
                second = order[1]
                gap = math.hypot(spread.iloc[best], spread.iloc[second])
                row["runner_up"] = fits["point"].iloc[second]
                row["z"] = (
                    float(achieved.iloc[second] - achieved.iloc[best]) / gap if gap else math.nan
                )
            rows.append(row)
    return pd.DataFrame(rows)


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
                    f"{name} and {first} are sweeps of different problems ({key}: "
                    f"{_short(ds.attrs.get(key))} vs {_short(reference.attrs.get(key))}); only "
                    "their frontiers can be put side by side (--frontier)"
                )


def _short(value: object, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width] + "…"


def differences(
    datasets: Mapping[str, xr.Dataset], metrics: Sequence[str] = ("variance", "bias2", "mse")
) -> pd.DataFrame:
    """The cells the sweeps share, side by side: each sweep's metric ± SE and every later
    sweep's difference from the first, with its SE and z (the sweeps' draws are
    independent; sweeps of one seed and one code give identical numbers and z = 0)."""
    check_comparable(datasets)
    names = list(datasets)
    tables = []
    for name, ds in datasets.items():
        if "seed" in ds.dims:
            raise ValueError(f"{name}: compare one seed at a time (select it)")
        columns = [n for m in metrics for n in (m, f"{m}_se")] + ["status"]
        table = ds[columns].to_dataframe()
        table = table[table["status"] == "done"].drop(columns="status")
        tables.append(table.rename(columns=lambda c, name=name: f"{c} [{name}]"))
    joined = pd.concat(tables, axis=1, join="inner")
    for name in names[1:]:
        for metric in metrics:
            a, b = f"{metric} [{names[0]}]", f"{metric} [{name}]"
            se = np.hypot(joined[f"{metric}_se [{names[0]}]"], joined[f"{metric}_se [{name}]"])
            joined[f"{metric} {name} − {names[0]}"] = joined[b] - joined[a]
            joined[f"{metric} {name} − {names[0]} se"] = se
            joined[f"{metric} {name} − {names[0]} z"] = (joined[b] - joined[a]) / se.where(se > 0)
    return joined.reset_index()
