"""What the leaderboard measures, declared once: each table's measure, its direction and who
competes on it, and the long table every part of the leaderboard writes its numbers into.

A measure of gradient quality is a variable of the harness's sweep (its SE is the variable's
``_se``, over ``reps`` independent draws); a training measure is a figure of the final runs
(its SE is the spread between seeds, sd/√n). The long table, :func:`entries`, has one row
per (column, estimator, measure): ``value``, ``se``, ``n`` (draws or seeds), ``over``
(``"draws"`` or ``"seeds"``) and ``note`` ("not applicable: …", "diverged: …") where there
is no value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Measure:
    """One table of the leaderboard.

    Attributes:
        name: the sweep's variable, or the training figure's name (the CSV's name).
        title: the table's heading.
        part: ``"gradients"`` (a sweep at the column's checkpoint) or ``"training"``.
        better: ``"lower"``, ``"higher"``, ``"outcome"`` (the column's own direction) or
            ``None`` (a cost or a setting: not ranked).
        unbiased_only: only unbiased estimators compete (a biased one's variance is not its
            error: straight-through's is near 0 at small τ).
        se: whether it has a standard error.
    """

    name: str
    title: str
    part: Literal["gradients", "training"]
    better: Literal["lower", "higher", "outcome"] | None = None
    unbiased_only: bool = False
    se: bool = True


MEASURES: Mapping[str, Measure] = {
    m.name: m
    for m in (
        Measure("variance", "gradient variance (trace) per draw", "gradients", "lower", True),
        Measure("bias2", "squared bias ‖E ĝ − g*‖² (0 ± noise when unbiased)", "gradients"),
        Measure("mse", "mean squared error per draw", "gradients", "lower"),
        Measure("cosine", "cosine of the mean estimate and the reference", "gradients", "higher"),
        Measure(
            "work_normalized_variance",
            "variance × evaluations per draw (at equal evaluations)",
            "gradients",
            "lower",
            True,
        ),
        Measure(
            "work_normalized_mse",
            "MSE × evaluations per draw (at equal evaluations)",
            "gradients",
            "lower",
        ),
        Measure(
            "time_normalized_variance",
            "variance × seconds per draw (at equal time)",
            "gradients",
            "lower",
            True,
        ),
        Measure(
            "time_normalized_mse", "MSE × seconds per draw (at equal time)", "gradients", "lower"
        ),
        Measure("evaluations", "objective evaluations per draw", "gradients", se=False),
        Measure("draw_seconds", "seconds per gradient draw", "gradients", se=False),
        Measure(
            "outcome", "training outcome (test figure), mean ± SE over seeds", "training", "outcome"
        ),
        Measure(
            "seconds_per_step",
            "training seconds per step and run (runs trained as one share a step)",
            "training",
            se=False,
        ),
        Measure(
            "evaluations_per_step", "objective evaluations per training step", "training", se=False
        ),
        Measure("lr", "learning rate chosen by the search", "training", se=False),
        Measure("tau", "τ chosen by the search", "training", se=False),
    )
}

# What a DirectionClaim's measure is compared on: gradient quality per evaluation (matched
# cost), bias² as it is (averaging draws does not remove it), the outcome over seeds.
CLAIMED = {
    "variance": "work_normalized_variance",
    "mse": "work_normalized_mse",
    "bias2": "bias2",
    "outcome": "outcome",
}


class Entry(NamedTuple):
    """One row of the long table: the ``value`` of ``estimator`` on ``measure`` in ``column``,
    its ``se`` over ``n`` ``"draws"`` or ``"seeds"``, and a ``note`` ("not applicable: …",
    "diverged: …") where it has no value or what to know of it."""

    column: str
    estimator: str
    measure: str
    value: float = math.nan
    se: float = math.nan
    n: int = 0
    over: str = ""
    note: str = ""

    @classmethod
    def of(cls, row: pd.Series) -> Entry:
        """A row of the long table (:func:`entries`) as an entry."""
        return cls(*(row[field] for field in cls._fields))


ENTRY_COLUMNS = Entry._fields


def entry(
    column: str,
    estimator: str,
    measure: str,
    value: float = math.nan,
    se: float = math.nan,
    n: int = 0,
    over: str = "",
    note: str = "",
) -> Entry:
    """One row of the long table, its numbers as Python floats and int."""
    return Entry(column, estimator, measure, float(value), float(se), int(n), over, note)


def entries(rows: Iterable[Entry]) -> pd.DataFrame:
    """The long table of ``rows`` (see :class:`Entry`), in a fixed column order."""
    return pd.DataFrame(list(rows), columns=list(ENTRY_COLUMNS))
