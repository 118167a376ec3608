r"""Straight-through family: ST, ST-GS, GS and Gapped ST (GST-1.0, GST-p).

Each function returns :math:`y` whose forward value is the discrete one-hot sample :math:`D`
(GS: the relaxed sample) and whose gradient w.r.t. ``logits`` is the estimator, exactly like
``torch.nn.functional.gumbel_softmax(hard=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import (
    gumbel_like,
    one_hot_argmax,
    replace_gradient,
    tempered_softmax,
)
from gvbench.estimators.validation import check_logits, check_real, check_tau


@register(unbiased=False, label="ST")
def straight_through(
    logits: Tensor,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Straight-through estimator (Bengio et al. 2013).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: forward :math:`D`; backward through :math:`s = \mathrm{softmax}(\theta/\tau)`, i.e.
    :math:`y = D + s - \mathrm{sg}(s)` and :math:`\hat g = \tfrac1\tau(\mathrm{diag}\,s - s s^\top)\,\partial f/\partial D`.
    Requires: :math:`f` differentiable at one-hot inputs. Biased. The gradient depends on
    :math:`D` alone, so its exact mean and variance follow by enumeration.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    sample = one_hot_argmax(logits.detach() + gumbel_like(logits, generator), dim)
    return replace_gradient(sample, tempered_softmax(logits, tau, dim))


@register(unbiased=False, label="ST-GS")
def st_gumbel_softmax(
    logits: Tensor,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Straight-through Gumbel-Softmax (Jang et al. 2017).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: :math:`G` iid Gumbel(0, 1); forward :math:`D = \mathrm{onehot}(\arg\max(\theta + G))`;
    backward through :math:`s = \mathrm{softmax}((\theta + G)/\tau)`.
    Requires: :math:`f` differentiable at one-hot inputs. Biased; the bias vanishes as
    :math:`\tau \to 0` while the variance grows.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    perturbed = logits + gumbel_like(logits, generator)
    return replace_gradient(one_hot_argmax(perturbed, dim), tempered_softmax(perturbed, tau, dim))


@register(unbiased=False, label="Decoupled ST", default=False)  # τ_f = 1 is ST-GS
def decoupled_straight_through(
    logits: Tensor,
    tau: float = 1.0,
    *,
    forward_tau: float = 1.0,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Decoupled straight-through Gumbel-Softmax (Shah, Yan, Mozer & Liu 2024).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: separate temperatures for the two passes, :math:`z = \theta/\tau_f + G`,
    forward :math:`D = \mathrm{onehot}(\arg\max z)`, backward through
    :math:`s = \mathrm{softmax}(z/\tau_b)`: ``tau`` is :math:`\tau_b` (the swept temperature),
    ``forward_tau`` is :math:`\tau_f`. At :math:`\tau_f = 1` it is ST-GS at :math:`\tau_b`,
    draw for draw.

    The paper gives the forward temperature the role of exploration; a temperature applied to
    :math:`\theta + G` as a whole cannot change an argmax, so here it divides the logits
    only: :math:`D \sim \mathrm{Cat}(\mathrm{softmax}(\theta/\tau_f))`, sharper for
    :math:`\tau_f < 1`. Its gradient is then that of a tempered objective, and gvbench
    measures it against the task's own distribution: :math:`\tau_f \ne 1` adds that mismatch
    to its bias. Sweep :math:`\tau_f` as an estimator option
    (``"decoupled_straight_through(forward_tau=0.5)"``): the Dataset keeps one temperature axis.
    Requires: :math:`f` differentiable at one-hot inputs. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    forward_tau = check_real(forward_tau, "forward_tau")
    if not (forward_tau > 0 and math.isfinite(forward_tau)):
        raise ValueError(f"forward_tau must be a finite number > 0, got {forward_tau!r}")
    # The shift by sg(max θ) keeps θ/τ_f finite at a small τ_f; it moves neither the argmax
    # nor the gradient.
    shifted = (logits - logits.detach().amax(dim, keepdim=True)) / forward_tau
    perturbed = shifted + gumbel_like(logits, generator)
    return replace_gradient(one_hot_argmax(perturbed, dim), tempered_softmax(perturbed, tau, dim))


@register(unbiased=False, relaxed=True, label="GS")
def gumbel_softmax(
    logits: Tensor,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gumbel-Softmax / Concrete relaxation (Jang et al. 2017; Maddison et al. 2017).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]` by the exact gradient of the relaxed
    objective :math:`\mathbb{E}_G[f(\mathrm{softmax}((\theta + G)/\tau))]`.
    With: forward and backward :math:`y = \mathrm{softmax}((\theta + G)/\tau)`.
    Requires: :math:`f` defined on the simplex (relaxed inputs). Biased w.r.t. the discrete
    objective.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    return tempered_softmax(logits + gumbel_like(logits, generator), tau, dim)


@register(unbiased=False, label="GST-1.0")
def gapped_straight_through(
    logits: Tensor,
    tau: float = 1.0,
    *,
    gap: float = 1.0,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gapped straight-through, GST-1.0 (Fan et al. 2022).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: a deterministic perturbation of :math:`\mathrm{sg}(\theta)` in place of Gumbel noise.
    Let :math:`a = \arg\max\theta`, :math:`d` the sampled index,

    .. math::
        m = (\theta_a - \theta)\odot D - \max(0,\ \theta - \theta_a + \mathrm{gap})\odot(1 - D),\quad
        \theta' = \theta + \mathrm{sg}(m) - \mathrm{mean}(\theta + \mathrm{sg}(m)),

    so :math:`D` is the argmax of :math:`\theta'` with margin at least ``gap``; backward through
    :math:`s = \mathrm{softmax}(\theta'/\tau)`, :math:`y = D + s - \mathrm{sg}(s)`.
    Requires: :math:`f` differentiable at one-hot inputs. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    gap = check_real(gap, "gap")
    if not (gap >= 0 and math.isfinite(gap)):
        raise ValueError(f"gap must be a finite number >= 0, got {gap!r}")
    theta = logits.detach()
    sample = one_hot_argmax(theta + gumbel_like(theta, generator), dim)
    return _through_gapped_logits(logits, sample, gap, tau, dim)


@register(unbiased=False, label="GST-p")
def gapped_straight_through_p(
    logits: Tensor,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gapped straight-through with a probability-dependent gap, GST-p (Fan et al. 2022).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\pi)`,
    :math:`\pi = \mathrm{softmax}\,\theta`.
    With: GST-1.0's perturbation (see :func:`gapped_straight_through`) with the gap set by the
    probability of the sampled category,

    .. math::
        \mathrm{gap}(\pi_d) = -\log(1 - \pi_d)/\pi_d \;\ge 1,

    which tends to 1 (GST-1.0) for an unlikely sample and grows without bound as
    :math:`\pi_d \to 1`, so a confident sample is passed back as nearly one-hot.
    :math:`\log(1 - \pi_d)` is computed as :math:`\mathrm{logsumexp}_{j\ne d}\theta_j -
    \mathrm{logsumexp}_j\theta_j`, which stays finite where :math:`1 - \pi_d` rounds to 0
    (the reference code instead scales :math:`\pi_d` by :math:`1 - 10^{-5}`).
    Requires: :math:`f` differentiable at one-hot inputs. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    theta = logits.detach()
    sample = one_hot_argmax(theta + gumbel_like(theta, generator), dim)
    gap = _probability_gap(theta, sample, dim)
    return _through_gapped_logits(logits, sample, gap, tau, dim)


def _through_gapped_logits(
    logits: Tensor, sample: Tensor, gap: float | Tensor, tau: float, dim: int
) -> Tensor:
    theta = logits.detach()
    mode = theta.amax(dim, keepdim=True)
    # where() rather than products: a masked logit (-inf) times 0 would be NaN.
    raise_sampled = torch.where(sample > 0, mode - theta, 0.0)
    push = torch.clamp_min(theta - mode + gap, 0.0)
    push_others = torch.where((sample > 0) | ~torch.isfinite(theta), 0.0, push)
    shifted = logits + (raise_sampled - push_others)
    finite = torch.isfinite(shifted.detach())
    centre = shifted.where(finite, 0.0).sum(dim, keepdim=True) / finite.sum(dim, keepdim=True)
    shifted = shifted - centre
    return replace_gradient(sample, tempered_softmax(shifted, tau, dim))


def _probability_gap(theta: Tensor, sample: Tensor, dim: int) -> Tensor:
    """GST-p's gap -log(1 - π_d)/π_d for the sampled category d, stable at both ends."""
    log_normaliser = theta.logsumexp(dim, keepdim=True)
    log_pi = theta.where(sample > 0, 0.0).sum(dim, keepdim=True) - log_normaliser
    pi = log_pi.exp()
    # log(1 - π) two ways, each exact where the other cancels: log1p(-π) for small π, and
    # logsumexp over the other categories (1 - π itself, never rounded to 0) for π near 1.
    log_rest = theta.masked_fill(sample > 0, -math.inf).logsumexp(dim, keepdim=True)
    log_one_minus_pi = torch.where(pi < 0.5, torch.log1p(-pi), log_rest - log_normaliser)
    # An underflowed π takes the limit 1; a lone possible category (1 - π = 0) has nothing
    # to push away, and an infinite gap would meet its -inf neighbours as inf - inf.
    gap = torch.where(pi > 0, -log_one_minus_pi / pi.clamp_min(torch.finfo(pi.dtype).tiny), 1.0)
    return torch.where(torch.isfinite(log_one_minus_pi), gap, 0.0)
