r"""Running an objective again at prescribed choices: what multi-evaluation estimators share.

ARMS, CARMS, IndeCateR, Double CV, RODEO and the coupled categorical DisARM evaluate the
objective at several samples that they choose together (antithetic, copula-coupled, one
variable changed). A :class:`Replay` is the sampler of one such run: at its i-th call it plays
the category its ``play(i, θ)`` prescribes and records the call's logits. Every run after the
first checks that each call's logits are those of the first run, since the estimators assume
the choices are fixed in advance (``sequential=False`` in the registry).

Each estimator here then knows its gradient with respect to every choice's logits in closed
form, :math:`G_c`, and returns the surrogate

.. math::
    \mathcal{S} = \bar f + \textstyle\sum_c \langle \mathrm{sg}(G_c),\ \theta_c - \mathrm{sg}\,\theta_c\rangle,

whose value is the mean loss :math:`\bar f` of the runs and whose gradient is their pathwise
gradient (parameters the loss uses directly) plus :math:`G_c` pushed back through whatever
computed :math:`\theta_c`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective
from gvbench.estimators.sampling import uniform_like
from gvbench.estimators.surrogates import sum_to_examples
from gvbench.estimators.validation import (
    check_logits,
    check_losses,
    refuse_subset_size,
    validate_args,
)

Play = Callable[[int, Tensor], Tensor]
"""``play(call, θ)``: the category index to play at a call, shaped as θ less its category dim
(θ is detached, categories last)."""


class Replay:
    """A sampler that plays prescribed categories and records every call's logits.

    Args:
        play: the categories to play (see :data:`Play`).
        name: the estimator's label, for error messages.
        first: the first run's replay; every call must then repeat its logits.
        differentiable: hand the objective one-hot samples that require grad, so that
            :func:`input_gradients` can read :math:`\\partial f/\\partial D` afterwards.
    """

    def __init__(
        self,
        play: Play,
        name: str,
        first: Replay | None = None,
        differentiable: bool = False,
    ) -> None:
        self.play, self.name, self.first = play, name, first
        self.differentiable = differentiable
        self.thetas: list[Tensor] = []  # each call's logits, categories last, with their graph
        self.indices: list[Tensor] = []
        self.samples: list[Tensor] = []  # the one-hot samples played, categories last

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        dim = check_logits(logits, dim)
        theta = logits.movedim(dim, -1)
        call = len(self.thetas)
        # The value check is data-dependent: off where validation is (under torch.func.vmap).
        if self.first is not None and (
            call >= len(self.first.thetas)
            or theta.shape != self.first.thetas[call].shape
            or (
                validate_args()
                and not torch.equal(self.first.thetas[call].detach(), theta.detach())
            )
        ):
            raise ValueError(
                f"{self.name} needs every choice's logits to be the same in all of its runs of "
                "the objective: choices whose logits depend on earlier samples are not supported"
            )
        index = self.play(call, theta.detach())
        categories = torch.arange(theta.shape[-1], device=theta.device)
        sample = (index.unsqueeze(-1) == categories).to(theta.dtype)  # one-hot, vmap-friendly
        if self.differentiable and torch.is_grad_enabled():
            sample.requires_grad_()
        self.thetas.append(theta)
        self.indices.append(index)
        self.samples.append(sample)
        return sample.movedim(-1, dim)


def run(objective: Objective, replay: Replay) -> Tensor:
    """The objective's per-example losses with ``replay`` as its sampler, checked."""
    loss = check_losses(objective(replay))
    if not replay.thetas:
        raise ValueError("the objective made no discrete choice (it never called the sampler)")
    if replay.first is not None and len(replay.thetas) != len(replay.first.thetas):
        raise ValueError(
            f"the objective made a different number of choices in {replay.name}'s runs"
        )
    for theta in replay.thetas:
        if theta.shape[: loss.dim()] != loss.shape:
            # the message of sum_to_examples, raised before any further run is spent
            sum_to_examples(theta[..., 0], loss.shape, "the choices")
    return loss


def check_binary(theta: Tensor, name: str) -> Tensor:
    r"""The Bernoulli logit :math:`\varphi = \theta_1 - \theta_0` of arity-2 logits (categories last)."""
    if theta.shape[-1] != 2:
        raise ValueError(
            f"{name} is binary-only: logits need exactly 2 categories, got {theta.shape[-1]}"
        )
    zero, one = theta.unbind(-1)
    return one - zero


def input_gradients(loss: Tensor, replay: Replay) -> list[Tensor]:
    r""":math:`\partial f/\partial D` at each call's one-hot sample, per example (detached).

    Zeros where the objective does not use its sample differentiably, or where autograd is
    off. ``replay`` must have been made with ``differentiable=True``.
    """
    leaves = [s for s in replay.samples if s.requires_grad]
    grads: Sequence[Tensor | None] = [None] * len(leaves)
    if leaves and loss.requires_grad:
        grads = torch.autograd.grad(loss.sum(), leaves, retain_graph=True, allow_unused=True)
    found = iter(grads)
    aligned = [next(found) if s.requires_grad else None for s in replay.samples]
    return [
        torch.zeros_like(s.detach()) if g is None else g.detach()
        for s, g in zip(replay.samples, aligned, strict=True)
    ]


def logit_surrogate(
    thetas: Sequence[Tensor], gradients: Sequence[Tensor], example_shape: torch.Size
) -> Tensor:
    r""":math:`\sum_c \langle \mathrm{sg}(G_c), \theta_c - \mathrm{sg}\,\theta_c\rangle` per example: value 0,
    gradient :math:`G_c` with respect to each call's logits (categories last)."""
    total = 0
    for theta, gradient in zip(thetas, gradients, strict=True):
        # a masked logit (−∞) would make −∞ − (−∞); it gets no gradient
        moved = torch.where(torch.isfinite(theta.detach()), theta - theta.detach(), 0.0)
        term = (gradient.detach().to(theta.dtype) * moved).sum(-1)
        total = total + sum_to_examples(term, example_shape, "the logits")
    return total


def flat_variables(
    tensors: Sequence[Tensor], example_ndim: int, examples: torch.Size | None = None
) -> Tensor:
    """Every call's per-variable values of one example side by side: ``(*example, D)``.

    ``examples``: the example shape every call is broadcast to, so that a choice shared by
    the examples (a size-1 example axis) sits beside each example's own (default: each
    call's own leading shape, which must then agree)."""
    if examples is not None:
        tensors = [t.expand(*examples, *t.shape[example_ndim:]) for t in tensors]
    return torch.cat([t.reshape(*t.shape[:example_ndim], -1) for t in tensors], dim=-1)


def split_variables(flat: Tensor, like: Sequence[Tensor], example_ndim: int) -> list[Tensor]:
    """The inverse of :func:`flat_variables`, shaped as ``like`` past ``flat``'s examples."""
    sizes = [t.shape[example_ndim:].numel() for t in like]
    parts = flat.split(sizes, dim=-1)
    examples = flat.shape[:example_ndim]
    return [p.reshape(*examples, *t.shape[example_ndim:]) for p, t in zip(parts, like, strict=True)]


class Runs(NamedTuple):
    """What :func:`joint_runs` returns."""

    losses: Tensor  # (K, *example), with their graphs
    first: Replay  # the first run's sampler: every call's logits
    draws: list[Tensor]  # per call, the K draws' categories (K, *variables)
    input_grads: list[Tensor] | None  # per call, ∂f/∂D at each draw (K, *variables, n)


def joint_runs(
    objective: Objective,
    k: int,
    name: str,
    draw: Callable[[Tensor], Tensor],
    differentiable: bool = False,
) -> Runs:
    """K runs of the objective at draws made together: ``draw(θ)`` gives every call's K
    categories at once (``(K, *θ.shape[:-1])``, θ detached, categories last) during the first
    run; run i plays the i-th. ``differentiable``: also read ∂f/∂D at each draw."""
    draws: list[Tensor] = []

    def play(index: int) -> Play:
        def choose(call: int, theta: Tensor) -> Tensor:
            if index == 0:
                draws.append(draw(theta))
            return draws[call][index]

        return choose

    losses, grads, first = [], [], None
    for index in range(k):
        replay = Replay(play(index), name, first=first, differentiable=differentiable)
        losses.append(run(objective, replay))
        first = first or replay
        if differentiable:
            grads.append(input_gradients(losses[-1], replay))
    per_call = [torch.stack(list(g)) for g in zip(*grads, strict=True)] if differentiable else None
    return Runs(torch.stack(losses), first, draws, per_call)


def bernoulli_draws(
    k: int, name: str, generator: torch.Generator | None
) -> Callable[[Tensor], Tensor]:
    """``draw`` for :func:`joint_runs`: K i.i.d. Bernoulli(σ(θ₁ − θ₀)) draws per variable."""

    def draw(theta: Tensor) -> Tensor:
        p = torch.sigmoid(check_binary(theta, name).to(torch.float64))
        u = uniform_like((k, *p.shape), p, generator)
        return (u < p).long()

    return draw
