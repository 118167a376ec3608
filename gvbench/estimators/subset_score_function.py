r"""Score-function estimators over k-subsets: REINFORCE and RLOO with exact k-subset samples.

The objective calls ``sample(logits, size)``; each call draws
:math:`z \sim p_\theta(z) \propto e^{\theta^\top z}` exactly
(:func:`~gvbench.estimators.subset_law.subset_sample`) and records
:math:`\log p_\theta(z) = \theta^\top z - \log Z_k(\theta)`
(:func:`~gvbench.estimators.subset_law.subset_log_prob`), whose gradient is
:math:`z - \mu_\theta`, :math:`\mu` the marginals. The surrogate is the one REINFORCE and
RLOO build for categorical choices (:mod:`gvbench.estimators.score_function`): these are
those estimators, with the k-subset law at every sampler call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.score_function import RunningMean, reinforce, rloo
from gvbench.estimators.subset_law import check_subset, subset_log_prob, subset_sample
from gvbench.estimators.surrogates import ScoreRecorder
from gvbench.estimators.validation import check_objective


class SubsetScoreRecorder:
    r"""A k-subset sampler, ``sample(logits, size, *, dim=-1)``, that draws
    :math:`z \sim p_\theta` (no gradient) and records :math:`\log p_\theta(z)` in a
    :class:`~gvbench.estimators.surrogates.ScoreRecorder`, whose total the surrogate uses."""

    def __init__(self, recorder: ScoreRecorder) -> None:
        self.recorder = recorder

    def __call__(self, logits: Tensor, size: int | None = None, *, dim: int = -1) -> Tensor:
        if size is None:
            raise TypeError(
                "a k-subset estimator's sampler is called sample(logits, size), with the "
                "number of items to choose; categorical logits need a categorical estimator"
            )
        dim, size = check_subset(logits, size, dim)
        theta = logits.movedim(dim, -1)
        sample = subset_sample(theta, size, generator=self.recorder.generator)
        self.recorder.log_probs.append(subset_log_prob(theta, sample, size))
        return sample.movedim(-1, dim)


@register(
    unbiased=True,
    label="REINFORCE (subset)",
    state=lambda: {"baseline": RunningMean()},
    variable="subset",
)
def subset_reinforce(
    objective: Objective,
    *,
    baseline: RunningMean | float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""REINFORCE over k-subsets (Williams 1992) with a baseline, unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z\sim p_\theta}[f(z)]` with
    :math:`\hat g = \nabla f + (f(z) - b)\,\nabla\sum\log p_\theta(z)`,
    :math:`\nabla_\theta \log p_\theta(z) = z - \mu_\theta` for one k-subset. ``baseline`` as
    for :func:`~gvbench.estimators.reinforce` (a running mean by default, read before and
    updated after the call). Returns per-example surrogate losses (value :math:`f`).
    """
    check_objective(objective)
    return reinforce(
        lambda recorder: objective(SubsetScoreRecorder(recorder)),
        baseline=baseline,
        generator=generator,
    )


@register(
    unbiased=True,
    label="RLOO (subset)",
    min_k=2,
    max_k=1 << 16,  # as RLOO's: each sample is one run of the objective
    evaluations=lambda o, c: o["k"],
    variable="subset",
)
def subset_rloo(
    objective: Objective, *, k: int = 2, generator: torch.Generator | None = None
) -> Tensor:
    r"""REINFORCE leave-one-out over k-subsets (Kool et al. 2019) with K samples, unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z\sim p_\theta}[f(z)]` with
    :math:`\hat g = \frac1K\sum_k \big[\nabla f(z_k) + (f(z_k) - \tfrac1{K-1}\sum_{j\ne k} f(z_j))\,(z_k - \mu_\theta)\big]`,
    :math:`z_1 \dots z_K` iid exact k-subset samples. Runs the objective K times (K >= 2).
    Returns per-example surrogate losses (value: the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(subset_rloo, k)
    return rloo(lambda recorder: objective(SubsetScoreRecorder(recorder)), k=k, generator=generator)
