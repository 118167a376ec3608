r"""SIMPLE: exact k-subset samples, differentiated through the exact marginals (Ahmed et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import replace_gradient
from gvbench.estimators.subset_law import check_subset, subset_marginals, subset_sample


@register(unbiased=False, label="SIMPLE", variable="subset")
def simple(
    logits: Tensor,
    size: int,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""SIMPLE (Ahmed, Zeng, Niepert & Van den Broeck, ICLR 2023; code UCLA-StarAI/SIMPLE).

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z \sim p_\theta}[f(z)]` for the k-subset
    law :math:`p_\theta(z) \propto \exp(\theta^\top z)`, :math:`\sum_i z_i` = ``size``
    (:mod:`gvbench.estimators.subset_law`).
    With: forward an exact sample :math:`z \sim p_\theta`; backward through the exact marginals
    :math:`\mu(\theta) = \mathbb{E}[z]`, :math:`y = z + \mu - \mathrm{sg}(\mu)`, so
    :math:`\hat g = \frac{\partial\mu}{\partial\theta}^{\!\top}\frac{\partial f}{\partial z}
    = \mathrm{Cov}_{p_\theta}(z)\,\frac{\partial f}{\partial z}(z)`
    (the Hessian of :math:`\log Z_k`). At ``size`` = 1 it is the straight-through estimator
    with the softmax Jacobian. Requires: :math:`f` differentiable at k-hot inputs. Biased
    (exact for :math:`f` linear in :math:`z`); no temperature.
    """
    dim, size = check_subset(logits, size, dim)
    theta = logits.movedim(dim, -1)
    sample = subset_sample(theta, size, generator=generator)
    return replace_gradient(sample, subset_marginals(theta, size)).movedim(-1, dim)
