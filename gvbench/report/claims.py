"""The paper's claims, each decided from a reproduction's results with its standard error.

A claim compares two quantities; its z-score is their difference over the SE of the
difference. It **holds** at z ≥ 3, **does not hold** at z ≤ −3 and is **not resolved** in
between — three standard errors, so that a verdict is rarely a fluke. Where a claim is checked
over several cells at once, the threshold is Bonferroni-corrected for their number. Over
seeds, the SE is the spread between seeds (sample standard deviation / √n) and the difference
is judged on Student's t with Welch–Satterthwaite degrees of freedom, expressed as the normal
z with the same tail probability (so that "three standard errors" keeps its meaning with
three or four seeds).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr
from scipy import stats

from gvbench.harness.compare import variance_ratio

Z = 3.0
HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved"


@dataclasses.dataclass(frozen=True)
class Claim:
    experiment: str
    statement: str  # what the paper says
    verdict: str  # HOLDS, FAILS or OPEN
    evidence: str  # the numbers behind the verdict
    rule: str  # how the verdict was decided


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


def _log_ratio(ds: xr.Dataset, tau: float, k: int) -> tuple[float, float]:
    """log(Var ST-GS / Var GR-MCK) and its SE."""
    compared = variance_ratio(ds).sel(tau=tau, k=k)
    return float(np.log(compared["ratio"])), float(compared["log_se"])


def toy_claims(toy: xr.Dataset) -> list[Claim]:
    """Variance reduction grows as τ falls and with K; the bias is that of ST-GS."""
    ds = toy.isel(batch_size=0)
    taus, ks = sorted(ds["tau"].values), sorted(ds["k"].values)
    low, high, k_max, k_min = taus[0], taus[-1], ks[-1], ks[0]
    rule = "z = difference of log variance ratios / its SE (delta method); holds at z ≥ 3"
    (a, sa), (b, sb) = _log_ratio(ds, low, k_max), _log_ratio(ds, high, k_max)
    z_tau = z_score(a - b, math.hypot(sa, sb))
    ratios = ", ".join(f"τ = {t:g}: {math.exp(_log_ratio(ds, t, k_max)[0]):.3g}" for t in taus)
    claims = [
        Claim(
            "toy",
            "Gumbel-Rao's variance reduction over ST-GS grows as the temperature falls.",
            verdict(z_tau),
            f"Var ST-GS / Var GR-MC{k_max}: {ratios}; log-ratio at τ = {low:g} exceeds τ = "
            f"{high:g} by {a - b:.2f} ± {math.hypot(sa, sb):.2f} (z = {z_tau:.1f}).",
            rule,
        )
    ]
    (c, sc), (d, sd) = _log_ratio(ds, low, k_max), _log_ratio(ds, low, k_min)
    z_k = z_score(c - d, math.hypot(sc, sd))
    ratios = ", ".join(f"K = {k}: {math.exp(_log_ratio(ds, low, k)[0]):.3g}" for k in ks)
    claims.append(
        Claim(
            "toy",
            "Gumbel-Rao's variance reduction grows with the number of samples K.",
            verdict(z_k),
            f"Var ST-GS / Var GR-MCK at τ = {low:g}: {ratios}; log-ratio at K = {k_max} exceeds "
            f"K = {k_min} by {c - d:.2f} ± {math.hypot(sc, sd):.2f} (z = {z_k:.1f}).",
            rule,
        )
    )
    st = ds.sel(estimator="st_gumbel_softmax")
    gr = ds.sel(estimator="gumbel_rao")
    z_bias = ((gr["bias2"] - st["bias2"]) / np.hypot(gr["bias2_se"], st["bias2_se"])).values
    cells = int(np.isfinite(z_bias).sum())
    threshold = bonferroni(cells)
    # No finite cell (every SE 0 or missing) decides nothing.
    worst = float(np.max(np.abs(z_bias[np.isfinite(z_bias)]))) if cells else math.nan
    claims.append(
        Claim(
            "toy",
            "Gumbel-Rao has the same bias as ST-GS (it is its conditional expectation).",
            OPEN if not cells else HOLDS if worst < threshold else FAILS,
            f"bias² of GR-MCK − bias² of ST-GS over {cells} (τ, K) cells: largest |z| = "
            f"{worst:.1f} (threshold {threshold:.2f}, Bonferroni for {cells} cells).",
            "holds when no cell's difference is resolved; does not hold when one is",
        )
    )
    return claims


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


def _undecided(difference: Estimate) -> str:
    """The power statement of a difference left unresolved ("" where it is decided)."""
    return difference.power() if verdict(difference.z()) == OPEN else ""


SEED_RULE = (
    "t = difference of means over seeds / its SE (sd/√n), Welch–Satterthwaite degrees of "
    "freedom, turned into the normal z of the same tail probability; holds at z ≥ 3"
)


def listops_claims(listops: xr.Dataset) -> list[Claim]:
    """ST-GS degrades at τ = 0.01; GR-MCK does not (it trains better than ST-GS there)."""
    taus = sorted(listops["tau"].values)
    runs = list(listops["run"].values)
    gr_runs = [r for r in runs if str(r).startswith("GR-MC")]
    if "ST-GS" not in runs or not gr_runs or len(taus) < 2:
        return []
    gr = max(gr_runs, key=lambda r: int(str(r)[5:]))
    low, next_up = taus[0], taus[1]
    claims = []
    for length in listops["max_length"].values:
        acc = listops["test_accuracy"].sel(max_length=length)

        def at(run: str, tau: float, acc: xr.DataArray = acc) -> Estimate:
            return Estimate.over_seeds(acc.sel(run=run, tau=tau))

        drop = at("ST-GS", next_up) - at("ST-GS", low)
        gr_drop = at(gr, next_up) - at(gr, low)
        claims.append(
            Claim(
                "listops",
                f"L = {length}: ST-GS's test accuracy degrades at τ = {low:g}.",
                verdict(drop.z()),
                f"ST-GS at τ = {next_up:g}: {at('ST-GS', next_up).text()}; at τ = {low:g}: "
                f"{at('ST-GS', low).text()}; drop {drop.test()}. For comparison {gr}: "
                f"{at(gr, next_up).text()} and {at(gr, low).text()}, drop {gr_drop.test()}."
                + _undecided(drop),
                SEED_RULE,
            )
        )
        gain = at(gr, low) - at("ST-GS", low)
        claims.append(
            Claim(
                "listops",
                f"L = {length}: at τ = {low:g}, GR-MCK keeps training where ST-GS does not "
                f"({gr} reaches a higher test accuracy than ST-GS).",
                verdict(gain.z()),
                f"at τ = {low:g}, {gr}: {at(gr, low).text()}; ST-GS: {at('ST-GS', low).text()}; "
                f"difference {gain.test()}." + _undecided(gain),
                SEED_RULE,
            )
        )
    return claims


def vae_claims(vae: xr.Dataset, margin: float = 0.01) -> list[Claim]:
    """GR-MCK beats ST-GS at the small batch size (more than at the large one) and is
    competitive with GS at the largest arity (within ``margin`` of GS's bound)."""
    runs = list(vae["run"].values)
    gr_runs = [r for r in runs if str(r).startswith("GR-MC")]
    if "ST-GS" not in runs or not gr_runs:
        return []
    gr = max(gr_runs, key=lambda r: int(str(r)[5:]))
    bound = vae["test_iw_nll"]
    arities = [int(a) for a in vae["arity"].values]
    small, large = int(vae["batch_size"].min()), int(vae["batch_size"].max())

    def at(run: str, arity: int, batch_size: int) -> Estimate:
        return Estimate.over_seeds(bound.sel(run=run, arity=arity, batch_size=batch_size))

    def advantage(batch_size: int) -> tuple[Estimate, str]:
        """Mean over arities of (ST-GS − GR-MCK) bound: > 0 when GR-MCK is better."""
        per_arity = [at("ST-GS", a, batch_size) - at(gr, a, batch_size) for a in arities]
        total = per_arity[0]
        for part in per_arity[1:]:
            total = total + part
        text = "; ".join(
            f"a = {a}: {d.value:.2f} ± {d.se:.2f} nats"
            for a, d in zip(arities, per_arity, strict=True)
        )
        return total.scaled(1 / len(arities)), text

    gain_small, text_small = advantage(small)
    claims = [
        Claim(
            "vae",
            f"GR-MCK trains a better model than ST-GS at the small batch size (B = {small}).",
            verdict(gain_small.z()),
            f"test −log p(x) bound of ST-GS − {gr} at B = {small}, mean over arities, in nats: "
            f"{gain_small.test(2)}; {text_small}." + _undecided(gain_small),
            SEED_RULE,
        )
    ]
    if large != small:
        gain_large, text_large = advantage(large)
        diff = gain_small - gain_large
        claims.append(
            Claim(
                "vae",
                f"GR-MCK helps most at the small batch size (its advantage over ST-GS is larger "
                f"at B = {small} than at B = {large}).",
                verdict(diff.z()),
                f"advantage at B = {small}: {gain_small.value:.2f} ± {gain_small.se:.2f}; at "
                f"B = {large}: {gain_large.value:.2f} ± {gain_large.se:.2f} nats ({text_large}); "
                f"difference {diff.test(2)}." + _undecided(diff),
                SEED_RULE,
            )
        )
    if "GS" in runs:
        arity = max(arities)
        tests, texts, slacks = [], [], []
        for b in (int(b) for b in vae["batch_size"].values):
            worse = at(gr, arity, b) - at("GS", arity, b)
            allowed = margin * at("GS", arity, b).value
            # Equivalence test: competitive when GR-MCK's bound is resolved to be at most
            # `margin` worse than GS's; not competitive when resolved to be more than that.
            slack = worse.scaled(-1).shifted(allowed)
            tests.append(slack.z())
            slacks.append(slack)
            texts.append(
                f"B = {b}: {gr} {at(gr, arity, b).text(2)} vs GS {at('GS', arity, b).text(2)} "
                f"nats, {gr} − GS = {worse.value:.2f} ± {worse.se:.2f} (allowed {allowed:.2f}; "
                f"z of allowed − difference = {slack.z():.1f})"
            )
        z = min(tests) if all(map(math.isfinite, tests)) else math.nan
        claims.append(
            Claim(
                "vae",
                f"GR-MCK is competitive with GS at the largest arity (a = {arity}).",
                verdict(z),
                "; ".join(texts)
                + f"; smallest z = {z:.1f}."
                + (_undecided(slacks[int(np.argmin(tests))]) if math.isfinite(z) else ""),
                f"competitive: the bound of GR-MCK is at most {margin:.0%} of GS's above it; "
                "z of (allowed − difference) as for the other claims; holds at z ≥ 3 in every "
                "batch size",
            )
        )
    return claims


def _lower(
    ds: xr.Dataset, better: str, worse: str, metric: str, pairs: list[tuple[dict, dict]]
) -> tuple[str, str] | None:
    """Verdict and evidence for "``better``'s ``metric`` is below ``worse``'s" over the cells
    ``pairs`` (selectors of the two), Bonferroni-corrected for their number."""
    zs, parts = [], []
    for first, second in pairs:
        a, b = ds.sel(estimator=better, **first), ds.sel(estimator=worse, **second)
        if str(a["status"].values) != "done" or str(b["status"].values) != "done":
            continue
        va, sa = float(a[metric]), float(a[f"{metric}_se"])
        vb, sb = float(b[metric]), float(b[f"{metric}_se"])
        z = z_score(vb - va, math.hypot(sa, sb))
        zs.append(z)
        where = ", ".join(f"{k} = {v:g}" for k, v in first.items()) or "—"
        parts.append(f"{where}: {va:.4g} ± {sa:.2g} against {vb:.4g} ± {sb:.2g} (z = {z:.1f})")
    if not zs:
        return None  # neither applies here (e.g. a binary-only estimator on a ternary task)
    threshold = bonferroni(len(zs))
    decided = HOLDS if min(zs) >= threshold else FAILS if min(zs) <= -threshold else OPEN
    return decided, "; ".join(parts) + f" (threshold {threshold:.2f} over {len(zs)} cells)"


def field_claims(ds: xr.Dataset, experiment: str) -> list[Claim]:
    """The variance claims of the field's estimators since 2021, on one of the field sweeps
    (see :data:`gvbench.reproduce.FIELD_TASKS`), each where both sides applied."""
    ds = ds.isel(batch_size=0)
    names = set(ds["estimator"].values.tolist())
    ks = [int(k) for k in ds["k"].values]
    tau = {"tau": float(ds["tau"].values[0])}  # the unbiased estimators take no τ
    same_k = [({**tau, "k": k}, {**tau, "k": k}) for k in ks]
    rule = (
        "z = difference of the two variances / its SE, per cell; holds when every cell's "
        "z ≥ the Bonferroni threshold, does not hold when one is ≤ −threshold"
    )
    wanted = [
        (
            "indecater",
            "rloo",
            "work_normalized_variance",
            "IndeCateR has a lower variance than RLOO at an equal number of objective "
            "evaluations (variance × evaluations per draw, at each K).",
            same_k,
        ),
        ("double_cv", "rloo", "variance", "Double CV is below RLOO at equal K.", same_k),
        (
            "rodeo",
            "double_cv",
            "variance",
            "RODEO, once adapted, is below Double CV at equal K.",
            same_k,
        ),
        ("carms", "rloo", "variance", "CARMS is below RLOO at equal K.", same_k),
        (
            "categorical_disarm",
            "rloo",
            "variance",
            "Coupled categorical DisARM is below its uncoupled two-sample form (RLOO, K = 2).",
            [({**tau, "k": ks[0]}, {**tau, "k": 2})] if 2 in ks else [],
        ),
    ]
    claims = []
    for better, worse, metric, statement, pairs in wanted:
        if better not in names or worse not in names:
            continue
        decided = _lower(ds, better, worse, metric, pairs)
        if decided is not None:
            claims.append(Claim(experiment, statement, *decided, rule))
    return claims
