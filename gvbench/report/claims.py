"""The paper's claims, each decided from a reproduction's results with its standard error.

A claim compares two quantities; its z-score is their difference over the SE of the
difference. Alone, it **holds** at z ≥ 3, **does not hold** at z ≤ −3 and is **not
resolved** in between; where it is checked over several cells at once, the threshold is
Bonferroni-corrected for their number. Over seeds, the SE is the spread between seeds (sample
standard deviation / √n) and the difference is judged on Student's t with
Welch–Satterthwaite degrees of freedom, expressed as the normal z with the same tail
probability (so that "three standard errors" keeps its meaning with three or four seeds).

A report decides its claims as one family (:func:`family`): each claim's two-sided p-value
(Bonferroni over its cells) enters Holm's step-down procedure, and a claim is resolved only
where its adjusted p is at most :data:`FAMILY_ERROR` (0.001), the family-wise error of
every winner gvbench declares.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr
from scipy import stats

from gvbench.harness.compare import FAMILY_ERROR, holm

Z = 3.0
HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim and its verdict.

    Attributes:
        experiment, statement: whose claim, and what it says.
        verdict: :data:`HOLDS`, :data:`FAILS` or :data:`OPEN`.
        evidence: the numbers behind the verdict.
        rule: how the verdict was decided.
        z: the statistic it rests on, signed so that z > 0 supports the claim; for a claim of
            no difference (``same``), the largest ``|z|`` among its cells. NaN: nothing measured.
        tests: the comparisons it makes (its p-value is Bonferroni over them).
        same: a claim of no difference, which fails where a difference is resolved.
        power: the difference a claim left unresolved rests on, for its power statement.
    """

    experiment: str
    statement: str
    verdict: str
    evidence: str
    rule: str
    z: float = math.nan
    tests: int = 1
    same: bool = False
    power: Estimate | None = dataclasses.field(default=None, repr=False, compare=False)

    def p(self) -> float:
        """Its two-sided p-value, Bonferroni over its ``tests`` (NaN where z is not finite)."""
        if not math.isfinite(self.z):
            return math.nan
        return min(1.0, self.tests * 2 * float(stats.norm.sf(abs(self.z))))

    def record(self) -> dict[str, object]:
        """What claims.json and claims.csv hold of it."""
        return {
            "experiment": self.experiment,
            "statement": self.statement,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "rule": self.rule,
            "z": self.z if math.isfinite(self.z) else None,
        }


def verdict(z: float, threshold: float = Z) -> str:
    if not math.isfinite(z):
        return OPEN
    return HOLDS if z >= threshold else FAILS if z <= -threshold else OPEN


def z_score(difference: float, se: float) -> float:
    """difference / se; NaN where the SE is 0 or unknown (n = 1, or seeds that agree exactly)."""
    return difference / se if se > 0 and math.isfinite(se) else math.nan


def bonferroni(cells: int, threshold: float = Z) -> float:
    """The z threshold that keeps a family of ``cells`` two-sided tests at one test's level."""
    level = 2 * stats.norm.sf(threshold)
    return float(stats.norm.isf(level / (2 * max(cells, 1))))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over seeds, or a sum or difference of such means, with what its SE rests on.

    ``parts`` holds each independent mean's squared SE and its degrees of freedom (n − 1), so
    that a difference is judged with Welch–Satterthwaite's degrees of freedom: with three
    seeds a t of 3 is far from three standard errors of a normal.
    """

    value: float
    parts: tuple[tuple[float, float], ...]

    @classmethod
    def over_seeds(cls, values: xr.DataArray) -> Estimate:
        """Mean over the ``seed`` dimension, ignoring runs that diverged (NaN)."""
        data = values.values[np.isfinite(values.values)]
        n = len(data)
        if n < 2:
            return cls(float(np.mean(data)) if n else math.nan, ((math.nan, 0.0),))
        return cls(float(np.mean(data)), ((float(np.var(data, ddof=1) / n), float(n - 1)),))

    @property
    def n(self) -> int:
        return int(self.parts[0][1] + 1) if len(self.parts) == 1 else 0

    @property
    def se(self) -> float:
        return math.sqrt(sum(v for v, _ in self.parts))

    @property
    def df(self) -> float:
        """Welch–Satterthwaite degrees of freedom of the SE."""
        total = sum(v for v, _ in self.parts)
        spread = sum(v * v / d for v, d in self.parts if v > 0)
        return total * total / spread if spread > 0 else math.nan

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.value - other.value, self.parts + other.parts)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.value + other.value, self.parts + other.parts)

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.value * factor, tuple((v * factor**2, d) for v, d in self.parts))

    def shifted(self, offset: float) -> Estimate:
        return Estimate(self.value + offset, self.parts)

    def z(self) -> float:
        """The normal quantile with the same tail probability as t = value / SE on ``df``
        degrees of freedom: a z of 3 means what it means for a normal, whatever n is."""
        t = z_score(self.value, self.se)
        if not math.isfinite(t) or not math.isfinite(self.df):
            return math.nan
        tail = stats.t.sf(abs(t), self.df)
        return math.copysign(float(stats.norm.isf(tail)), t)

    def seeds_to_decide(self, threshold: float = Z, most: int = 100_000) -> int | None:
        """Seeds per configuration at which this difference, if it stayed at its measured
        value with the measured spread, would be decided at z = ``threshold`` (the SE falls
        as 1/√n and the degrees of freedom grow); ``None`` where it cannot be said (no
        spread measured, no difference, or more than ``most``)."""
        seeds = [round(d + 1) for _, d in self.parts]
        if self.value == 0 or not math.isfinite(self.value) or not math.isfinite(self.se):
            return None
        if any(not math.isfinite(v) or n < 2 for (v, _), n in zip(self.parts, seeds, strict=True)):
            return None

        def z_at(n: int) -> float:
            parts = tuple((v * m / n, n - 1.0) for (v, _), m in zip(self.parts, seeds, strict=True))
            return abs(Estimate(self.value, parts).z())

        low, high = min(seeds), min(seeds)
        while z_at(high) < threshold:
            low, high = high, high * 2
            if high > most:
                return None
        while high - low > 1:  # the least n that reaches the threshold
            middle = (low + high) // 2
            low, high = (middle, high) if z_at(middle) < threshold else (low, middle)
        return high if z_at(low) < threshold else low

    def power(self, threshold: float = Z) -> str:
        """What an undecided difference would take: its spread and the seeds a decision needs."""
        spread = "; ".join(
            f"sd {math.sqrt(v * (d + 1)):.3g} over {d + 1:.0f} seeds" for v, d in self.parts
        )
        needed = self.seeds_to_decide(threshold)
        if needed is None:
            return f" Not resolved ({spread}); no number of seeds can be stated from these runs."
        return (
            f" Not resolved ({spread}): at this spread, a difference of {self.value:.3g} "
            f"would be decided (z = {threshold:g}) with {needed} seeds per configuration."
        )

    def text(self, digits: int = 3) -> str:
        n = f", n = {self.n}" if self.n else ""
        return f"{self.value:.{digits}f} ± {self.se:.{digits}f}{n}"

    def test(self, digits: int = 3) -> str:
        """The difference, its SE, t, its degrees of freedom and the equivalent z."""
        t = z_score(self.value, self.se)
        return (
            f"{self.value:.{digits}f} ± {self.se:.{digits}f} (t = {t:.1f} on {self.df:.1f} "
            f"df, z = {self.z():.1f})"
        )


def undecided(difference: Estimate) -> str:
    """The power statement of a difference left unresolved ("" where it is decided)."""
    return difference.power() if verdict(difference.z()) == OPEN else ""


def family(claims: list[Claim], error: float = FAMILY_ERROR) -> list[Claim]:
    """``claims`` decided as one family: Holm's step-down over their p-values at
    family-wise error ``error``. A claim of a difference holds (or does not) where its
    adjusted p is at most ``error``, by the sign of its z; a claim of no difference does not
    hold there and holds elsewhere; a claim with nothing measured stays not resolved. An
    unresolved claim's power statement is made at the family's Bonferroni threshold, the z
    that would decide it whatever its rank."""
    decided = [c for c in claims if math.isfinite(c.p())]
    adjusted = dict(zip(map(id, decided), holm([c.p() for c in decided]), strict=True))
    threshold = float(stats.norm.isf(error / (2 * max(len(decided), 1))))
    out = []
    for claim in claims:
        p = adjusted.get(id(claim), math.nan)
        resolved = p <= error
        if not math.isfinite(p):
            decision = OPEN
        elif claim.same:
            decision = FAILS if resolved else HOLDS
        else:
            decision = (HOLDS if claim.z > 0 else FAILS) if resolved else OPEN
        evidence = claim.evidence
        if claim.power is not None:
            # Alone, an unresolved claim ends with its power statement at z = 3; the family
            # states it at its own threshold instead.
            evidence = evidence.removesuffix(claim.power.power())
            if decision == OPEN:
                evidence += claim.power.power(threshold)
        rule = (
            f"{claim.rule}; in the report, Holm over its {len(decided)} measured claims at "
            f"family-wise error {error:g} (this claim's adjusted p = {p:.2g})"
        )
        out.append(dataclasses.replace(claim, verdict=decision, evidence=evidence, rule=rule))
    return out


SEED_RULE = (
    "t = difference of means over seeds / its SE (sd/√n), Welch–Satterthwaite degrees of "
    "freedom, turned into the normal z of the same tail probability; holds at z ≥ 3"
)
