"""The leaderboard's columns and rows: every registered study's columns at a preset, and every
registered estimator, each cell applicable or not with the reason.

Nothing here names a task or an estimator: columns come from
:func:`gvbench.study.registered`, rows from :func:`gvbench.estimators.available` (its default
set for the variable each column's task samples), so a user's experiment or estimator plugin
joins the table without an edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import gvbench.estimators as E
from gvbench import study
from gvbench.leaderboard.column import Column
from gvbench.tasks import Task


@dataclasses.dataclass(frozen=True)
class Columns:
    """The columns of a leaderboard preset, and a line per study without one."""

    columns: tuple[Column, ...]
    without: tuple[str, ...]


def columns(preset: str, only: Sequence[str] | None = None) -> Columns:
    """Every registered study's columns at ``preset`` (only those named in ``only``).

    Raises:
        ValueError: two studies give a column of one name, or ``only`` names none there is.
    """
    found: dict[str, Column] = {}
    without = []
    for name, each in study.registered().items():
        given = each.leaderboard(preset)
        if not given:
            without.append(f"{name}: no column at the {preset!r} leaderboard preset")
        for column in given:
            if column.name in found:
                raise ValueError(
                    f"two studies give a leaderboard column named {column.name!r}; "
                    "a column's name must be unique"
                )
            found[column.name] = column
    if only is not None:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ValueError(
                f"--columns: no column {', '.join(unknown)} at preset {preset!r}; "
                f"there are: {', '.join(found) or 'none'}"
            )
        found = {name: column for name, column in found.items() if name in only}
    return Columns(tuple(found.values()), tuple(without))


def candidates(variable: str, chosen: Sequence[str] | None) -> list[str]:
    """The estimators a column's task of ``variable`` lists: ``chosen`` (canonical names,
    a ``KeyError`` naming an unknown one), else the registry's default set for it."""
    if chosen is not None:
        return list(dict.fromkeys(E.info(name).name for name in chosen))
    return [
        name
        for name, entry in E.available().items()
        if entry.default and entry.variable == variable
    ]


class Setting(NamedTuple):
    """τ and K of an estimator on a column; ``None`` for one the estimator does not take."""

    tau: float | None
    k: int | None


def options(column: Column, estimator: str, default_tau: float, default_k: int) -> Setting:
    """τ and K of ``estimator`` on ``column``: the column's own options, else the defaults,
    for those of the two the estimator takes."""
    own = column.options.get(estimator, {})
    hyper = E.info(estimator).hyper
    return Setting(
        tau=own.get("tau", default_tau) if "tau" in hyper else None,
        k=own.get("k", default_k) if "k" in hyper else None,
    )


def not_applicable(task: Task, estimator: str) -> str | None:
    """Why ``estimator`` cannot run on ``task`` (the task's own reason), or ``None``."""
    return task.applicable(E.info(estimator))
