r"""Adam, written out per run, each run by its own gradient.

For each run, with its own learning rate :math:`\eta`, :math:`\beta_1, \beta_2`,
:math:`\epsilon` and step count :math:`t` (this step included), its gradient :math:`g`
scaled by its clipping factor :math:`c` (see :mod:`gvbench.training.optimizers`):

.. math::

    m \leftarrow m + (1 - \beta_1)(c\,g - m), \qquad
    v \leftarrow \beta_2 v + (1 - \beta_2)(c\,g)^2, \qquad
    \theta \leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\,
        \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon},

``torch.optim.Adam``'s step without weight decay or AMSGrad (Kingma & Ba, 2015, Algorithm 1
with the bias corrections folded as torch folds them), operation for operation: its
single-tensor form on the CPU, its ``foreach`` form elsewhere. Written by hand for the reason
:mod:`gvbench.training.sgd` is: runs trained as one are updated together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class AdamUpdate:
    """One run's Adam step: its parameters and moments (updated in place), its gradient (by
    parameter name), its settings, its step count ``step`` (this step included, from 1) and
    its clipping factor."""

    params: Mapping[str, Tensor]
    exp_avg: Mapping[str, Tensor]
    exp_avg_sq: Mapping[str, Tensor]
    grads: Mapping[str, Tensor]
    lr: float
    betas: tuple[float, float]
    eps: float
    step: int
    clip: float = 1.0

    @property
    def step_size(self) -> float:
        """:math:`\\eta / (1 - \\beta_1^t)`."""
        return self.lr / (1 - self.betas[0] ** self.step)

    @property
    def second_correction(self) -> float:
        """:math:`\\sqrt{1 - \\beta_2^t}`."""
        return (1 - self.betas[1] ** self.step) ** 0.5


def adam(updates: Sequence[AdamUpdate], foreach: bool | None = None) -> None:
    """One Adam step of each run, in place, its gradient scaled by its ``clip``.

    ``foreach`` (by default: off the CPU, as ``torch.optim`` chooses) does each operation for
    every run's tensors in one ``torch._foreach_*`` call; per tensor the two do the same
    arithmetic whatever runs are updated together, so a run's bits are its own.
    """
    if not updates:
        return
    if foreach is None:
        foreach = next(iter(updates[0].grads.values())).device.type != "cpu"
    with torch.no_grad():
        if foreach:
            _adam_foreach(updates)
            return
        for run in updates:
            beta1, beta2 = run.betas
            step_size, correction = run.step_size, run.second_correction
            for name, g in run.grads.items():
                g = g * run.clip if run.clip < 1.0 else g
                exp_avg = run.exp_avg[name].lerp_(g, 1 - beta1)
                exp_avg_sq = run.exp_avg_sq[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denominator = (exp_avg_sq.sqrt() / correction).add_(run.eps)
                run.params[name].addcdiv_(exp_avg, denominator, value=-step_size)


def _adam_foreach(updates: Sequence[AdamUpdate]) -> None:
    # The scalars torch's foreach Adam passes as one number stay one number here: runs are
    # grouped by (β₁, β₂, ε), the rest goes per tensor as a list.
    by_setting: dict[tuple[float, float, float], list[AdamUpdate]] = {}
    for run in updates:
        by_setting.setdefault((*run.betas, run.eps), []).append(run)
    for (beta1, beta2, eps), runs in by_setting.items():
        clipped = [(g, run.clip) for run in runs if run.clip < 1.0 for g in run.grads.values()]
        scaled = iter(
            torch._foreach_mul([g for g, _ in clipped], [c for _, c in clipped]) if clipped else []
        )
        grads = [next(scaled) if run.clip < 1.0 else g for run in runs for g in run.grads.values()]
        exp_avgs = [run.exp_avg[n] for run in runs for n in run.grads]
        exp_avg_sqs = [run.exp_avg_sq[n] for run in runs for n in run.grads]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(
            denominators, [run.second_correction for run in runs for _ in run.grads]
        )
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(
            [run.params[n] for run in runs for n in run.grads],
            exp_avgs,
            denominators,
            [-run.step_size for run in runs for _ in run.grads],
        )
