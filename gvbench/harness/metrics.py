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
with :math:`\delta = \mathbb{E}\hat g - g^*` (estimated by :math:`\hat\delta^\top\hat\Sigma\hat\delta - \mathrm{tr}(\Sigma^2)/N`), plus the same terms for the reference taking its
covariance as isotropic (:math:`V_{ref}/P` per coordinate), since only its trace is kept.

The draws are reduced as they are produced, in bounded memory (a few P-vectors and a few
scalars per draw, never the N × P draws): :class:`GradientMoments` makes two passes over the
same seeded draws. The first finds :math:`\bar g`; the second, which replays them, reduces
each draw to the scalars the standard errors need (:math:`\|\hat g_r - \bar g\|^2`, its
projections on :math:`\hat\delta`, on :math:`\bar g` and on the cosine's gradient, and
:math:`\|\hat g_r - g^*\|^2`), so every metric and SE is the one the draws in memory would
give. :math:`\mathrm{tr}(\Sigma^2)` is the U-statistic over consecutive pairs,
:math:`\mathrm{mean}_r \langle \hat g_r - \bar g, \hat g_{r+1} - \bar g\rangle^2`, unbiased
for independent draws and O(NP) to compute.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

METRICS = ("variance", "variance_per_coord", "bias2", "mse", "cosine", "snr")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference gradient g* with its own uncertainty (count 0: exact).

    ``coordinate_variance`` (per coordinate, summing to ``variance``) lets a parameter group
    subtract its own share of the reference's noise.
    """

    gradient: np.ndarray
    variance: float = 0.0
    count: int = 0
    kind: str = "exact"
    coordinate_variance: np.ndarray | None = None

    @property
    def noise(self) -> float:
        """:math:`V_{ref}/N_{ref}`, the expected squared error of g* (0 when exact)."""
        return self.variance / self.count if self.count else 0.0

    def restrict(self, columns: np.ndarray) -> Reference:
        """The reference of the coordinates ``columns`` (a parameter group)."""
        gradient = np.asarray(self.gradient, float).reshape(-1)
        if self.coordinate_variance is not None:
            per_coordinate = np.asarray(self.coordinate_variance)[columns]
            variance = float(per_coordinate.sum())
        else:  # only the trace is known: its share, as if isotropic
            per_coordinate = None
            variance = self.variance * len(columns) / max(1, gradient.size)
        return Reference(gradient[columns], variance, self.count, self.kind, per_coordinate)


def trace_variance(draws: np.ndarray | torch.Tensor) -> tuple[float, float]:
    r""":math:`V = \frac1{N-1}\sum_r\|\hat g_r - \bar g\|^2` of (N, P) draws, and its standard error."""
    d = draws.detach().cpu().double().numpy() if isinstance(draws, torch.Tensor) else draws
    n = d.shape[0]
    terms = ((d - d.mean(0)) ** 2).sum(1) * n / (n - 1)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n))


class GradientMoments:
    """Metrics of a stream of gradient draws in bounded memory, in two passes over the same draws.

    ``add(chunk)`` (R × P) during the first pass; ``replay()``; ``add(chunk)`` again with the
    same draws in the same order; ``metrics()``. Memory: ḡ, g* and three other P-vectors,
    the last draw, and five float64 scalars per draw.
    """

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.g_star = torch.as_tensor(np.asarray(reference.gradient, float).reshape(-1))
        self.count = 0
        self.total: torch.Tensor | None = None
        self.replaying = False
        self.seen = 0
        self.scalars: list[torch.Tensor] = []
        self.pair_products: list[torch.Tensor] = []
        self.previous: torch.Tensor | None = None

    def add(self, chunk: torch.Tensor) -> None:
        """Reduce one chunk of draws (R × P, any float dtype and device)."""
        chunk = chunk.detach().to(torch.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.g_star.shape[0]:
            raise ValueError(
                f"draws must be (R, {self.g_star.shape[0]}) chunks matching the reference, "
                f"got shape {tuple(chunk.shape)}"
            )
        if not self.replaying:
            total = chunk.sum(0)
            self.total = total if self.total is None else self.total + total
            self.count += chunk.shape[0]
            return
        self.seen += chunk.shape[0]
        if self.seen > self.count:
            raise ValueError("the replay produced more draws than the first pass")
        centred = chunk - self._mean
        pairs = centred if self.previous is None else torch.cat([self.previous, centred])
        self.pair_products.append((pairs[1:] * pairs[:-1]).sum(1).square().cpu())
        self.previous = centred[-1:]
        projections = centred @ self._directions  # (R, 3)
        errors = (chunk - self.g_star).square().sum(1)
        self.scalars.append(
            torch.cat(
                [centred.square().sum(1, keepdim=True), projections, errors[:, None]], 1
            ).cpu()
        )

    def replay(self) -> None:
        """End the first pass: ḡ is known, so the second pass can project every draw."""
        if self.count < 2:
            raise ValueError(f"need at least 2 draws, got {self.count}")
        self.replaying = True
        # The P-vectors stay where the draws are (a GPU): only per-draw scalars come back.
        self._mean = self.total / self.count
        self.g_star = self.g_star.to(self._mean.device)
        mean_norm = float(self._mean.norm())
        ref_norm = float(self.g_star.norm())
        delta = self._mean - self.g_star
        if mean_norm > 0 and ref_norm > 0:
            cosine = float(self._mean @ self.g_star) / (mean_norm * ref_norm)
            cos_direction = (
                self.g_star / (mean_norm * ref_norm) - cosine * self._mean / mean_norm**2
            )
            unit = self._mean / mean_norm
        else:
            cos_direction = unit = torch.zeros_like(self._mean)
        self._directions = torch.stack([delta, cos_direction, unit], 1)  # (P, 3)

    def metrics(self) -> dict[str, float]:
        """All metrics with ``*_se`` companions (see the module docstring)."""
        if not self.replaying or self.seen != self.count:
            raise ValueError(
                f"the replay gave {self.seen} draws, the first pass {self.count}: both passes "
                "must see the same draws"
            )
        n, p = self.count, self.g_star.shape[0]
        scalars = torch.cat(self.scalars).numpy()
        squared, along_delta, along_cosine, along_mean, errors = scalars.T
        reference = self.reference
        mean = self._mean.cpu().numpy()
        g_star = self.g_star.cpu().numpy()

        def se(values: np.ndarray) -> float:
            return float(values.std(ddof=1) / np.sqrt(n))

        terms = squared * n / (n - 1)
        variance, variance_se = float(terms.mean()), se(terms)
        delta = mean - g_star
        distance2 = float(delta @ delta)
        bias2 = distance2 - variance / n - reference.noise
        products = torch.cat(self.pair_products).numpy()
        trace_sq = float(products.mean()) if len(products) else variance**2
        # δ̂ᵀΣ̂δ̂ overestimates δᵀΣδ by tr(Σ²)/N (δ̂ is itself noisy); subtracting that keeps
        # the SE right for a biased estimator. The positive part leaves it conservative (by up
        # to ~1.4×) for an unbiased one, where the noisy difference is as often above 0 as below.
        spread = max(0.0, n * se(along_delta) ** 2 - trace_sq / n)
        draws_var = 4 * spread / n + 2 * trace_sq / n**2
        reference_var = 0.0
        if reference.count:
            per_coord = reference.variance / p
            reference_var = 4 * distance2 * per_coord / reference.count
            reference_var += 2 * p * per_coord**2 / reference.count**2
        mse = float(errors.mean()) - reference.noise
        mse_se = float(np.sqrt(errors.var(ddof=1) / n + reference_var))
        mean_norm, ref_norm = float(np.linalg.norm(mean)), float(np.linalg.norm(g_star))
        if mean_norm > 0 and ref_norm > 0:
            cosine = float(mean @ g_star) / (mean_norm * ref_norm)
            cosine_se = se(along_cosine)
        else:
            cosine = cosine_se = float("nan")
        if variance > 0 and mean_norm > 0:
            snr = mean_norm / np.sqrt(variance / p)
            snr_se = snr * float(np.hypot(se(along_mean) / mean_norm, variance_se / (2 * variance)))
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


def gradient_metrics(draws: np.ndarray | torch.Tensor, reference: Reference) -> dict[str, float]:
    """All metrics of ``draws`` (N × P, N >= 2) held in memory against ``reference``."""
    d = (
        torch.as_tensor(np.asarray(draws, dtype=float))
        if not isinstance(draws, torch.Tensor)
        else draws
    )
    if d.ndim != 2 or d.shape[0] < 2:
        raise ValueError(f"draws must be an (N, P) array with N >= 2, got shape {tuple(d.shape)}")
    g_star = np.asarray(reference.gradient, float).reshape(-1)
    if g_star.shape[0] != d.shape[1]:
        raise ValueError(f"reference has {g_star.shape[0]} coordinates, draws have {d.shape[1]}")
    moments = GradientMoments(reference)
    moments.add(d)
    moments.replay()
    moments.add(d)
    return moments.metrics()
