"""The toy study's claims: the paper's on its toy (§5.1), and the field's estimators' on the
field sweeps, each decided from the sweep's SEs (see :mod:`gvbench.report.claims`)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from gvbench.harness.compare import variance_ratio
from gvbench.report.claims import FAILS, HOLDS, OPEN, Claim, bonferroni, verdict, z_score


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
            z=z_tau,
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
            z=z_k,
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
            z=worst,
            tests=max(cells, 1),
            same=True,
        )
    )
    return claims


def _lower(
    ds: xr.Dataset, better: str, worse: str, metric: str, pairs: list[tuple[dict, dict]]
) -> tuple[str, str, float, int] | None:
    """Verdict, evidence, the smallest z and the number of cells for "``better``'s
    ``metric`` is below ``worse``'s" over the cells ``pairs`` (selectors of the two),
    Bonferroni-corrected for their number."""
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
    evidence = "; ".join(parts) + f" (threshold {threshold:.2f} over {len(zs)} cells)"
    return decided, evidence, min(zs), len(zs)


def field_claims(ds: xr.Dataset, experiment: str) -> list[Claim]:
    """The variance claims of the field's estimators since 2021, on one of the field sweeps
    (see :data:`gvbench.toy_study.presets.FIELD_TASKS`), each where both sides applied."""
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
            outcome, evidence, z, cells = decided
            claims.append(Claim(experiment, statement, outcome, evidence, rule, z, cells))
    return claims
