r"""Variance, bias², MSE, cosine and SNR, with standard errors, from what one pass keeps.

The reducer (:class:`~gvbench.harness.moments.GradientMoments`) keeps a few scalars per draw,
per pair of draws and per block of draws (:class:`DrawStatistics`); the functions here turn
them into the metrics against a :class:`Reference`. The derivation of every standard error is
in the documentation's page on the metrics (``docs/metrics.md``). Notation: N draws
:math:`\hat g_t \in \mathbb{R}^P` of covariance Σ, mean :math:`\bar g`, reference :math:`g^*`,
:math:`\delta = \mathbb{E}\hat g - g^*`; draw t lies in block b, centred at :math:`c_b`, the
mean of the :math:`m_b` draws before it; pair differences
:math:`\Delta_i = (\hat g_{2i} - \hat g_{2i+1})/\sqrt2`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gvbench.harness.quantities import UNITS_POWER


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
    # tr Σ_ref² of one reference draw, and the standard error of ``variance``, estimated from
    # the reference's own draws (pair differences, as for a cell); NaN where unknown.
    covariance_square: float = math.nan
    variance_se: float = math.nan

    @property
    def noise(self) -> float:
        """:math:`V_{ref}/N_{ref}`, the expected squared error of g* (0 when exact)."""
        return self.variance / self.count if self.count else 0.0

    def noise_square(self) -> float:
        r""":math:`\mathrm{tr}\,\Sigma_{ref}^2`, or its bound :math:`V_{ref}^2` where it was not
        measured (it holds for any covariance: :math:`\sum\lambda^2 \le (\sum\lambda)^2`)."""
        if math.isfinite(self.covariance_square):
            return max(0.0, min(self.covariance_square, self.variance**2))
        return self.variance**2

    def restrict(self, columns: np.ndarray) -> Reference:
        """The reference of the coordinates ``columns`` (a parameter group)."""
        gradient = np.asarray(self.gradient, float).reshape(-1)
        if self.coordinate_variance is not None:
            per_coordinate = np.asarray(self.coordinate_variance)[columns]
            variance = float(per_coordinate.sum())
        else:  # only the trace is known: its share, as if isotropic
            per_coordinate = None
            variance = self.variance * len(columns) / max(1, gradient.size)
        # A principal block of Σ has tr Σ_gg² <= tr Σ²; the group's own V̂'s spread is unknown.
        return Reference(
            gradient[columns],
            variance,
            self.count,
            self.kind,
            per_coordinate,
            covariance_square=min(self.noise_square(), variance**2),
        )

    def noise_in_units(self, unit: float) -> Reference:
        """Its noise (variance, tr Σ_ref², the variance's SE) in units of ``unit`` (the
        gradient's); the gradient itself is left out."""
        return Reference(
            np.zeros(0),
            self.variance / unit**2,
            self.count,
            self.kind,
            covariance_square=self.noise_square() / unit**4,
            variance_se=self.variance_se / unit**2,
        )


@dataclasses.dataclass(frozen=True)
class DrawStatistics:
    r"""What one pass keeps of N draws, over the coordinates of one group.

    Each draw is kept as :math:`x_t = \hat g_t - c_b`, centred at its block's centre.

    Attributes:
        draws: (N, 3): :math:`\|x_t\|^2`, :math:`\langle x_t, c_b - g^*\rangle` and
            :math:`\langle x_t, g^*\rangle` of each draw.
        constants: :math:`\|c_b - g^*\|^2` of each block.
        blocks: each draw's block b.
        before: :math:`m_b`, the draws before each block.
        first: the first draw of each pair.
        pair_squares: :math:`\|\Delta_i\|^2` of each pair.
        quads: :math:`\langle\Delta_{2j}, \Delta_{2j+1}\rangle` of each two pairs.
        distance2: :math:`\|\bar g - g^*\|^2`.
        mean2: :math:`\|\bar g\|^2`.
        reference2: :math:`\|g^*\|^2`.
        mean_reference: :math:`\langle\bar g, g^*\rangle`.
        m2: :math:`\sum_t\|\hat g_t - \bar g\|^2`.
        size: P, the number of coordinates.
    """

    draws: np.ndarray
    constants: np.ndarray
    blocks: np.ndarray
    before: np.ndarray
    first: np.ndarray
    pair_squares: np.ndarray
    quads: np.ndarray
    distance2: float
    mean2: float
    reference2: float
    mean_reference: float
    m2: float
    size: int

    def scale(self) -> float:
        r"""The gradient's own scale: the largest of :math:`\sqrt{\overline{\|x\|^2}}`,
        :math:`\|\bar g\|` and :math:`\|g^*\|` (1 where all are 0)."""
        unit = max(
            math.sqrt(float(np.mean(self.draws[:, 0]))),
            *(math.sqrt(norm) for norm in (self.mean2, self.reference2)),
        )
        return unit if unit > 0 and math.isfinite(unit) else 1.0

    def in_units(self, unit: float) -> DrawStatistics:
        """Every statistic divided by the square of ``unit`` (each is a square of the
        gradient's unit)."""
        return dataclasses.replace(
            self,
            draws=self.draws / unit**2,
            constants=self.constants / unit**2,
            pair_squares=self.pair_squares / unit**2,
            quads=self.quads / unit**2,
            distance2=self.distance2 / unit**2,
            mean2=self.mean2 / unit**2,
            reference2=self.reference2 / unit**2,
            mean_reference=self.mean_reference / unit**2,
            m2=self.m2 / unit**2,
        )


def metrics_of(statistics: DrawStatistics, reference: Reference) -> dict[str, float]:
    """Every metric with its ``*_se`` companion, ``mean_norm`` and ``reference_variance``.

    They are computed in units of the gradient's own scale (:meth:`DrawStatistics.scale`), then
    scaled back: ST's variance of 1e-156 is (1e-78)², and its fourth powers (tr Σ²) would
    underflow in absolute units.
    """
    unit = statistics.scale()
    metrics = _metrics_in_units(statistics.in_units(unit), reference.noise_in_units(unit))
    for name, power in UNITS_POWER.items():
        metrics[name] *= unit**power
    return metrics


def pooled_covariance(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    r"""The covariance of x and y within groups, each about its own means, pooled:
    :math:`\sum_g\sum_{i \in g}(x_i - \bar x_g)(y_i - \bar y_g) / \sum_g(|g| - 1)`."""
    total, freedom = 0.0, 0
    for group in np.unique(groups):
        mask = groups == group
        if mask.sum() > 1:
            total += float(np.sum((x[mask] - x[mask].mean()) * (y[mask] - y[mask].mean())))
            freedom += int(mask.sum()) - 1
    return total / freedom if freedom else 0.0


def variance_se(statistics: DrawStatistics, trace_square: float) -> float:
    r""":math:`\mathrm{SE}(V) = \sqrt{(\mathrm{Var}\|z\|^2 + 2\,\mathrm{tr}\,\Sigma^2/(N-1))/N}`,
    :math:`z = \hat g - \mathbb{E}\hat g`.

    :math:`\mathrm{Var}\|z\|^2` is the spread of the draws' squared norms within each block
    b > 0, less the centre's :math:`4\,\mathrm{tr}\,\Sigma^2/m_b`; with too few draws for blocks
    of two, :math:`2\,\mathrm{Var}\|\Delta\|^2 - 2\,\mathrm{tr}\,\Sigma^2`.
    """
    s = statistics
    n = len(s.draws)
    squared = s.draws[:, 0]
    # Every draw counts (the pair differences' spread uses half of them, and under-covers).
    later = s.blocks > 0
    if later.sum() > int(s.blocks.max()):
        within = pooled_covariance(squared[later], squared[later], s.blocks[later])
        mean_inverse = float(np.mean(1.0 / s.before[s.blocks[later]]))
        spread_z2 = max(0.0, within - 4 * trace_square * mean_inverse)
    else:
        spread_z2 = max(0.0, 2 * float(np.var(s.pair_squares, ddof=1)) - 2 * trace_square)
    return math.sqrt((spread_z2 + 2 * trace_square / (n - 1)) / n)


@dataclasses.dataclass(frozen=True)
class Directions:
    r"""The pair differences projected on directions known before their block.

    For a pair in block b > 0: :math:`\langle\Delta, c_b - g^*\rangle` (``on_distance``),
    :math:`\langle\Delta, g^*\rangle` (``on_reference``) and :math:`\langle\Delta, c_b\rangle`
    (``on_centre``), each pair with ``weight`` :math:`1/m_b`; ``centre_fourth`` is
    :math:`c^\top\Sigma^2c`, the mean of :math:`\langle\Delta, c\rangle\langle\Delta', c\rangle
    \langle\Delta, \Delta'\rangle` over two pairs of one block.
    """

    on_distance: np.ndarray
    on_reference: np.ndarray
    on_centre: np.ndarray
    weight: np.ndarray
    centre_fourth: float
    trace_square: float

    @classmethod
    def of(cls, statistics: DrawStatistics, trace_square: float) -> Directions:
        """The projections of the pairs whose block has earlier draws (all but the first)."""
        s = statistics
        toward_centre, toward_reference = s.draws[:, 1], s.draws[:, 2]
        directed = s.blocks[s.first] > 0
        a = s.first[directed]
        b = a + 1
        on_distance = (toward_centre[a] - toward_centre[b]) / math.sqrt(2)
        on_reference = (toward_reference[a] - toward_reference[b]) / math.sqrt(2)
        on_centre = on_distance + on_reference
        pair_of = {int(f) // 2: i for i, f in enumerate(a)}
        fourth = [
            on_centre[pair_of[2 * j]] * on_centre[pair_of[2 * j + 1]] * s.quads[j]
            for j in range(len(s.quads))
            if 2 * j in pair_of and 2 * j + 1 in pair_of and s.blocks[4 * j] == s.blocks[4 * j + 2]
        ]
        return cls(
            on_distance,
            on_reference,
            on_centre,
            1.0 / s.before[s.blocks[a]],
            float(np.mean(fourth)) if fourth else 0.0,
            trace_square,
        )

    def quadratic(
        self, projections: np.ndarray, centre_coefficient: float, floor: float | np.ndarray
    ) -> float:
        r""":math:`v^\top\Sigma v` for :math:`v = a\,\mathbb{E}\hat g + b\,g^*`, from the
        projections :math:`\langle\Delta, a\,c_b + b\,g^*\rangle` of the pairs:
        :math:`\mathbb{E}\langle\Delta, v_b\rangle^2 = v^\top\Sigma v + a^2\,\mathrm{tr}\,\Sigma^2/m_b`.

        The centre's noise is subtracted down to ``floor`` × :math:`a^2\,\mathrm{tr}\,\Sigma^2`
        (``centre_coefficient`` is a). A pair counts :math:`m_b^2` times: its squared
        projection's variance is about :math:`(\mathrm{tr}\,\Sigma^2/m_b)^2` where the bias is
        small, so the first blocks' noisy directions barely count. NaN with no pair.
        """
        if not len(projections):
            return math.nan
        noise = centre_coefficient**2 * self.trace_square * (self.weight - floor)
        precision = 1.0 / self.weight**2
        return float(np.sum(precision * (projections**2 - noise)) / np.sum(precision))


def reference_noise(reference: Reference, distance2: float) -> tuple[float, float]:
    r"""How a sampled reference's noise ε (covariance :math:`\Sigma_{ref}/N_{ref}`) moves bias²:
    :math:`r = \sqrt{\mathrm{tr}\,\Sigma_{ref}^2}/N_{ref}` and the variance
    :math:`4\|\bar g - g^*\|^2 r + \mathrm{SE}(V_{ref})^2/N_{ref}^2`; (0, 0) for an exact one.

    ε enters :math:`\|\bar g - g^*\|^2` as :math:`2\langle\delta, \varepsilon\rangle`, as
    :math:`\|\varepsilon\|^2 - V_{ref}/N_{ref}` and as :math:`2\langle\bar g - \mathbb{E}\hat g,
    \varepsilon\rangle`, and bias² also carries :math:`\hat V_{ref}`'s own error. Each is
    bounded by what the reference's draws measured, with no assumption on their law:
    :math:`\delta^\top\Sigma_{ref}\delta \le \|\delta\|^2\sqrt{\mathrm{tr}\,\Sigma_{ref}^2}`.
    """
    if not reference.count:
        return 0.0, 0.0
    root = math.sqrt(reference.noise_square()) / reference.count
    variance = 4 * distance2 * root
    if math.isfinite(reference.variance_se):
        variance += (reference.variance_se / reference.count) ** 2
    return root, variance


def bias2_se(
    statistics: DrawStatistics,
    directions: Directions,
    variance_se: float,
    reference: tuple[float, float],
) -> float:
    r""":math:`\mathrm{SE}(B^2)^2 = 4\,\delta^\top\Sigma\delta/N + \mathrm{SE}(V)^2/N^2
    + 2(\sqrt{\mathrm{tr}\,\Sigma^2}/N + r)^2` plus the reference's variance
    (``reference`` is :func:`reference_noise`'s (r, variance)).

    The estimate of :math:`4\delta^\top\Sigma\delta/N` is noise of either sign at zero bias, so
    only a positive one is added; the zero-bias term is kept whole, so a cell never reports
    less than it (:math:`\mathrm{tr}\,\Sigma\Sigma_{ref} \le \sqrt{\mathrm{tr}\,\Sigma^2
    \,\mathrm{tr}\,\Sigma_{ref}^2}` joins the draws' and the reference's zero-bias terms).
    """
    n = len(statistics.draws)
    reference_root, reference_var = reference
    spread = directions.quadratic(directions.on_distance, 1.0, 0.0)  # δᵀΣδ
    spread = spread if math.isfinite(spread) else 0.0
    zero_bias = 2 * (math.sqrt(directions.trace_square) / n + reference_root) ** 2
    draws_var = 4 * max(0.0, spread) / n + (variance_se / n) ** 2
    return math.sqrt(draws_var + zero_bias + reference_var)


def mse(
    statistics: DrawStatistics, trace_square: float, reference: Reference
) -> tuple[float, float]:
    r""":math:`\mathrm{MSE} = \frac1N\sum_t\|\hat g_t - g^*\|^2 - V_{ref}/N_{ref}` and its SE,
    :math:`\sqrt{\mathrm{Var}\|\hat g - g^*\|^2/N + \sigma_{ref}^2 + 2r(r + 2\sqrt{\mathrm{tr}
    \,\Sigma^2}/N)}`, from the per-draw errors (exact) and :func:`reference_noise`'s
    (r, σ²_ref)."""
    s = statistics
    n = len(s.draws)
    squared, toward_centre = s.draws[:, 0], s.draws[:, 1]
    errors = squared + 2 * toward_centre + s.constants[s.blocks]  # ‖ĝ − g*‖² per draw
    reference_root, reference_var = reference_noise(reference, s.distance2)
    value = float(np.mean(errors)) - reference.noise
    se = math.sqrt(
        float(np.var(errors, ddof=1)) / n
        + reference_var
        + 2 * reference_root * (reference_root + 2 * math.sqrt(trace_square) / n)
    )
    return value, se


def cosine(
    statistics: DrawStatistics, directions: Directions, reference_root: float
) -> tuple[float, float]:
    r""":math:`\cos(\bar g, g^*) = \langle\bar g, g^*\rangle/(\|\bar g\|\|g^*\|)` and its SE
    (NaN, NaN where either norm is 0).

    The variance is the delta method's along :math:`\nabla\cos = (\hat u^* - \cos\,\bar u)/
    \|\bar g\|` (:math:`\bar u = \bar g/\|\bar g\|`), added only where its estimate is
    positive, plus the second-order term :math:`(\sqrt{\mathrm{tr}\,\Sigma_\perp^2}/N + r)^2/
    (2\|\bar g\|^4)` with :math:`\mathrm{tr}\,\Sigma_\perp^2 = \mathrm{tr}\,\Sigma^2 -
    2\bar u^\top\Sigma^2\bar u + (\bar u^\top\Sigma\bar u)^2`, which is all that is left where
    :math:`\bar g \parallel g^*`, plus the reference's first-order
    :math:`(1 - \cos^2)\,r/\|g^*\|^2`.
    """
    s, d = statistics, directions
    n = len(s.draws)
    mean_norm, ref_norm = math.sqrt(s.mean2), math.sqrt(s.reference2)
    if not (mean_norm > 0 and ref_norm > 0):
        return math.nan, math.nan
    value = s.mean_reference / (mean_norm * ref_norm)
    # ḡ's share of the gradient of the cosine is carried by the centre c_b.
    unit_centre, unit_reference = d.on_centre / mean_norm, d.on_reference / ref_norm
    first_order = (
        d.quadratic(unit_reference - value * unit_centre, value / mean_norm, 0.0) / s.mean2
    )
    unit_square = d.quadratic(unit_centre, 1.0 / mean_norm, 0.0)
    unit_fourth = d.centre_fourth / s.mean2
    perpendicular = max(0.0, d.trace_square - 2 * unit_fourth + unit_square**2)
    # Where both terms vanish (all the spread along ḡ), the first-order term without its
    # correction for the centre's noise, an upper bound, stands in.
    second_order = (math.sqrt(perpendicular) / n + reference_root) ** 2 / (2 * s.mean2**2)
    reference_first = (1 - value**2) * reference_root / s.reference2
    cosine_var = max(0.0, first_order) / n + reference_first + second_order
    if cosine_var <= 0:
        along = unit_reference - value * unit_centre
        cosine_var = d.quadratic(along, value / mean_norm, d.weight) / s.mean2 / n
    return value, math.sqrt(max(0.0, cosine_var))


def snr(
    statistics: DrawStatistics,
    directions: Directions,
    variance: float,
    variance_se: float,
) -> tuple[float, float]:
    r""":math:`\mathrm{SNR} = \|\bar g\|/\sqrt{V/P}` and its SE (NaN, NaN where V or
    :math:`\bar g` is 0), by the delta method on :math:`\log\|\bar g\| - \tfrac12\log V`:

    .. math::
        \mathrm{SE}^2/\mathrm{SNR}^2 = \frac{\bar u^\top\Sigma\bar u}{N\|\bar g\|^2}
        + \Big(\frac{\mathrm{SE}(V)}{2V}\Big)^2
        - \frac{\mathrm{Cov}(\langle z, \bar u\rangle, \|z\|^2)}{N\|\bar g\| V}
        + \frac{\mathrm{tr}\,\Sigma_\perp^2}{2N^2\|\bar g\|^4},

    the first three floored at :math:`(\sigma_a - \sigma_b)^2` of their first two terms (the
    covariance's estimate is noisy too; by Cauchy–Schwarz a difference's variance is at least
    that). The third moment is pooled within blocks, where the centres' noise averages out.
    The last is the norm's second-order term, the spread across :math:`\bar g` (as in
    :func:`cosine`): where :math:`\mathrm{tr}\,\Sigma^2/N` is not small against
    :math:`\|\bar g\|^2 \bar u^\top\Sigma\bar u` (skewed draws of a small mean), the first
    order alone under-covers.
    """
    s, d = statistics, directions
    n = len(s.draws)
    mean_norm = math.sqrt(s.mean2)
    if not (variance > 0 and mean_norm > 0):
        return math.nan, math.nan
    value = mean_norm / math.sqrt(variance / s.size)
    norm_var = max(0.0, d.quadratic(d.on_centre / mean_norm, 1.0 / mean_norm, 0.0))
    along = (s.draws[:, 1] + s.draws[:, 2]) / mean_norm  # ⟨x, c_b⟩/‖ḡ‖
    later = s.blocks > 0
    covariance = pooled_covariance(s.draws[:, 0][later], along[later], s.blocks[later])
    norm_term = norm_var / (n * s.mean2)
    variance_term = (variance_se / (2 * variance)) ** 2
    log_var = norm_term + variance_term - covariance / (n * mean_norm * variance)
    floor = (math.sqrt(norm_term) - math.sqrt(variance_term)) ** 2
    unit_fourth = d.centre_fourth / s.mean2
    perpendicular = max(0.0, d.trace_square - 2 * unit_fourth + norm_var**2)
    second_order = perpendicular / (2 * n**2 * s.mean2**2)
    return value, value * math.sqrt(max(floor, log_var) + second_order)


def _metrics_in_units(statistics: DrawStatistics, reference: Reference) -> dict[str, float]:
    r"""The metrics from statistics of one scale.

    :math:`V = \frac1{N-1}\sum_t\|\hat g_t - \bar g\|^2`,
    :math:`B^2 = \|\bar g - g^*\|^2 - V/N - V_{ref}/N_{ref}` and
    :math:`\mathrm{tr}\,\Sigma^2 = \overline{\langle\Delta_{2j}, \Delta_{2j+1}\rangle^2}`.
    """
    s = statistics
    n = len(s.draws)
    trace_square = float(np.mean(s.quads**2))
    variance = s.m2 / (n - 1)
    spread_se = variance_se(s, trace_square)
    directions = Directions.of(s, trace_square)
    mean_norm = math.sqrt(s.mean2)
    bias2 = s.distance2 - variance / n - reference.noise
    noise = reference_noise(reference, s.distance2)
    bias2_error = bias2_se(s, directions, spread_se, noise)
    mse_value, mse_se = mse(s, trace_square, reference)
    cosine_value, cosine_se = cosine(s, directions, noise[0])
    snr_value, snr_se = snr(s, directions, variance, spread_se)
    return {
        "variance": variance,
        "variance_se": spread_se,
        "variance_per_coord": variance / s.size,
        "variance_per_coord_se": spread_se / s.size,
        "bias2": bias2,
        "bias2_se": bias2_error,
        "mse": mse_value,
        "mse_se": mse_se,
        "cosine": cosine_value,
        "cosine_se": cosine_se,
        "snr": float(snr_value),
        "snr_se": float(snr_se),
        "mean_norm": mean_norm,
        "reference_variance": reference.noise,
    }
