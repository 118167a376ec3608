"""Each column's best entry, marked only where it is resolved.

In one table (one measure, every column), the best entry of a column is compared with each
other entry of that column: the difference over its SE is a z (normal for draws; for means
over seeds, Student's t on Welch–Satterthwaite degrees of freedom turned into the normal z of
the same tail, as the claims are judged). Every comparison of the table is one family: Holm's
step-down over their two-sided p-values at family-wise error
:data:`~gvbench.harness.compare.FAMILY_ERROR`. A best is **resolved** where each of its
comparisons is declared (adjusted p ≤ that error, which puts the next best more than 3 SE
away); otherwise the best and every entry not declared apart from it are the **tied** group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

import gvbench.estimators as E
from gvbench.harness.compare import FAMILY_ERROR, holm, two_sided_p
from gvbench.leaderboard.measures import MEASURES, Entry
from gvbench.report.claims import Estimate

BEST, TIED = "best", "tied"
RULE = (
    "A column's best entry is marked ★ only where it is resolved: its difference from every "
    "other entry is declared with Holm's correction over all the comparisons of the table at "
    f"family-wise error {FAMILY_ERROR:g} (so the next best is more than 3 SE away). Otherwise "
    "the best and every entry not resolved from it are marked ≈ (tied). Variance tables rank "
    "unbiased estimators only; bias² and costs are not ranked; an outcome some of whose seeds "
    "diverged is not ranked."
)


def estimate(row: Entry) -> Estimate:
    """An entry as an :class:`~gvbench.report.claims.Estimate`: over seeds with n − 1 degrees
    of freedom; over draws, as a normal mean (its SE from many draws)."""
    value, se = float(row.value), float(row.se)
    if row.over == "seeds":
        return Estimate(value, ((se * se, float(row.n) - 1.0),))
    return Estimate(value, ((se * se, math.inf),))


def z_apart(better: Estimate, worse: Estimate) -> float:
    """The z of ``worse − better`` (the two independent): positive when ``better`` is lower."""
    difference = worse - better
    if all(math.isinf(df) for _, df in difference.parts):
        return difference.value / difference.se if difference.se > 0 else math.nan
    return difference.z()


def marks(table: pd.DataFrame, higher: Mapping[str, bool]) -> pd.Series:
    """``best``, ``tied`` or ``""`` for every row of the long table ``table``.

    Args:
        higher: column name → whether a higher training outcome is better there.
    """
    marked = pd.Series("", index=table.index, dtype=object)
    for name, rows in table.groupby("measure", sort=False):
        measure = MEASURES[str(name)]
        if measure.better is None:
            continue
        comparisons = []  # (column's best row, other row, p)
        for column, group in rows.groupby("column", sort=False):
            # An entry with a note (seeds that diverged) is not the estimator's whole result.
            complete = group["note"].fillna("").astype(str) == ""
            group = group[np.isfinite(group["value"]) & np.isfinite(group["se"]) & complete]
            if measure.unbiased_only:
                group = group[[E.info(e).unbiased for e in group["estimator"]]]
            if len(group) < 2:
                continue
            up = measure.better == "higher" or (measure.better == "outcome" and higher[str(column)])
            signed = -group["value"] if up else group["value"]
            best = signed.idxmin()
            top = estimate(Entry.of(group.loc[best]))
            for other in group.index.drop(best):  # two-sided: the order does not matter
                z = z_apart(top, estimate(Entry.of(group.loc[other])))
                comparisons.append((best, other, two_sided_p(z)))
        adjusted = holm([p for *_, p in comparisons])
        resolved: dict[int, bool] = {}
        for (best, other, _), p in zip(comparisons, adjusted, strict=True):
            apart = bool(p <= FAMILY_ERROR)
            resolved[best] = resolved.get(best, True) and apart
            if not apart:
                marked[other] = TIED
        for best, alone in resolved.items():
            marked[best] = BEST if alone else TIED
    return marked
