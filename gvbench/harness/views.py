"""Views of a sweep's Dataset: a tidy table of its cells, one parameter group's metrics in
place of the totals, and each group's share of the total variance.

A task with parameter groups (a :class:`~gvbench.tasks.ModuleTask`: one group per top-level
child module, or the groups it was given) stores every per-group quantity of
:data:`~gvbench.harness.quantities.QUANTITIES` as ``group_<name>`` along a ``group``
dimension. :func:`select_group` turns those into the sweep's own variables, so that every
table and figure of a sweep can be drawn for one group.
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd
import xarray as xr

from gvbench.harness.quantities import COSTS, at_equal_cost, long_name

__all__ = ["groups", "select_group", "table", "variance_shares"]


def table(ds: xr.Dataset, group: str | None = None) -> pd.DataFrame:
    """A sweep as a tidy pandas frame: one row per cell (grid point), a column for each of
    its coordinates (estimator, τ, K, B, and the seed or task point where the sweep has
    them), its estimator's description (``label``, ``unbiased``, ``uses_tau``,
    ``uses_k``), its ``status`` and every quantity it stores.

    Pending, failed and not-applicable cells are rows too (their metrics NaN): filter on
    ``status == "done"``. With ``group``, the metrics are that parameter group's
    (:func:`select_group`).

    Example: ``table(ds).query("status == 'done'").pivot_table("variance", "tau", "label")``.
    """
    if group is not None:
        ds = select_group(ds, group)
    cells = ds["status"].dims
    per_cell = [n for n in ds.data_vars if ds[n].dims == cells and n != "digest"]
    described = [n for n in ds.data_vars if ds[n].dims == ("estimator",)]
    scalars = [n for n in ds.coords if ds[n].ndim == 0]
    frame = ds[per_cell].drop_vars(scalars).to_dataframe().reset_index()
    if described:
        frame = frame.join(ds[described].to_dataframe(), on="estimator")
    coordinates = [c for c in frame.columns if c not in per_cell and c not in described]
    metrics = [n for n in per_cell if n != "status"]
    return frame[[*coordinates, *described, "status", *metrics]]


def groups(ds: xr.Dataset) -> list[str]:
    """The parameter groups of a sweep (none where its task has none)."""
    return [str(g) for g in ds["group"].values.tolist()] if "group" in ds.dims else []


def _check_group(ds: xr.Dataset, group: str) -> None:
    known = groups(ds)
    if not known:
        raise ValueError(
            f"the {ds.attrs.get('task', '')} sweep has no parameter groups (a ModuleTask's "
            "metrics per top-level module, or per groups= it was given): draw it without a group"
        )
    if group not in known:
        close = difflib.get_close_matches(group, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"the sweep has no parameter group {group!r}; {hint}its groups: {', '.join(known)}"
        )


def select_group(ds: xr.Dataset, group: str) -> xr.Dataset:
    """The sweep as one parameter group sees it: each ``group_<name>`` at ``group`` in place
    of ``<name>`` (the variance, bias², MSE, … of that group's part of the gradient, its P
    and ‖g*‖²), and the metrics at equal cost recomputed from them (a draw costs what it
    costs, whichever coordinates are measured). ``attrs["group"]`` names the group, which
    captions say.

    The view is not a stored file: its values are not those the cells' digests sealed, so
    it has no ``digest``.

    Raises:
        ValueError: a sweep without groups, or a group it does not have (one line, naming
            its groups).
    """
    _check_group(ds, group)
    names = [n for n in ds.data_vars if n.startswith("group_") and "group" in ds[n].dims]
    view = ds.drop_vars([*names, "digest"], errors="ignore").drop_dims("group")
    for name in names:
        base = name.removeprefix("group_")
        view[base] = ds[name].sel(group=group, drop=True)
        view[base].attrs = {**ds[name].attrs, "long_name": f"{long_name(base)}, group {group}"}
    costs = {cost.variable: view[cost.variable] for cost in COSTS}
    for name, value in at_equal_cost(view, costs).items():
        view[name] = value
        view[name].attrs = {"long_name": f"{long_name(name)}, group {group}"}
    view.attrs = {**ds.attrs, "group": group}
    return view


def variance_shares(ds: xr.Dataset) -> pd.DataFrame:
    """Each parameter group's share of the total variance, per finished cell: the trace of
    its coordinates' covariance over the trace of all measured coordinates', tr Σ_g / tr Σ.

    The groups of a partition of the measured parameters sum to 1. A group whose gradient
    the estimator does not touch (a decoder's, a supernet's weights') can hold nearly all
    of the total, which then hides what the estimator changes: the reader compares the
    groups (``gvbench compare --group NAME``).

    Returns:
        One row per finished (estimator, τ, K, B) and seed or task point (an estimator
        without τ or K is one row, its τ or K NaN): the coordinates, ``label``, and a
        column per group.

    Raises:
        ValueError: a sweep without parameter groups.
    """
    if "group" not in ds.dims:
        raise ValueError(
            f"the {ds.attrs.get('task', '')} sweep has no parameter groups: its variance is "
            "all one total"
        )
    done = ds["status"] == "done"
    shares = (ds["group_variance"] / ds["variance"]).where(done)
    shares = shares.drop_vars([n for n in shares.coords if shares[n].ndim == 0])
    frame = shares.to_series().unstack("group")[groups(ds)].dropna(how="all").reset_index()
    described = ds[["label", "uses_tau", "uses_k"]].to_dataframe()
    frame = frame.join(described, on="estimator")
    for axis, uses in (("tau", "uses_tau"), ("k", "uses_k")):
        frame[axis] = frame[axis].astype(float).where(frame[uses].astype(bool), np.nan)
    keys = [c for c in frame.columns if c not in (*groups(ds), "label", "uses_tau", "uses_k")]
    frame = frame.drop_duplicates(keys).drop(columns=["uses_tau", "uses_k"])
    return frame[[*keys, "label", *groups(ds)]].reset_index(drop=True)
