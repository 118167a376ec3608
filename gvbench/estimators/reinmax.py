r"""ReinMax: a second-order accurate straight-through estimator (Liu et al. 2023, NeurIPS)."""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import categorical_one_hot, replace_gradient, tempered_softmax
from gvbench.estimators.validation import check_logits, check_tau


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
    sample = categorical_one_hot(logits, dim, generator)
    pi0 = torch.softmax(logits, dim)
    pi1 = 0.5 * (sample + tempered_softmax(logits, tau, dim))
    # A masked category (θ = -inf, π₁ = 0) gives -inf - (-inf) = NaN; it must stay at 0.
    correction = torch.nan_to_num((pi1.log() - logits).detach(), nan=-torch.inf)
    pi1 = torch.softmax(correction + logits, dim)
    pi2 = 2.0 * pi1 - 0.5 * pi0
    return replace_gradient(sample, pi2)
