r"""SFESS: the score-function estimator for k-subsets with its control variate (Wijk, Vinuesa &
Azizpour, ICLR 2025; code klaswijk/sfess).

The paper's estimator draws exact samples of the k-subset law, scores them with
:math:`\log p_\theta(z) = \sum_i \log \mathrm{Bern}(z_i; \sigma(\theta_i)) - \log P(\sum_i b_i = k)`
(the Poisson-binomial term by a discrete Fourier transform) and takes the mean of the other
samples as each one's baseline: RLOO over k-subsets (:func:`~gvbench.estimators.subset_rloo`),
whose :math:`\log p_\theta(z) = \theta^\top z - \log Z_k(\theta)` is the same number (the
two agree to rounding in its tests). This module gives it the paper's name.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.subset_score_function import subset_rloo
from gvbench.estimators.validation import check_objective

__all__ = ["sfess"]


@register(
    unbiased=True,
    label="SFESS",
    variable="subset",
    default=False,  # RLOO (subset) draw for draw: a default sweep would measure it twice
    min_k=2,
    max_k=1 << 16,  # each sample is one run of the objective
    evaluations=lambda o, c: o["k"],
)
def sfess(objective: Objective, *, k: int = 2, generator: torch.Generator | None = None) -> Tensor:
    r"""SFESS with control variates (Wijk, Vinuesa & Azizpour, ICLR 2025), unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z \sim p_\theta}[f(z)]`, :math:`p_\theta` the
    k-subset law. With: K iid exact samples and the mean of the other samples as each one's
    baseline,
    :math:`\hat g = \frac1K\sum_k \big[\nabla f(z_k) + (f(z_k) - \tfrac1{K-1}\sum_{j\ne k} f(z_j))\,\nabla\log p_\theta(z_k)\big]`:
    :func:`~gvbench.estimators.subset_rloo`, draw for draw. The authors' code departs from
    the paper in two places, which gvbench does not follow (both measured in its tests): its
    baseline ``loss[~i].mean(0)`` is the mean of all K losses, the sample's own included
    (``~i`` reverses the index rather than masking it), which scales the score term by
    :math:`(K-1)/K`; and it draws by Gumbel top-k, a Plackett-Luce law that is not the
    k-subset law it scores. Runs the objective K times (K >= 2). Returns per-example
    surrogate losses (value: the mean of the K losses).
    """
    check_objective(objective)
    return subset_rloo(objective, k=checked_k(sfess, k), generator=generator)
