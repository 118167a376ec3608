"""Statistical assertions for randomized tests.

Policy on false failures (cf. torch's "Note [Randomized statistical tests]"): every test fixes
its seeds, so a run is deterministic and a failure reproduces. Tolerances are z standard
errors with z = 5 (two-sided false-failure rate 5.7e-7 per checked coordinate); with fewer
than 10⁴ coordinate checks in the suite a fresh seed fails the suite with probability < 1%.
Tolerances are never widened to make a test pass: a failure means the estimator, or the
standard error, is wrong.
"""

from __future__ import annotations

import numpy as np
import torch

Z = 5.0


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_within_se(
    draws: torch.Tensor | np.ndarray,
    expected: torch.Tensor | np.ndarray,
    z: float = Z,
    extra_se: torch.Tensor | np.ndarray | float = 0.0,
) -> None:
    """The mean of ``draws`` (first axis: draws) equals ``expected`` within z standard errors.

    ``extra_se`` adds the (independent) standard error of ``expected`` when it is itself an
    estimate. Coordinates with zero spread must match to floating-point precision.
    """
    d = as_numpy(draws)
    e = as_numpy(expected)
    mean = d.mean(0)
    se = np.sqrt(d.var(0, ddof=1) / d.shape[0] + as_numpy(extra_se) ** 2)
    tol = z * se + 1e-9 * (1 + np.abs(e))
    bad = np.abs(mean - e) > tol
    if bad.any():
        raise AssertionError(
            f"mean differs from expected by more than {z} SE at {int(bad.sum())} coordinate(s):\n"
            f"mean     = {mean[bad]}\nexpected = {e[bad]}\nse       = {se[bad]}"
        )


def trace_variance(draws: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Trace of the covariance of ``draws`` (N × P) and its standard error.

    V̂ = (1/(N−1)) Σ‖g_r − ḡ‖²; its SE is the spread of the terms ‖g_r − ḡ‖² over √N
    (delta method; the O(1/N) correction for using ḡ is negligible at N ≥ 10³).
    """
    d = as_numpy(draws).reshape(len(draws), -1)
    n = d.shape[0]
    terms = ((d - d.mean(0)) ** 2).sum(1) * n / (n - 1)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n))


def variance_excess(
    draws: torch.Tensor | np.ndarray, baseline: torch.Tensor | np.ndarray
) -> tuple[float, float]:
    """(V_draws − V_baseline) / its SE: negative where ``draws`` has the lower variance
    (independent samples, so the SEs add in quadrature)."""
    v, se = trace_variance(draws)
    vb, seb = trace_variance(baseline)
    return v - vb, (v - vb) / float(np.hypot(se, seb))


def assert_variance_not_above(
    draws: torch.Tensor | np.ndarray, baseline: torch.Tensor | np.ndarray, z: float = Z
) -> float:
    """The trace variance of ``draws`` is at most that of ``baseline`` within z SE; returns the
    z-score of the difference (so a claim's margin can be reported)."""
    _, score = variance_excess(draws, baseline)
    if score > z:
        v, se = trace_variance(draws)
        vb, seb = trace_variance(baseline)
        raise AssertionError(
            f"variance {v:.4g} ± {se:.2g} is above the baseline's {vb:.4g} ± {seb:.2g} "
            f"by {score:.1f} SE"
        )
    return score
