r"""Score-function estimators: REINFORCE with a running-mean baseline, and RLOO.

They need the objective's value, so they take the whole objective (a function of a sampler)
rather than logits, and return the score-function surrogate of
:mod:`gvbench.estimators.surrogates`: value :math:`f`, gradient
:math:`\nabla f + (f - b)\nabla\sum\log q` for a baseline :math:`b`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.state import Adaptation
from gvbench.estimators.surrogates import ScoreRecorder, score_surrogate
from gvbench.estimators.validation import check_losses, check_objective, check_real, per_run


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

    @property
    def adaptation(self) -> Adaptation:
        """It changes only from the losses, after a call (see
        :class:`gvbench.estimators.EstimatorState`)."""
        return "from_losses"

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


@register(
    unbiased=True,
    label="RLOO",
    min_k=2,
    max_k=1 << 16,  # each sample is one run of the objective: 2^16 in one call is minutes
    evaluations=lambda o, c: o["k"],
)
def rloo(objective: Objective, *, k: int = 2, generator: torch.Generator | None = None) -> Tensor:
    r"""REINFORCE leave-one-out with K samples (Kool et al. 2019), unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{D\sim q_\theta}[f(D)]` with
    :math:`\hat g = \frac1K\sum_k \big[\nabla f(D_k) + (f(D_k) - \tfrac1{K-1}\sum_{j\ne k} f(D_j))\,\nabla\log q(D_k)\big]`,
    :math:`D_1 \dots D_K` iid. Runs the objective K times (K >= 2). Returns per-example
    surrogate losses (value: the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(rloo, k)
    losses, log_qs = [], []
    for _ in range(k):
        recorder = ScoreRecorder(generator)
        loss = check_losses(objective(recorder))
        losses.append(loss)
        log_qs.append(recorder.total(loss.shape))
    stacked = torch.stack(losses)
    leave_one_out = (stacked.sum(0) - stacked) / (k - 1)
    return score_surrogate(stacked, torch.stack(log_qs), leave_one_out).mean(0)
