r"""Variance, bias², MSE, cosine and SNR of N gradient draws, each with a standard error.

Definitions (``shared/spec/estimators.md``, metrics): draws :math:`\hat g_1 \dots \hat g_N \in
\mathbb{R}^P`, reference :math:`g^*` (exact, or itself an estimate from :math:`N_{ref}` draws of
trace variance :math:`V_{ref}`):

- :math:`V = \frac1{N-1}\sum_r \|\hat g_r - \bar g\|^2` (trace of the covariance), and :math:`V/P`;
- :math:`B^2 = \|\bar g - g^*\|^2 - V/N - V_{ref}/N_{ref}` (unbiased for :math:`\|\mathbb{E}\hat g - g^*\|^2`;
  it can be negative when the bias is below the noise);
- :math:`\mathrm{MSE} = B^2 + V = \frac1N\sum_r\|\hat g_r - g^*\|^2 - V_{ref}/N_{ref}`;
- :math:`\cos(\bar g, g^*)` and :math:`\mathrm{SNR} = \|\bar g\| / \sqrt{V/P}`.

Standard errors come from the delta method on the draws. For :math:`B^2`,
:math:`\mathrm{Var}\,\|\bar g - g^*\|^2 \approx 4\delta^\top\Sigma\delta/N + 2\,\mathrm{tr}(\Sigma^2)/N^2`
with :math:`\delta = \mathbb{E}\hat g - g^*` (estimated by :math:`\hat\delta^\top\hat\Sigma\hat\delta - \mathrm{tr}(\hat\Sigma^2)/N`), plus the same terms for the reference taking its
covariance as isotropic (:math:`V_{ref}/P` per coordinate), since only its trace is kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

METRICS = ("variance", "variance_per_coord", "bias2", "mse", "cosine", "snr")

# Above this size tr(Σ²) is bounded by V² rather than computed from a min(N, P)² Gram matrix.
GRAM_LIMIT = 4096


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference gradient g* with its own uncertainty (count 0: exact)."""

    gradient: np.ndarray
    variance: float = 0.0
    count: int = 0
    kind: str = "exact"

    @property
    def noise(self) -> float:
        """:math:`V_{ref}/N_{ref}`, the expected squared error of g* (0 when exact)."""
        return self.variance / self.count if self.count else 0.0


def trace_variance(draws: np.ndarray) -> tuple[float, float]:
    """:math:`V = \frac1{N-1}\\sum_r\\|\\hat g_r - \bar g\\|^2` of (N, P) draws, and its standard error."""
    n = draws.shape[0]
    terms = ((draws - draws.mean(0)) ** 2).sum(1) * n / (n - 1)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n))


def _trace_covariance_squared(centred: np.ndarray) -> float:
    n, p = centred.shape
    if min(n, p) > GRAM_LIMIT:
        terms = (centred**2).sum(1)
        return float(terms.sum() / (n - 1)) ** 2
    gram = centred.T @ centred if p <= n else centred @ centred.T
    return float((gram**2).sum()) / (n - 1) ** 2


def _projection_se(centred: np.ndarray, direction: np.ndarray) -> float:
    """Standard error of ⟨ḡ, direction⟩ from the spread of the draws' projections."""
    projections = centred @ direction
    return float(projections.std(ddof=1) / np.sqrt(len(projections)))


def gradient_metrics(draws: np.ndarray | torch.Tensor, reference: Reference) -> dict[str, float]:
    """All metrics of ``draws`` (N × P, N >= 2) against ``reference``, with ``*_se`` companions."""
    if isinstance(draws, torch.Tensor):
        draws = draws.detach().cpu().double().numpy()
    d = np.asarray(draws, dtype=float)
    if d.ndim != 2 or d.shape[0] < 2:
        raise ValueError(f"draws must be an (N, P) array with N >= 2, got shape {d.shape}")
    g_star = np.asarray(reference.gradient, float).reshape(-1)
    if g_star.shape[0] != d.shape[1]:
        raise ValueError(f"reference has {g_star.shape[0]} coordinates, draws have {d.shape[1]}")
    n, p = d.shape
    mean = d.mean(0)
    centred = d - mean
    variance, variance_se = trace_variance(d)

    delta = mean - g_star
    distance2 = float(delta @ delta)
    bias2 = distance2 - variance / n - reference.noise
    # Spread of ‖ḡ − g*‖² from the draws, and from the reference's own noise (isotropic).
    # δ̂ᵀΣ̂δ̂ overestimates δᵀΣδ by tr(Σ²)/N (δ̂ is itself noisy); subtracting that keeps the SE
    # right for a biased estimator. The positive part leaves it conservative (by up to ~1.4×)
    # for an unbiased one, where the noisy difference is as often above zero as below.
    trace_sq = _trace_covariance_squared(centred)
    spread = max(0.0, n * _projection_se(centred, delta) ** 2 - trace_sq / n)
    draws_var = 4 * spread / n + 2 * trace_sq / n**2
    reference_var = 0.0
    if reference.count:
        per_coord = reference.variance / p
        reference_var = 4 * distance2 * per_coord / reference.count
        reference_var += 2 * p * per_coord**2 / reference.count**2

    errors = ((d - g_star) ** 2).sum(1)
    mse = float(errors.mean()) - reference.noise
    mse_se = float(np.sqrt(errors.var(ddof=1) / n + reference_var))

    mean_norm, ref_norm = float(np.linalg.norm(mean)), float(np.linalg.norm(g_star))
    if mean_norm > 0 and ref_norm > 0:
        cosine = float(mean @ g_star) / (mean_norm * ref_norm)
        direction = g_star / (mean_norm * ref_norm) - cosine * mean / mean_norm**2
        cosine_se = _projection_se(centred, direction)
    else:
        cosine = cosine_se = float("nan")
    if variance > 0 and mean_norm > 0:
        snr = mean_norm / np.sqrt(variance / p)
        norm_se = _projection_se(centred, mean / mean_norm)
        snr_se = snr * float(np.hypot(norm_se / mean_norm, variance_se / (2 * variance)))
    else:
        snr = snr_se = float("nan")
    return {
        "variance": variance,
        "variance_se": variance_se,
        "variance_per_coord": variance / p,
        "variance_per_coord_se": variance_se / p,
        "bias2": bias2,
        "bias2_se": float(np.sqrt(draws_var + reference_var)),
        "mse": mse,
        "mse_se": mse_se,
        "cosine": cosine,
        "cosine_se": cosine_se,
        "snr": float(snr),
        "snr_se": float(snr_se),
        "mean_norm": mean_norm,
    }
