r"""RODEO: control variates from discrete Stein operators, adapted online (Shi et al. 2022).

For any function :math:`h` of a binary vector, the Gibbs Stein operator

.. math::
    (\mathcal{A}h)(b) = \frac1D \sum_i q(\bar b_i \mid b_{-i})\,\big(h(b^{(i)}) - h(b)\big),

:math:`b^{(i)}` being b with coordinate i flipped and :math:`q(\bar b_i \mid b_{-i})` the
probability of the flipped value, has mean zero under :math:`q`. RODEO applies it to a learned
:math:`h` twice: once to make a control variate for the other draws' losses inside RLOO's
baseline, once (to :math:`h(b)(b - p)`) for the score itself. :math:`h` must not depend on
the draw it is applied to: it is a small network of the first-order Taylor expansion of f
around the *other* draws, so it costs no evaluation of the objective.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from gvbench.estimators.adaptation import adam, variance_step
from gvbench.estimators.double_cv import leave_one_out
from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.replay import (
    bernoulli_draws,
    flat_variables,
    joint_runs,
    logit_surrogate,
    split_variables,
)
from gvbench.estimators.state import Adaptation
from gvbench.estimators.validation import check_count, check_objective, check_real


class _SteinNetwork(nn.Module):
    """The authors' network: ``(x, z) ↦ W₂ LeakyReLU₀.₃(W_x x + W_z z) → 2 outputs``, x the
    Taylor-linearised loss at a point, z the loss at the expansion point."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.x, self.z = nn.Linear(1, hidden), nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, 2)
        for layer in (self.x, self.z, self.out):  # as Keras' Dense: Glorot uniform, zero bias
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        hidden = self.x(x.unsqueeze(-1)) + self.z(z.unsqueeze(-1))
        return self.out(nn.functional.leaky_relu(hidden, 0.3))


class SteinControl:
    r"""RODEO's learned parts: the network :math:`h` and the two weights :math:`\alpha, \beta`.

    All start where the authors start them (:math:`\alpha = \beta = 0`: RLOO; the network from
    a fixed seed) and take one Adam step per call on the estimate's mean square w.r.t. the
    Bernoulli logits, after the estimate is made (so it stays unbiased).

    Args:
        hidden: hidden units of the network (the authors': 100).
        lr: Adam learning rate (the authors': 10⁻³); 0 keeps everything fixed.
    """

    def __init__(self, hidden: int = 100, lr: float = 1e-3) -> None:
        self.hidden = check_count(hidden, "hidden", 1, 1 << 16)
        self.lr = check_real(lr, "lr")
        if not (self.lr >= 0 and self.lr < float("inf")):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a fixed initialisation, whatever the global state
            self.network = _SteinNetwork(self.hidden).double()
        self.alpha = torch.zeros((), dtype=torch.float64)
        self.beta = torch.zeros((), dtype=torch.float64)
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None

    def parameters(self) -> list[Tensor]:
        return [self.alpha, self.beta, *self.network.parameters()]

    def prepare(self, like: Tensor) -> None:
        """Move to ``like``'s device (in place, so the optimiser keeps its parameters) and make
        the optimiser; float64 throughout."""
        self.network.to(device=like.device)
        for tensor in (self.alpha, self.beta):
            tensor.data = tensor.data.to(like.device)
            tensor.requires_grad_(self.lr > 0)
        self.network.requires_grad_(self.lr > 0)
        if self.optimizer is None and self.lr > 0:
            self.optimizer, self._pending = (
                adam(list(self.parameters()), self.lr, self._pending),
                None,
            )

    @property
    def adaptation(self) -> Adaptation:
        """It trains within a call (see :class:`gvbench.estimators.EstimatorState`) unless
        frozen or its learning rate is 0."""
        return "within_call" if self.lr > 0 else "fixed"

    def update(self, loss: Tensor) -> None:
        """One Adam step on ``loss`` (the estimate's mean square) w.r.t. the parameters."""
        if self.optimizer is not None and loss.requires_grad:
            variance_step(self.optimizer, self.parameters(), loss)

    def freeze(self) -> SteinControl:
        """Stop training (e.g. to measure the variance an adapted control leaves)."""
        self.lr, self.optimizer = 0.0, None
        self.alpha.requires_grad_(False)
        self.beta.requires_grad_(False)
        self.network.requires_grad_(False)
        return self

    def frozen(self) -> SteinControl:
        """A copy that no longer trains (this one goes on as it was)."""
        return copy.deepcopy(self).freeze()

    def summary(self) -> dict[str, float]:
        return {"alpha": float(self.alpha.detach()), "beta": float(self.beta.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "lr": self.lr,
            "alpha": self.alpha.detach().clone(),
            "beta": self.beta.detach().clone(),
            "network": self.network.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(hidden=state["hidden"], lr=state["lr"])
        self.network.load_state_dict(state["network"])
        self.alpha.data = state["alpha"].clone().to(torch.float64)
        self.beta.data = state["beta"].clone().to(torch.float64)
        self._pending = state["optimizer"]

    def __repr__(self) -> str:
        return (
            f"SteinControl(alpha={float(self.alpha.detach()):.4g}, "
            f"beta={float(self.beta.detach()):.4g}, lr={self.lr})"
        )


def stein_terms(
    control: SteinControl, losses: Tensor, draws: Tensor, input_grads: Tensor, p: Tensor
) -> Tensor:
    r"""RODEO's estimate w.r.t. the Bernoulli logits, ``(*example, D)``, differentiable in the
    control's parameters.

    ``losses`` (K, *example); ``draws``, ``input_grads`` (K, *example, D); ``p`` (*example, D).
    For draw k, :math:`h_k(y) = \frac{1}{K-1}\sum_{j\ne k}\mathrm{NN}(\langle\nabla f(b_j), y -
    b_j\rangle,\ f(b_j))` (the authors' estimator for K > 2; the same as their K = 2 form
    there), and

    .. math::
        \hat g = \frac1K\sum_k \Big[\big(f_k - \overline{(f + \alpha\,\mathcal{A}h^{(0)})}_{-k}\big)(b_k - p)
        + \beta\,\mathcal{A}\big(h^{(1)}(\cdot)(\cdot - p)\big)(b_k)\Big].
    """
    k = draws.shape[0]
    others = ~torch.eye(k, dtype=torch.bool, device=draws.device)
    # ⟨∇f(b_j), b_k − b_j⟩ for every ordered pair, and its change when coordinate i of b_k flips
    at_draw = torch.einsum("j...d,k...d->kj...", input_grads, draws) - (input_grads * draws).sum(-1)
    flip = 1 - 2 * draws  # b^{(i)} − b at coordinate i
    at_flip = at_draw.unsqueeze(-1) + input_grads.unsqueeze(0) * flip.unsqueeze(1)  # (K,K,…,D)
    expansion = losses.unsqueeze(0).expand(k, *losses.shape)  # [k, j] = f_j
    pairs = others.reshape(k, k, *[1] * (losses.dim() - 1))
    weight = pairs.to(p.dtype) / (k - 1)
    h_draw = (control.network(at_draw, expansion) * weight.unsqueeze(-1)).sum(1)  # (K,…,2)
    h_flip = (
        control.network(at_flip, expansion.unsqueeze(-1).expand_as(at_flip))
        * weight.unsqueeze(-1).unsqueeze(-1)
    ).sum(1)  # (K,…,D,2)
    q_flip = p * (1 - draws) + (1 - p) * draws  # q(b̄_i | b_−i)
    score = draws - p
    baseline_cv = (q_flip * (h_flip[..., 0] - h_draw[..., :1])).mean(-1)  # (K,…)
    difference = (h_flip[..., 1] - h_draw[..., 1:]) * q_flip  # (K,…,D)
    score_cv = (
        difference.mean(-1, keepdim=True) * score + q_flip * h_flip[..., 1] * flip / (p.shape[-1])
    )
    adjusted = losses + control.alpha * baseline_cv
    signal = (losses - leave_one_out(adjusted)).unsqueeze(-1)
    return (signal * score + control.beta * score_cv).mean(0)


@register(
    unbiased=True,
    binary_only=True,
    sequential=False,
    label="RODEO",
    min_k=2,
    max_k=1 << 8,
    evaluations=lambda o, c: o["k"],
    state=lambda: {"control": SteinControl()},
    transforms=False,
    # the network runs on every ordered pair of draws, per variable, 100 hidden units wide
    footprint=lambda o: o["k"] * 64,
)
def rodeo(
    objective: Objective,
    *,
    k: int = 2,
    control: SteinControl | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""RODEO (Shi, Zhou, Hwang, Titsias & Mackey 2022, NeurIPS), Bernoulli variables, unbiased.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{b\sim\mathrm{Bern}(\sigma(\varphi))}[f(b)]`.
    With: K i.i.d. draws and the two Stein control variates of :func:`stein_terms`;
    ``control`` (a :class:`SteinControl`, the registry's default) holds the network and
    :math:`\alpha, \beta`, trained online to minimise the variance (saved in checkpoints).
    This is the authors' ``discrete_stein_output_avg`` configuration, which they use for
    K > 2 and which equals their K = 2 one (``discrete_stein_avg``) at K = 2.
    Requires: :math:`f` differentiable in its one-hot input (else its input gradient is taken
    as 0); choices whose logits do not depend on earlier samples. K runs of the objective,
    each with one extra backward pass to the samples. Returns per-example surrogates (value:
    the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(rodeo, k)
    control = control if control is not None else SteinControl()
    if not isinstance(control, SteinControl):
        raise TypeError(f"control must be a gvbench SteinControl, got {type(control).__name__}")
    losses, first, draws, grads = joint_runs(
        objective, k, "RODEO", bernoulli_draws(k, "RODEO", generator), differentiable=True
    )
    # ∂f/∂b of the one-hot D = (1 − b, b), in float64
    grads = [(g[..., 1] - g[..., 0]).to(torch.float64) for g in grads]
    draws = [d.to(torch.float64) for d in draws]
    example_ndim = losses.dim() - 1
    phis = [t.detach()[..., 1] - t.detach()[..., 0] for t in first.thetas]
    control.prepare(losses)
    with torch.enable_grad():
        estimate = stein_terms(
            control,
            losses.detach().to(torch.float64),
            flat_variables(list(draws), example_ndim + 1, losses.shape),
            flat_variables(list(grads), example_ndim + 1, losses.shape),
            flat_variables(
                [torch.sigmoid(phi.to(torch.float64)) for phi in phis],
                example_ndim,
                losses.shape[1:],
            ),
        )
    if control.optimizer is not None and torch.is_grad_enabled():
        control.update(estimate.pow(2).mean())
    gradient = split_variables(estimate.detach(), phis, example_ndim)
    gradients = [torch.stack([-g, g], -1) for g in gradient]
    return losses.mean(0) + logit_surrogate(first.thetas, gradients, losses.shape[1:])
