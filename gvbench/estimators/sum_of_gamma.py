r"""Sum-of-Gamma noise (Niepert, Minervini & Franceschi 2021): perturbations for top-k MAP.

Perturb-and-MAP with this noise samples k-subsets the way Gumbel-max samples one category:

.. math::
    \varepsilon = \frac1\kappa\Big[\sum_{i=1}^{s}\mathrm{Gamma}\big(\tfrac1\kappa, \tfrac{i}{\kappa}\big)
    - \log s\Big] = \sum_{i=1}^{s}\frac{\gamma_i}{i} - \frac{\log s}{\kappa},
    \qquad \gamma_i \sim \mathrm{Gamma}(\tfrac1\kappa, 1),

(shape :math:`1/\kappa`, rate :math:`i/\kappa`), :math:`\kappa` the subset's size and
:math:`s` the number of terms; a sum of :math:`\kappa` independent copies tends to a standard
Gumbel as :math:`s \to \infty`. Its mean is :math:`(H_s - \log s)/\kappa` and its variance
:math:`\sum_{i \le s} i^{-2}/\kappa`.

Each :math:`\gamma_i` is the inverse CDF of one uniform, so the noise comes from the same
``generator`` (a ``torch.Generator`` or a noise stream) as every other draw of gvbench and
is the same under ``vmap`` as one draw at a time. ``torch.distributions.Gamma``, which the
authors' code uses, draws by rejection from torch's global generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gvbench.estimators.sampling import uniform
from gvbench.estimators.streams import NoiseStream

__all__ = ["gamma_quantile", "sum_of_gamma_noise"]

# Newton steps of the inverse CDF: from the starting bounds below the error falls
# quadratically, to 1e-14 relative in 8 steps at shapes 1 to 1/1000.
NEWTON_STEPS = 10
# Below x = e^-40 (4e-18) the start x = (u Γ(a + 1))^(1/a) is exact to 1e-17 relative; such
# x are left there (and not evaluated: the incomplete gamma is slow on subnormal numbers).
SMALL_LOG_X = -40.0


def gamma_quantile(u: Tensor, shape: float) -> Tensor:
    r"""The standard Gamma(``shape``, 1) quantile of uniforms ``u`` (float64), ``shape`` ≤ 1.

    Newton's method on :math:`y = \log x`. Below the median it solves
    :math:`\log P(a, e^y) = \log u` from :math:`y_0 = (\log u + \log\Gamma(a+1))/a`, a lower
    bound (:math:`P(a, x) \le x^a/\Gamma(a+1)`); above it, :math:`\log Q(a, e^y) = \log(1-u)`
    from :math:`y_0 = \log\max(1, -\log(1-u) - \log\Gamma(a))`, an upper bound
    (:math:`Q(a, x) \le e^{-x}/\Gamma(a)` for :math:`x \ge 1`, :math:`a \le 1`). Both
    tails of a log-Gamma variable are log-concave, so from these sides every step stays on
    its side of the root and the iteration converges monotonically.
    """
    a = torch.full_like(u, shape)
    lower = u <= 0.5
    target = torch.where(lower, u.log(), torch.log1p(-u))
    y = torch.where(
        lower,
        (u.log() + math.lgamma(shape + 1.0)) / shape,
        (-torch.log1p(-u) - math.lgamma(shape)).clamp_min(1.0).log(),
    )
    for _ in range(NEWTON_STEPS):
        x = y.clamp_min(SMALL_LOG_X).exp()
        # each element evaluates only its own tail: the other sees x = 0, which costs nothing
        lower_tail = torch.special.gammainc(a, torch.where(lower, x, 0.0))
        tail = torch.where(
            lower, lower_tail, torch.special.gammaincc(a, torch.where(lower, 0.0, x))
        )
        log_tail = tail.log()
        slope = torch.exp(shape * y - x - math.lgamma(shape) - log_tail)  # |d log tail / dy|
        step = (target - log_tail) / slope
        y = torch.where(y > SMALL_LOG_X, y + torch.where(lower, step, -step), y)
    return y.exp()


def sum_of_gamma_noise(
    shape: torch.Size | tuple[int, ...],
    size: int,
    like: Tensor,
    iterations: int = 10,
    generator: torch.Generator | NoiseStream | None = None,
) -> Tensor:
    r"""Sum-of-Gamma noise :math:`\varepsilon` for subsets of ``size`` items (:math:`\kappa`),
    ``iterations`` terms (:math:`s`; the authors' default 10), with ``like``'s dtype and device.

    Draws ``iterations`` uniforms per element, the term index leading.
    """
    u = uniform((iterations, *shape), torch.float64, like.device, generator)
    # a uniform of exactly 0 has the quantile 0 (log 0 = -inf would give NaN)
    u = u.clamp_min(torch.finfo(torch.float64).tiny)
    gammas = gamma_quantile(u, 1.0 / size)
    terms = torch.arange(1, iterations + 1, dtype=torch.float64, device=like.device)
    terms = terms.reshape(iterations, *[1] * len(shape))
    noise = (gammas / terms).sum(0) - math.log(iterations) / size
    return noise.to(like.dtype)
