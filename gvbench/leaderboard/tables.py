"""The leaderboard's tables: one per measure, rows estimators and columns tasks, as CSV files
and as the page shows them.

A CSV holds, per column ``C``: ``C`` (the value), ``C_se`` (its SE), ``C_mark`` (``best``
where resolved, ``tied`` for a tied group, see :mod:`gvbench.leaderboard.ranking`) and
``C_note`` (why a cell has no value: "not applicable: …" with the task's reason; or what to
know of its value: the seeds that diverged). No cell is blank without a note.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import gvbench.estimators as E
from gvbench.atomic_files import write_bytes
from gvbench.leaderboard.measures import MEASURES
from gvbench.leaderboard.ranking import BEST, TIED

SYMBOLS = {BEST: " ★", TIED: " ≈"}


def wide(table: pd.DataFrame, measure: str, columns: Sequence[str]) -> pd.DataFrame:
    """The rows of ``measure`` in the long table (with its ``mark``), one row per estimator,
    in the order the estimators first appear in the table."""
    rows = table[table["measure"] == measure]
    there = set(rows["estimator"])
    estimators = [name for name in dict.fromkeys(table["estimator"]) if name in there]
    out = pd.DataFrame(
        {
            "estimator": estimators,
            "label": [E.info(name).label for name in estimators],
            "unbiased": [E.info(name).unbiased for name in estimators],
        }
    )
    for column in columns:
        here = rows[rows["column"] == column].set_index("estimator").reindex(estimators)
        out[column] = here["value"].to_numpy()
        out[f"{column}_se"] = here["se"].to_numpy()
        out[f"{column}_mark"] = here["mark"].fillna("").to_numpy()
        out[f"{column}_note"] = [
            note if isinstance(note, str) and note else ("" if present else "not measured")
            for note, present in zip(here["note"], here["value"].notna(), strict=True)
        ]
    return out


def wide_tables(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Every measure that has any row, as :func:`wide` over the columns that measure it."""
    out = {}
    for measure in MEASURES:
        rows = table[table["measure"] == measure]
        if not rows.empty:
            there = [c for c in columns if (rows["column"] == c).any()]
            out[measure] = wide(table, measure, there)
    return out


def write_tables(wides: dict[str, pd.DataFrame], folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Each table as ``folder/MEASURE.csv``; their paths by measure."""
    written = {}
    for measure, data in wides.items():
        path = Path(folder) / f"{measure}.csv"
        write_bytes(data.to_csv(index=False).encode(), path)
        written[measure] = path
    return written


def shown(data: pd.DataFrame) -> pd.DataFrame:
    """A wide table as the page shows it: ``value ± SE`` with its mark, or the note."""
    columns = [c.removesuffix("_note") for c in data.columns if c.endswith("_note")]
    out = pd.DataFrame({"estimator": data["label"]})
    for column in columns:
        out[column] = [
            _cell(value, se, mark, note)
            for value, se, mark, note in zip(
                data[column],
                data[f"{column}_se"],
                data[f"{column}_mark"],
                data[f"{column}_note"],
                strict=True,
            )
        ]
    return out


def _cell(value: float, se: float, mark: str, note: str) -> str:
    if not math.isfinite(value):
        return note or "undefined at this cell"
    text = f"{value:.4g} ± {se:.2g}" if math.isfinite(se) else f"{value:.4g}"
    return text + SYMBOLS.get(mark, "") + (f" ({note})" if note else "")
