r"""ReinMax: a second-order accurate straight-through estimator (Liu et al. 2023, NeurIPS), and
its α-generalisation (Wang & Bui 2026)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import categorical_one_hot, replace_gradient, tempered_softmax
from gvbench.estimators.validation import check_logits, check_real, check_tau


@register(unbiased=False, label="ReinMax")
def reinmax(
    logits: Tensor,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""ReinMax (Liu et al. 2023, "Bridging discrete and backpropagation: straight-through and beyond").

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`,
    to second order (Heun's method on the ODE behind straight-through).
    With: :math:`\pi_0 = \mathrm{softmax}\,\theta`;
    :math:`\pi_1 = \tfrac12(D + \mathrm{softmax}(\theta/\tau))`;
    :math:`\pi_1 \leftarrow \mathrm{softmax}(\mathrm{sg}(\log\pi_1 - \theta) + \theta)`;
    :math:`\pi_2 = 2\pi_1 - \tfrac12\pi_0`; :math:`y = \pi_2 - \mathrm{sg}(\pi_2) + D`. So
    :math:`\hat g = [2(\mathrm{diag}\,\pi_1 - \pi_1\pi_1^\top) - \tfrac12(\mathrm{diag}\,\pi_0 - \pi_0\pi_0^\top)]\,\partial f/\partial D`.
    Requires: :math:`f` differentiable at one-hot inputs. Biased; :math:`\tau \ge 1` is its
    usual range.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    sample, pi0, _, _, midpoint = _heun_terms(logits, tau, dim, generator)
    pi2 = 2.0 * midpoint - 0.5 * pi0
    return replace_gradient(sample, pi2)


def _heun_terms(
    logits: Tensor, tau: float, dim: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """D, π₀, σ = softmax(θ/τ), π₁ = ½(D + σ) and softmax(sg(log π₁ − θ) + θ): the value π₁
    with the softmax's Jacobian at π₁, which both ReinMax and α-ReinMax differentiate."""
    sample = categorical_one_hot(logits, dim, generator)
    pi0 = torch.softmax(logits, dim)
    sigma = tempered_softmax(logits, tau, dim)
    pi1 = 0.5 * (sample + sigma)
    # A masked category (θ = -inf, π₁ = 0) gives -inf - (-inf) = NaN; it must stay at 0.
    correction = torch.nan_to_num((pi1.log() - logits).detach(), nan=-torch.inf)
    return sample, pi0, sigma, pi1, torch.softmax(correction + logits, dim)


@register(unbiased=False, label="α-ReinMax")
def reinmax_alpha(
    logits: Tensor,
    tau: float = 1.0,
    *,
    alpha: float = 2.0 / 3.0,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""α-ReinMax: ReinMax with a general second-order Runge-Kutta step (Wang & Bui 2026,
    "Beyond ReinMax", arXiv 2603.08257; code danielwang0452/ReinMax_ASC).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`,
    as :func:`reinmax`, with the two-stage step of parameter α in place of Heun's (α = 1:
    Heun, ReinMax itself; α = ½: the midpoint rule; α = ⅔: Ralston's, the default).
    With: :math:`\pi_0 = \mathrm{softmax}\,\theta`, :math:`\sigma = \mathrm{softmax}(\theta/\tau)`,
    :math:`\pi_1 = \tfrac12(D + \sigma)`,
    :math:`\pi_\alpha = (1 - \tfrac{1}{2\alpha})\,\sigma + \tfrac{1}{2\alpha} D`:

    .. math::
        \hat g = 2\,(\mathrm{diag}\,\pi_\alpha - \pi_1\pi_\alpha^\top)\,u
        - \tfrac{1}{2\alpha}(\mathrm{diag}\,\pi_0 - \pi_0\pi_0^\top)\,u,
        \qquad u = \partial f/\partial D.

    Since :math:`\pi_\alpha - \pi_1 = \beta\,(D - \sigma)` with :math:`\beta = \tfrac{1}{2\alpha} - \tfrac12`,
    the first term is ReinMax's :math:`2(\mathrm{diag}\,\pi_1 - \pi_1\pi_1^\top)u` plus
    :math:`2\beta\,[(D - \sigma)\odot u - \pi_1\langle D - \sigma, u\rangle]`, which is built
    here as a linear surrogate; at α = 1 it vanishes and the estimate is ReinMax's, draw for
    draw (the same uniforms give the same D).
    Requires: :math:`f` differentiable at one-hot inputs; α a finite number > 0. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    alpha = check_real(alpha, "alpha")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0 (1 is ReinMax), got {alpha!r}")
    sample, pi0, sigma, pi1, midpoint = _heun_terms(logits, tau, dim, generator)
    # ∂step_i/∂θ_j = (D − σ)_i (δ_ij − π₁_j); a masked θ_j = -inf enters as 0 (its π's are 0).
    finite = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
    offset = (pi1.detach() * finite).sum(dim, keepdim=True)
    step = (sample - sigma).detach() * (finite - offset)
    beta = 0.5 / alpha - 0.5
    surrogate = 2.0 * midpoint + (2.0 * beta) * step - (0.5 / alpha) * pi0
    return replace_gradient(sample, surrogate)
