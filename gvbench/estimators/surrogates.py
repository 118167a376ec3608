r"""The score-function surrogate and what builds it: estimators that need the objective's value.

While the objective runs, a :class:`ScoreRecorder` stands in for the sampler: it draws
:math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)` at every call, however many and
however sequential, and records :math:`\log q(D)`. The surrogate is built once (the DiCE /
pyro construction):

.. math::
    \mathcal{S} = f + \mathrm{sg}(f - b)\,\big(\textstyle\sum\log q - \mathrm{sg}(\sum\log q)\big),

whose value is :math:`f` and whose gradient is :math:`\nabla f + (f - b)\nabla\sum\log q` —
the pathwise gradient of parameters the loss uses directly plus the score-function term.
REINFORCE, RLOO, enumeration and the multi-sample estimators share these pieces; this module
imports no estimator and no registry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.sampling import categorical_one_hot
from gvbench.estimators.validation import check_logits, refuse_subset_size

__all__ = ["ScoreRecorder", "log_prob", "score_surrogate", "sum_to_examples"]


def log_prob(logits: Tensor, sample: Tensor, dim: int = -1) -> Tensor:
    r""":math:`\log q(D) = \log\mathrm{softmax}(\theta)_D` for a one-hot ``sample``; shape of ``logits`` less ``dim``."""
    index = sample.argmax(dim, keepdim=True)
    return torch.log_softmax(logits, dim).gather(dim, index).squeeze(dim)


def sum_to_examples(values: Tensor, example_shape: torch.Size, what: str = "log q") -> Tensor:
    r"""Sum the trailing (per-example variable) dimensions of ``values`` down to ``example_shape``.

    The leading dimensions of ``values`` are the examples'; one of size 1 where the examples
    have more is a choice *shared* by every example along that axis (one architecture for the
    whole minibatch), and its term is broadcast to each of them. Each example's surrogate then
    weighs the shared choice's score by its own loss, so together they weigh it by the
    minibatch's total loss, :math:`\sum_b (f_b - b_b)\,\nabla\log q(D)`: the objective of
    a choice is the loss of every example it touches (the mean over examples then divides by
    B, as it does every term).
    """
    leading = values.shape[: len(example_shape)]
    if len(leading) < len(example_shape) or any(
        size not in (1, examples) for size, examples in zip(leading, example_shape, strict=True)
    ):
        raise ValueError(
            f"a sampler call's logits have batch shape {tuple(values.shape)}, which does not "
            f"start with the objective's per-example loss shape {tuple(example_shape)}, nor "
            f"broadcast to it (size 1: a choice shared by the examples); every discrete choice "
            f"must belong to one example or be shared by them ({what})"
        )
    trailing = tuple(range(len(example_shape), values.dim()))
    # sum(()) would reduce every dimension, not none
    summed = values.sum(trailing) if trailing else values
    return summed if leading == example_shape else summed.expand(example_shape)


class ScoreRecorder:
    """A sampler that draws :math:`D \\sim \\mathrm{Cat}(\\mathrm{softmax}\\,\\theta)` (no gradient) and records log q(D)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self.log_probs: list[Tensor] = []

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        dim = check_logits(logits, dim)
        sample = categorical_one_hot(logits, dim, self.generator)
        self.log_probs.append(log_prob(logits, sample, dim))
        return sample

    def total(self, example_shape: torch.Size) -> Tensor:
        """:math:`\\sum \\log q` over every recorded choice, per example."""
        if not self.log_probs:
            raise ValueError("the objective made no discrete choice (it never called the sampler)")
        return sum(sum_to_examples(lp, example_shape) for lp in self.log_probs)


def score_surrogate(loss: Tensor, log_q: Tensor, baseline: Tensor | float) -> Tensor:
    r""":math:`f + \mathrm{sg}(f - b)(\log q - \mathrm{sg}\log q)`: value f, gradient ∇f + (f − b)∇log q."""
    return loss + (loss - baseline).detach() * (log_q - log_q.detach())
