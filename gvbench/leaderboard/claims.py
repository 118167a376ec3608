"""The field's claims as tests: each column's :class:`~gvbench.leaderboard.column.DirectionClaim`
decided from the leaderboard's numbers with their SEs, by the report's machinery.

A claim "A beats B on a measure" is a difference of two entries of the long table: gradient
quality per evaluation (variance, MSE: at matched cost; bias² as it is), or the training
outcome in its column's direction. Its z (normal over draws; over seeds, Student's t on
Welch–Satterthwaite degrees of freedom as a normal z) is signed so that z > 0 supports it.
All the leaderboard's claims are one family (:func:`gvbench.report.claims.family`): Holm at
family-wise error :data:`~gvbench.harness.compare.FAMILY_ERROR`; a claim is "holds", "does not
hold", or "not resolved" with a power statement: the seeds (training) or draws per estimator
(gradients) that would resolve the observed difference at the family's threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd
from scipy import stats

import gvbench.estimators as E
from gvbench.harness.compare import FAMILY_ERROR
from gvbench.leaderboard.column import Column, DirectionClaim
from gvbench.leaderboard.measures import CLAIMED, MEASURES, Entry
from gvbench.leaderboard.ranking import estimate, z_apart
from gvbench.report.claims import OPEN, SEED_RULE, Claim, family, verdict

DRAW_RULE = (
    "z = difference of the two estimators' values over the SE of the difference (independent "
    "draws); holds at z ≥ 3"
)


class Judged(NamedTuple):
    """A claim decided alone, and the draws per estimator it rests on (0: over seeds)."""

    claim: Claim
    draws: int


def decide(columns: Sequence[Column], table: pd.DataFrame) -> list[Claim]:
    """Every column's claims, decided as one family from the long table ``table``."""
    made = [_claim(column, claim, table) for column in columns for claim in column.claims]
    claims = [judged.claim for judged in made]
    measured = sum(1 for c in claims if math.isfinite(c.p()))
    # The z that decides a claim whatever its rank in Holm's order, as family() states it.
    threshold = float(stats.norm.isf(FAMILY_ERROR / (2 * max(measured, 1))))
    return [
        _with_draws(claim, judged.draws, threshold)
        for claim, judged in zip(family(claims), made, strict=True)
    ]


def _claim(column: Column, claim: DirectionClaim, table: pd.DataFrame) -> Judged:
    """The claim alone, and the draws per estimator it rests on."""
    measure = CLAIMED[claim.measure]
    better, worse = _label(claim.better), _label(claim.worse)
    statement = f"{better} {_phrase(column, claim)} {worse} ({claim.source})"
    found = {name: _row(table, column.name, name, measure) for name in (claim.better, claim.worse)}
    missing = [
        f"{name}: {row.note or 'no value'}" if row is not None else f"{name}: not in the table"
        for name, row in found.items()
        if row is None
        # seeds that diverged: the mean of the others is not its outcome
        or (isinstance(row.note, str) and row.note != "")
        or not (math.isfinite(row.value) and math.isfinite(row.se))
    ]
    better_row, worse_row = found[claim.better], found[claim.worse]
    if missing or better_row is None or worse_row is None:
        evidence = "not measured (" + "; ".join(missing) + ")"
        return Judged(Claim(column.name, statement, OPEN, evidence, "nothing to decide"), 0)
    a, b = estimate(better_row), estimate(worse_row)
    training = column.training
    higher = (
        claim.measure == "outcome" and training is not None and training.outcome_higher_is_better
    )
    z = z_apart(b, a) if higher else z_apart(a, b)
    difference = (a - b) if higher else (b - a)
    over_seeds = better_row.over == "seeds"
    evidence = (
        f"{MEASURES[measure].title}: {better} {_text(better_row)}, "
        f"{worse} {_text(worse_row)}; difference {difference.value:.4g} ± "
        f"{difference.se:.2g}, z = {z:.2f}."
    )
    decided = Claim(
        column.name,
        statement,
        verdict(z),
        evidence,
        SEED_RULE if over_seeds else DRAW_RULE,
        z=z,
        power=difference if over_seeds else None,
    )
    return Judged(decided, 0 if over_seeds else int(min(better_row.n, worse_row.n)))


def _with_draws(claim: Claim, draws: int, threshold: float) -> Claim:
    """An unresolved claim on draws, with the draws per estimator that would resolve it: the
    SE falls as 1/√n, so z grows as √n."""
    if claim.verdict != OPEN or not draws or not math.isfinite(claim.z):
        return claim
    if claim.z == 0:
        said = " Not resolved; no number of draws can be stated (the difference is 0)."
    else:
        needed = math.ceil(draws * (threshold / abs(claim.z)) ** 2)
        said = (
            f" Not resolved: at this spread, the difference would be decided (z = "
            f"{threshold:.2f}) with {needed} draws per estimator."
        )
    return dataclasses.replace(claim, evidence=claim.evidence + said)


def _label(name: str) -> str:
    """How tables name a registered estimator; a name no estimator has, as it is (the claim
    is then not measured: the estimator is not installed)."""
    try:
        return E.info(name).label
    except KeyError:
        return name


def _row(table: pd.DataFrame, column: str, estimator: str, measure: str) -> Entry | None:
    rows = table[
        (table["column"] == column)
        & (table["estimator"] == estimator)
        & (table["measure"] == measure)
    ]
    return None if rows.empty else Entry.of(rows.iloc[0])


def _text(row: Entry) -> str:
    return f"{row.value:.4g} ± {row.se:.2g} (n = {row.n} {row.over})"


def _phrase(column: Column, claim: DirectionClaim) -> str:
    if claim.measure == "outcome":
        figure = column.training.outcome if column.training is not None else "outcome"
        return f"trains to a better {figure} than"
    return {
        "variance": "has lower gradient variance per evaluation than",
        "mse": "has lower gradient MSE per evaluation than",
        "bias2": "has lower squared bias than",
    }[claim.measure]
