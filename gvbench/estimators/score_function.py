r"""Score-function estimators: REINFORCE with a running-mean baseline, and RLOO.

They need the objective's value, so they take the whole objective (a function of a sampler)
rather than logits. While the objective runs, a :class:`ScoreRecorder` stands in for the
sampler: it draws :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)` at every call, however
many and however sequential, and records :math:`\log q(D)`. The surrogate is built once
(the DiCE / pyro construction):

.. math::
    \mathcal{S} = f + \mathrm{sg}(f - b)\,\big(\textstyle\sum\log q - \mathrm{sg}(\sum\log q)\big),

whose value is :math:`f` and whose gradient is :math:`\nabla f + (f - b)\nabla\sum\log q` —
the pathwise gradient of parameters the loss uses directly plus the score-function term.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, register
from gvbench.estimators.sampling import categorical_one_hot
from gvbench.estimators.validation import (
    check_count,
    check_logits,
    check_losses,
    check_objective,
    check_real,
    per_run,
)


def log_prob(logits: Tensor, sample: Tensor, dim: int = -1) -> Tensor:
    r""":math:`\log q(D) = \log\mathrm{softmax}(\theta)_D` for a one-hot ``sample``; shape of ``logits`` less ``dim``."""
    index = sample.argmax(dim, keepdim=True)
    return torch.log_softmax(logits, dim).gather(dim, index).squeeze(dim)


def sum_to_examples(values: Tensor, example_shape: torch.Size, what: str = "log q") -> Tensor:
    """Sum the trailing (per-example variable) dimensions of ``values`` down to ``example_shape``."""
    if values.shape[: len(example_shape)] != example_shape:
        raise ValueError(
            f"a sampler call's logits have batch shape {tuple(values.shape)}, which does not "
            f"start with the objective's per-example loss shape {tuple(example_shape)}; "
            f"every discrete choice must belong to one example ({what})"
        )
    trailing = tuple(range(len(example_shape), values.dim()))
    # sum(()) would reduce every dimension, not none
    return values.sum(trailing) if trailing else values


class ScoreRecorder:
    """A sampler that draws :math:`D \\sim \\mathrm{Cat}(\\mathrm{softmax}\\,\\theta)` (no gradient) and records log q(D)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self.log_probs: list[Tensor] = []

    def __call__(self, logits: Tensor, *, dim: int = -1) -> Tensor:
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


class RunningMean:
    r"""A running-mean baseline :math:`b \leftarrow \beta b + (1 - \beta)\,\bar f`, updated after use.

    The first update sets :math:`b = \bar f` (no decay towards an arbitrary start), so the
    value is an exponentially weighted mean of past losses only: the baseline used for a
    sample never includes that sample.
    """

    def __init__(self, beta: float = 0.9) -> None:
        beta = check_real(beta, "beta")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
        self.beta = beta
        self.value: float | None = None

    def __call__(self) -> float:
        return 0.0 if self.value is None else self.value

    def frozen(self) -> float:
        """The value to use as a constant baseline (see :meth:`Estimator.frozen`)."""
        return self()

    def summary(self) -> dict[str, float]:
        return {"baseline": float("nan") if self.value is None else self.value}

    def update(self, loss: Tensor) -> None:
        mean = float(loss.detach().mean())
        if not math.isfinite(mean):
            raise ValueError(
                f"the objective returned a non-finite loss ({mean}); the baseline is unchanged"
            )
        self.value = mean if self.value is None else self.beta * self.value + (1 - self.beta) * mean

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume bit for bit."""
        return {"beta": self.beta, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta, self.value = float(state["beta"]), state["value"]

    def __repr__(self) -> str:
        return f"RunningMean(beta={self.beta}, value={self.value})"


@register(unbiased=True, label="REINFORCE", state=lambda: {"baseline": RunningMean()})
def reinforce(
    objective: Objective,
    *,
    baseline: RunningMean | float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""REINFORCE / score function (Williams 1992) with a baseline.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{D\sim q_\theta}[f(D)]`, unbiased.
    With: :math:`\hat g = \nabla f + (f(D) - b)\,\nabla\sum\log q_\theta(D)`; for one categorical
    :math:`\nabla_\theta \log q(D) = e_D - p`.
    ``baseline`` is a constant, ``None`` (0), or a :class:`RunningMean` (the registry's
    default), read before and updated after this call, so it never depends on this sample.
    Under ``vmap`` over runs it may be a 0-d tensor, each run's running mean read as a
    constant (:meth:`Estimator.frozen`). Returns per-example surrogate losses (value :math:`f`).
    """
    check_objective(objective)
    b: Tensor | float
    if isinstance(baseline, RunningMean):
        b = baseline()
    elif baseline is None:
        b = 0.0
    elif per_run(baseline):
        b = baseline  # type: ignore[assignment]
    else:
        b = check_real(baseline, "baseline")
        if not math.isfinite(b):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
    recorder = ScoreRecorder(generator)
    loss = check_losses(objective(recorder))
    log_q = recorder.total(loss.shape)
    if isinstance(b, Tensor):
        # Rounded to the loss's dtype once, as a Python number is: a run in a stack
        # subtracts the bits it would subtract alone.
        b = b.to(loss.dtype)
    surrogate = score_surrogate(loss, log_q, b)
    if isinstance(baseline, RunningMean):
        baseline.update(loss)
    return surrogate


# Each of the K samples is one run of the objective: 2^16 runs in one call is already minutes.
RLOO_MAX_K = 1 << 16


@register(unbiased=True, label="RLOO", min_k=2, max_k=RLOO_MAX_K, evaluations=lambda o, c: o["k"])
def rloo(objective: Objective, *, k: int = 2, generator: torch.Generator | None = None) -> Tensor:
    r"""REINFORCE leave-one-out with K samples (Kool et al. 2019), unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{D\sim q_\theta}[f(D)]` with
    :math:`\hat g = \frac1K\sum_k \big[\nabla f(D_k) + (f(D_k) - \tfrac1{K-1}\sum_{j\ne k} f(D_j))\,\nabla\log q(D_k)\big]`,
    :math:`D_1 \dots D_K` iid. Runs the objective K times (K >= 2). Returns per-example
    surrogate losses (value: the mean of the K losses).
    """
    check_objective(objective)
    k = check_count(k, "k", 2, RLOO_MAX_K)
    losses, log_qs = [], []
    for _ in range(k):
        recorder = ScoreRecorder(generator)
        loss = check_losses(objective(recorder))
        losses.append(loss)
        log_qs.append(recorder.total(loss.shape))
    stacked = torch.stack(losses)
    leave_one_out = (stacked.sum(0) - stacked) / (k - 1)
    return score_surrogate(stacked, torch.stack(log_qs), leave_one_out).mean(0)
