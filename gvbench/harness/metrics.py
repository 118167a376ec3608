r"""Variance, bias², MSE, cosine and SNR of N gradient draws, each with a standard error.

For draws :math:`\hat g_1 \dots \hat g_N \in \mathbb{R}^P` and a reference :math:`g^*` (exact,
or itself an estimate from :math:`N_{ref}` draws of trace variance :math:`V_{ref}`):

- :math:`V = \frac1{N-1}\sum_t \|\hat g_t - \bar g\|^2` (the trace of the covariance), and
  :math:`V/P`;
- :math:`B^2 = \|\bar g - g^*\|^2 - V/N - V_{ref}/N_{ref}`, unbiased for
  :math:`\|\mathbb{E}\hat g - g^*\|^2` (it can be negative where the bias is below the noise);
- :math:`\mathrm{MSE} = \frac1N\sum_t\|\hat g_t - g^*\|^2 - V_{ref}/N_{ref}`;
- :math:`\cos(\bar g, g^*)` and :math:`\mathrm{SNR} = \|\bar g\| / \sqrt{V/P}`.

The draws are reduced in one pass and bounded memory (:mod:`gvbench.harness.moments`); the
metrics and their standard errors are formed from what that pass keeps
(:mod:`gvbench.harness.estimates`). The standard errors' derivation, and what the intervals
built from them cover, are on the documentation's page on the metrics (``docs/metrics.md``).
Which metrics there are, with their names and units, is :mod:`gvbench.harness.quantities`.
"""

from __future__ import annotations

import numpy as np
import torch

from gvbench.harness.estimates import Reference
from gvbench.harness.moments import MIN_DRAWS, GradientMoments, NonFiniteDraws
from gvbench.harness.quantities import METRICS, UNITS_POWER

__all__ = [
    "METRICS",
    "MIN_DRAWS",
    "UNITS_POWER",
    "GradientMoments",
    "NonFiniteDraws",
    "Reference",
    "gradient_metrics",
    "trace_variance",
]


def trace_variance(draws: np.ndarray | torch.Tensor) -> tuple[float, float]:
    r""":math:`V = \frac1{N-1}\sum_t\|\hat g_t - \bar g\|^2` of (N, P) draws held in memory, and
    its standard error :math:`\mathrm{sd}_t(\frac{N}{N-1}\|\hat g_t - \bar g\|^2)/\sqrt N`."""
    d = draws.detach().cpu().double().numpy() if isinstance(draws, torch.Tensor) else draws
    n = d.shape[0]
    terms = ((d - d.mean(0)) ** 2).sum(1) * n / (n - 1)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n))


def gradient_metrics(draws: np.ndarray | torch.Tensor, reference: Reference) -> dict[str, float]:
    """All metrics of ``draws`` (N × P, N >= 4) held in memory against ``reference``."""
    d = (
        torch.as_tensor(np.asarray(draws, dtype=float))
        if not isinstance(draws, torch.Tensor)
        else draws.detach()
    )
    if d.ndim != 2 or d.shape[0] < MIN_DRAWS:
        raise ValueError(
            f"draws must be an (N, P) array with N >= {MIN_DRAWS}, got shape {tuple(d.shape)}"
        )
    g_star = np.asarray(reference.gradient, float).reshape(-1)
    if g_star.shape[0] != d.shape[1]:
        raise ValueError(f"reference has {g_star.shape[0]} coordinates, draws have {d.shape[1]}")
    moments = GradientMoments(reference)
    moments.add(d.clone())  # centred in place: the caller's draws stay as they are
    return moments.metrics()
