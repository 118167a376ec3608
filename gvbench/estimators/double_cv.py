r"""Double control variates: RLOO plus a Taylor-expansion control variate (Titsias & Shi 2022).

K independent Bernoulli draws :math:`b_1 \dots b_K` give RLOO. Each draw's learning signal
also gets the linear term :math:`h_k = \alpha\langle \bar g_{-k},\ b_k - p\rangle`, where
:math:`\bar g_{-k}` is the mean of :math:`\nabla_b f` at the *other* draws (so :math:`h_k`
has mean zero given them), and the score term it adds, :math:`\alpha\,\mathbb{E}[\nabla_b f]
\odot p(1-p)`, is taken back out with its unbiased estimate from all K draws. No extra
evaluation of the objective; one input gradient per draw.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.replay import (
    bernoulli_draws,
    flat_variables,
    joint_runs,
    logit_surrogate,
    split_variables,
)
from gvbench.estimators.state import Adaptation
from gvbench.estimators.validation import check_objective, check_real


def leave_one_out(values: Tensor) -> Tensor:
    """The mean of the other K − 1 entries along the first axis."""
    return (values.sum(0, keepdim=True) - values) / (values.shape[0] - 1)


class ControlWeight:
    r"""The weight :math:`\alpha` minimising :math:`\mathbb{E}\|A + \alpha B\|^2`, learned online.

    For an estimate :math:`A + \alpha B` linear in one weight the minimiser is
    :math:`-\mathbb{E}\langle A, B\rangle / \mathbb{E}\|B\|^2`; both moments are kept as
    exponential moving averages (``decay``) of what each call observes, and the weight is read
    before and updated after a call, so it never depends on that call's draws (the estimate
    stays unbiased). The authors take Adam steps on the same objective; the closed form needs
    no learning rate and starts at :math:`\alpha = 0` (RLOO).
    """

    def __init__(self, decay: float = 0.99, adapt: bool = True) -> None:
        decay = check_real(decay, "decay")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay, self.adapt = decay, bool(adapt)
        self.cross, self.square = 0.0, 0.0

    def __call__(self) -> float:
        return -self.cross / self.square if self.square > 0 else 0.0

    def update(self, a: Tensor, b: Tensor) -> None:
        """Fold one call's :math:`\\langle A, B\\rangle` and :math:`\\|B\\|^2` into the moments."""
        if not self.adapt:
            return
        cross, square = float((a * b).sum()), float((b * b).sum())
        if math.isfinite(cross) and math.isfinite(square):
            self.cross = self.decay * self.cross + (1 - self.decay) * cross
            self.square = self.decay * self.square + (1 - self.decay) * square

    @property
    def adaptation(self) -> Adaptation:
        """It adapts within a call, from the call's terms (see
        :class:`gvbench.estimators.EstimatorState`), unless frozen."""
        return "within_call" if self.adapt else "fixed"

    def frozen(self) -> ControlWeight:
        """A copy that no longer adapts (this one goes on as it was)."""
        copied = copy.copy(self)
        copied.adapt = False
        return copied

    def summary(self) -> dict[str, float]:
        return {"alpha": self()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "adapt": self.adapt,
            "cross": self.cross,
            "square": self.square,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.adapt = float(state["decay"]), bool(state["adapt"])
        self.cross, self.square = float(state["cross"]), float(state["square"])

    def __repr__(self) -> str:
        return f"ControlWeight(alpha={self():.4g}, adapt={self.adapt})"


def taylor_terms(
    losses: Tensor, draws: Tensor, input_grads: Tensor, p: Tensor
) -> tuple[Tensor, Tensor]:
    r"""RLOO's estimate :math:`A` and the Taylor control variate's :math:`B` (weight 1), per
    variable, for all of an example's variables side by side.

    ``losses`` (K, *example); ``draws``, ``input_grads`` (K, *example, D); ``p`` (*example, D).

    .. math::
        A = \frac1K\sum_k (f_k - \bar f_{-k})(b_k - p),\quad
        B = \frac1K\sum_k (h_k - \bar h_{-k})(b_k - p) - \bar g \odot p(1-p),\quad
        h_k = \langle \bar g_{-k}, b_k - p\rangle.
    """
    score = draws - p
    f = losses.unsqueeze(-1)
    a = ((f - leave_one_out(f)) * score).mean(0)
    h = (leave_one_out(input_grads) * score).sum(-1, keepdim=True)
    b = ((h - leave_one_out(h)) * score).mean(0) - input_grads.mean(0) * p * (1 - p)
    return a, b


@register(
    unbiased=True,
    binary_only=True,
    sequential=False,
    label="Double CV",
    min_k=2,
    max_k=1 << 10,
    evaluations=lambda o, c: o["k"],
    state=lambda: {"weight": ControlWeight()},
    transforms=False,
)
def double_cv(
    objective: Objective,
    *,
    k: int = 2,
    weight: ControlWeight | float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Double control variates (Titsias & Shi 2022, AISTATS), Bernoulli variables, unbiased.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{b\sim\mathrm{Bern}(\sigma(\varphi))}[f(b)]`.
    With: K i.i.d. draws, :math:`\hat g = A + \alpha B` (see :func:`taylor_terms`): RLOO plus
    a first-order Taylor control variate built from :math:`\nabla_b f` at the other draws.
    :math:`\alpha`: a number, ``None`` (0: RLOO), or a :class:`ControlWeight` (the registry's
    default) that learns the variance-minimising value online.
    Requires: :math:`f` differentiable in its one-hot input (where it is not, its gradient is
    taken as 0 and the estimator is RLOO); choices whose logits do not depend on earlier
    samples. K runs of the objective, each with one extra backward pass to the samples.
    Returns per-example surrogates (value: the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(double_cv, k)
    if isinstance(weight, ControlWeight):
        alpha = weight()
    else:
        alpha = 0.0 if weight is None else check_real(weight, "weight")
        if not math.isfinite(alpha):
            raise ValueError(f"weight must be finite, got {weight!r}")
    losses, first, draws, grads = joint_runs(
        objective, k, "Double CV", bernoulli_draws(k, "Double CV", generator), differentiable=True
    )
    # ∂f/∂b of the one-hot D = (1 − b, b), in float64
    grads = [(g[..., 1] - g[..., 0]).to(torch.float64) for g in grads]
    draws = [d.to(torch.float64) for d in draws]
    example_ndim = losses.dim() - 1
    phis = [t.detach()[..., 1] - t.detach()[..., 0] for t in first.thetas]
    p = flat_variables(
        [torch.sigmoid(phi.to(torch.float64)) for phi in phis], example_ndim, losses.shape[1:]
    )
    a, b = taylor_terms(
        losses.detach().to(torch.float64),
        flat_variables(list(draws), example_ndim + 1, losses.shape),
        flat_variables(list(grads), example_ndim + 1, losses.shape),
        p,
    )
    if isinstance(weight, ControlWeight):
        weight.update(a, b)
    gradient = split_variables(a + alpha * b, phis, example_ndim)
    gradients = [torch.stack([-g, g], -1) for g in gradient]
    return losses.mean(0) + logit_surrogate(first.thetas, gradients, losses.shape[1:])
