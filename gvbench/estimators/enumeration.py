r"""Exact expectations and gradients by enumerating every joint outcome of an objective's choices.

:math:`\nabla_\theta \mathbb{E}[f] = \nabla_\theta \sum_{\text{paths}} q_\theta(\text{path}) f(\text{path})`
by autograd — never a hand-derived formula. The objective is replayed once per joint outcome;
at each sampler call the enumerator returns the prescribed configuration (a depth-first
odometer over the choices seen so far), so sequential models whose later logits depend on
earlier samples are enumerated exactly. Every example of a batch takes the same configuration
index in one replay; since examples are independent, each example still sees all of its
outcomes. A k-subset call, ``sample(logits, size)``, is one variable per row whose outcomes
are its C(n, k) subsets (:func:`~gvbench.estimators.subset_law.enumerate_subsets`).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, register
from gvbench.estimators.subset_law import check_subset_size, enumerate_subsets, subset_log_prob
from gvbench.estimators.surrogates import log_prob, sum_to_examples
from gvbench.estimators.validation import (
    check_count,
    check_logits,
    check_losses,
    check_objective,
)


class _Replay:
    """Sampler that plays configuration ``choices[i]`` at its i-th call (0 beyond the prefix);
    categorical, or a k-subset sampler where a call gives ``size``."""

    def __init__(self, choices: list[int], example_ndim: int | None, most: int) -> None:
        self.choices = choices
        self.example_ndim = example_ndim
        self.most = most  # outcomes of one call beyond which it is refused (max_outcomes)
        self.arities: list[int] = []
        self.log_probs: list[Tensor] = []

    def __call__(self, logits: Tensor, size: int | None = None, *, dim: int = -1) -> Tensor:
        dim = check_logits(logits, dim)
        theta = logits.movedim(dim, -1)
        call = len(self.arities)
        choice = self.choices[call] if call < len(self.choices) else 0
        # the outcomes of one variable: its categories, or its subsets as k-hot rows
        rows = None if size is None else self._subsets(theta, size)
        n = theta.shape[-1] if rows is None else len(rows)
        if self.example_ndim is None:
            # First replay: the example shape is not known until the objective returns; the
            # all-zero configuration is the same whatever the grouping.
            self.arities.append(1)
            index = torch.zeros(theta.shape[:-1], dtype=torch.long, device=theta.device)
        else:
            variable_shape = theta.shape[self.example_ndim : -1]
            count = int(torch.Size(variable_shape).numel())
            self.arities.append(n**count)
            digits = [(choice // n**i) % n for i in reversed(range(count))]
            index = torch.tensor(digits, dtype=torch.long, device=theta.device)
            index = index.reshape(variable_shape).expand(theta.shape[:-1])
        if rows is not None:
            sample = rows[index]
            self.log_probs.append(subset_log_prob(theta, sample, size))
            return sample.movedim(-1, dim)
        sample = torch.zeros_like(theta).scatter_(-1, index.unsqueeze(-1), 1.0)
        self.log_probs.append(log_prob(theta, sample))
        return sample.movedim(-1, dim)

    def _subsets(self, theta: Tensor, size: int) -> Tensor:
        """Every ``size``-subset of the items as k-hot rows, refused (before they are
        listed) where they alone are more than ``max_outcomes``."""
        n = theta.shape[-1]
        count = math.comb(n, check_subset_size(size, n))
        if count > self.most:
            raise ValueError(
                f"a k-subset of {size} of {n} items has C({n}, {size}) = {count} outcomes, more "
                f"than max_outcomes={self.most}; use a high-sample estimate (subset_rloo) instead"
            )
        return _subset_table(n, size, theta.dtype, theta.device)


@functools.lru_cache(maxsize=8)
def _subset_table(n: int, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # Every replay of every outcome asks for it; rows are taken by indexing, which copies,
    # so the kept table is never written.
    return enumerate_subsets(n, size, dtype=dtype, device=device)


def enumerate_expectation(objective: Objective, *, max_outcomes: int = 100_000) -> Tensor:
    r"""Per-example :math:`\mathbb{E}_q[f] = \sum_{\text{outcomes}} q(\text{outcome})\,f(\text{outcome})`, differentiable.

    Args:
        objective: a function of a sampler returning per-example losses.
        max_outcomes: refuse (``ValueError``) objectives with more joint outcomes per example.

    Returns:
        Tensor with the objective's per-example shape; autograd of it is the exact gradient.
    """
    check_objective(objective)
    max_outcomes = check_count(max_outcomes, "max_outcomes", 1, maximum=1 << 40)
    # One probing run tells how many leading dimensions index independent examples.
    probe = _Replay([], None, max_outcomes)
    example_ndim = check_losses(objective(probe)).dim()
    if not probe.arities:
        raise ValueError("the objective made no discrete choice (it never called the sampler)")
    total = None
    choices: list[int] = []
    visited = 0
    while True:
        replay = _Replay(choices, example_ndim, max_outcomes)
        loss = objective(replay)
        log_q = sum(sum_to_examples(lp, loss.shape, "enumeration") for lp in replay.log_probs)
        term = log_q.exp() * loss
        total = term if total is None else total + term
        visited += 1
        if visited > max_outcomes:
            raise ValueError(
                f"the objective has more than max_outcomes={max_outcomes} joint outcomes per "
                "example; use a high-sample estimate (rloo) instead"
            )
        choices = list(choices) + [0] * (len(replay.arities) - len(choices))
        position = len(replay.arities) - 1
        while position >= 0 and choices[position] + 1 >= replay.arities[position]:
            position -= 1
        if position < 0:
            return total
        choices = [*choices[:position], choices[position] + 1]


@register(
    unbiased=True,
    exact=True,
    label="Exact",
    default=False,
    evaluations=lambda o, c: c.outcomes + 1,  # one probing run, then every joint outcome
)
def exact(
    objective: Objective,
    *,
    max_outcomes: int = 100_000,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Exact gradient by enumeration (the reference every bias is measured against).

    Approximates nothing: returns per-example :math:`\mathbb{E}_q[f]` whose autograd gradient is
    :math:`\nabla_\theta \mathbb{E}[f]` exactly (for one categorical,
    :math:`(\mathrm{diag}\,p - p p^\top)\vec f`). Cost: one objective evaluation per joint
    outcome. ``generator`` is accepted for the common signature and unused.
    """
    del generator
    return enumerate_expectation(objective, max_outcomes=max_outcomes)
