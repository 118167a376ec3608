r"""Bit flips: bitflip-1 and UGC (Kunes, Yin, Land, Haviv, Pe'er & Tavaré 2023, AAAI), Bernoulli
variables.

For independent :math:`b_i \sim \mathrm{Bern}(p_i)`, :math:`p_i = \sigma(\varphi_i)`,

.. math::
    \frac{\partial}{\partial\varphi_i}\mathbb{E}[f(b)] = p_i(1 - p_i)\,
    \mathbb{E}_{b_{-i}}\big[f(b^{i \leftarrow 1}) - f(b^{i \leftarrow 0})\big],

where :math:`b^{i \leftarrow v}` is :math:`b` with bit i set to v. One sample :math:`b` and one
more run of the objective, with one bit flipped, estimate it for that bit: that is bitflip-1.
DisARM's coordinate i is non-zero only when its antithetic pair differs at i (probability
:math:`2\min(p_i, 1 - p_i)`), so near :math:`p_i \in \{0, 1\}` it is rare and large, and in
the probability parameterisation its variance grows as :math:`1/\min(p_i, 1 - p_i)`;
bitflip-1's stays bounded. UGC takes, coordinate by coordinate, bitflip-1 near the boundary
and DisARM inside.

No code was released with the paper, and its full text was not at hand when these were
written: they follow its abstract (bitflip-1; UGC takes bitflip-1 or DisARM per coordinate,
with variance at most DisARM's) and a third-party implementation's account of the rule (one
bit flipped, uniformly, of the K; the switch at :math:`\min(p, 1 - p) < 1/(2K)`; three runs),
which the second moments compared in :func:`ugc` explain.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, register
from gvbench.estimators.replay import Replay, check_binary, logit_surrogate, run
from gvbench.estimators.sampling import randint, uniform_like
from gvbench.estimators.validation import check_objective

__all__ = ["bitflip_1", "boundary", "ugc"]


class _Draws:
    """The first run's sampler: :math:`u \\sim U(0, 1)` per variable, plays
    :math:`b = \\mathbb{1}[u < \\sigma(\\varphi)]`, and records :math:`\\varphi` and u."""

    def __init__(self, name: str, generator: torch.Generator | None) -> None:
        self.name, self.generator = name, generator
        self.phis: list[Tensor] = []  # detached
        self.uniforms: list[Tensor] = []

    def play(self, call: int, theta: Tensor) -> Tensor:
        phi = check_binary(theta, self.name)
        u = uniform_like(phi.shape, phi, self.generator)
        self.phis.append(phi)
        self.uniforms.append(u)
        return (u < torch.sigmoid(phi.to(u.dtype))).long()


def _variable_shapes(thetas: list[Tensor], example_ndim: int) -> list[torch.Size]:
    return [theta.shape[example_ndim:-1] for theta in thetas]


def _flip_masks(
    base: Replay, example_ndim: int, generator: torch.Generator | None
) -> tuple[list[Tensor], int]:
    r"""One variable :math:`j` per example, uniform over its :math:`K` variables (all calls
    side by side), as a 0/1 mask per call; and :math:`K`.

    A choice shared by the examples (a size-1 example axis) can only be flipped for all of
    them at once: along such an axis every example gets the same :math:`j`.
    """
    shapes = _variable_shapes(base.thetas, example_ndim)
    count = sum(shape.numel() for shape in shapes)
    leading = [theta.shape[:example_ndim] for theta in base.thetas]
    drawn = torch.Size(min(sizes) for sizes in zip(*leading, strict=True))
    j = randint(count, drawn, base.thetas[0].device, generator)
    masks, offset = [], 0
    for shape in shapes:
        positions = offset + torch.arange(shape.numel(), device=j.device).reshape(shape)
        masks.append((j.reshape(*drawn, *[1] * len(shape)) == positions).long())
        offset += shape.numel()
    return masks, count


def _flipped_run(objective: Objective, base: Replay, masks: list[Tensor], name: str) -> Tensor:
    """The objective's losses at the first run's bits with each example's j-th bit flipped."""

    def play(call: int, theta: Tensor) -> Tensor:
        b = base.indices[call]
        return torch.where(masks[call] > 0, 1 - b, b)

    return run(objective, Replay(play, name, first=base))


def _bitflip_gradients(
    base: Replay, phis: list[Tensor], masks: list[Tensor], count: int, change: Tensor
) -> list[Tensor]:
    r""":math:`K\,p_j(1 - p_j)\,(f(b^{j\leftarrow 1}) - f(b^{j\leftarrow 0}))` at the flipped
    bit :math:`j`, 0 elsewhere, per call (w.r.t. :math:`\varphi`); ``change`` is
    :math:`f(b \oplus e_j) - f(b)` per example."""
    gradients = []
    for phi, b, mask in zip(phis, base.indices, masks, strict=True):
        p = torch.sigmoid(phi.to(change.dtype))
        trailing = phi.dim() - change.dim()
        # f(b^{j←1}) − f(b^{j←0}) is the change if b_j was 0, minus it if b_j was 1
        sign = (1 - 2 * b).to(change.dtype)
        per_example = change.reshape(*change.shape, *[1] * trailing)
        gradients.append(count * p * (1 - p) * sign * mask.to(change.dtype) * per_example)
    return gradients


def _as_categorical(gradients: list[Tensor]) -> list[Tensor]:
    """A gradient w.r.t. the Bernoulli logit :math:`\\varphi = \\theta_1 - \\theta_0` as one
    w.r.t. the two logits."""
    return [torch.stack([-g, g], -1) for g in gradients]


@register(unbiased=True, binary_only=True, sequential=False, label="bitflip-1", evaluations=2)
def bitflip_1(objective: Objective, *, generator: torch.Generator | None = None) -> Tensor:
    r"""bitflip-1 (Kunes et al. 2023, AAAI; arXiv 2208.06124), Bernoulli variables, unbiased.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{b\sim\mathrm{Bern}(\sigma(\varphi))}[f(b)]`.
    With: one sample :math:`b`, one variable :math:`j` uniform over the :math:`K` variables of
    an example, and a second run of the objective with bit j flipped,

    .. math::
        \hat g_j = K\,\sigma(\varphi_j)\sigma(-\varphi_j)\,
        \big(f(b^{j\leftarrow 1}) - f(b^{j\leftarrow 0})\big),\qquad \hat g_i = 0\ (i \ne j).

    Its variance for bit i in the probability parameterisation,
    :math:`K\,\mathbb{E}[(f(b^{i\leftarrow 1}) - f(b^{i\leftarrow 0}))^2] - (\cdot)^2`, does not
    grow as :math:`p_i \to 0` or 1, where DisARM's does (see :func:`ugc`). Runs the objective
    twice; the choices' logits must not depend on earlier samples (the two runs must make the
    same choices). The categorical logits of arity 2 give
    :math:`\varphi = \theta_1 - \theta_0`. Returns per-example surrogates (value: :math:`f(b)`).
    """
    check_objective(objective)
    draws = _Draws("bitflip_1", generator)
    base = Replay(draws.play, "bitflip_1")
    loss = run(objective, base)
    masks, count = _flip_masks(base, loss.dim(), generator)
    change = (_flipped_run(objective, base, masks, "bitflip_1") - loss).detach()
    gradients = _bitflip_gradients(base, draws.phis, masks, count, change)
    return loss + logit_surrogate(base.thetas, _as_categorical(gradients), loss.shape)


def _disarm_gradients(
    draws: _Draws, first: Replay, second: Replay, difference: Tensor
) -> list[Tensor]:
    r"""DisARM's :math:`\tfrac12(f(b) - f(\tilde b))(-1)^{\tilde b_i}\mathbb{1}[b_i \ne \tilde b_i]
    \sigma(|\varphi_i|)` per call (w.r.t. :math:`\varphi`)."""
    gradients = []
    for phi, b, b_tilde in zip(draws.phis, first.indices, second.indices, strict=True):
        trailing = phi.dim() - difference.dim()
        per_example = difference.reshape(*difference.shape, *[1] * trailing)
        sign = (1 - 2 * b_tilde).to(difference.dtype)
        differ = (b != b_tilde).to(difference.dtype)
        weight = torch.sigmoid(phi.abs().to(difference.dtype))
        gradients.append(0.5 * per_example * sign * differ * weight)
    return gradients


def boundary(phi: Tensor, count: int) -> Tensor:
    r"""Where UGC takes bitflip-1: :math:`\min(p, 1 - p) < 1/(2K)`, :math:`p = \sigma(\varphi)`,
    :math:`K` the variables of an example (the threshold of the account in the module's
    docstring; the paper's own section on it was not at hand)."""
    return torch.sigmoid(-phi.abs()) < 1 / (2 * count)


def _pair(draws: _Draws) -> Callable[[int, Tensor], Tensor]:
    r"""The antithetic partner :math:`\tilde b = \mathbb{1}[1 - u < \sigma(\varphi)]`."""

    def play(call: int, theta: Tensor) -> Tensor:
        u = draws.uniforms[call]
        return (1 - u < torch.sigmoid(draws.phis[call].to(u.dtype))).long()

    return play


@register(unbiased=True, binary_only=True, sequential=False, label="UGC", evaluations=3)
def ugc(objective: Objective, *, generator: torch.Generator | None = None) -> Tensor:
    r"""UGC, unbiased gradient variance clipping (Kunes et al. 2023, AAAI; arXiv 2208.06124),
    Bernoulli variables.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{b\sim\mathrm{Bern}(\sigma(\varphi))}[f(b)]`,
    unbiased. With: DisARM's antithetic pair :math:`b = \mathbb{1}[u < p]`,
    :math:`\tilde b = \mathbb{1}[1 - u < p]`, and bitflip-1 (:func:`bitflip_1`) at :math:`b`
    with bit :math:`j` flipped, coordinate by coordinate

    .. math::
        \hat g_i = \begin{cases}
        \hat g_i^{\text{bitflip-1}} & \min(p_i, 1 - p_i) < 1/(2K),\\
        \tfrac12\big(f(b) - f(\tilde b)\big)(-1)^{\tilde b_i}\mathbb{1}[b_i \ne \tilde b_i]
        \sigma(|\varphi_i|) & \text{otherwise (DisARM)},
        \end{cases}

    :math:`K` the variables of an example. Per coordinate, in the probability
    parameterisation, DisARM's second moment is :math:`\mathbb{E}[D_i^2]/(2\min(p_i, 1-p_i))`
    and bitflip-1's is :math:`K\,\mathbb{E}[\Delta_i^2]`, with
    :math:`\Delta_i = f(b^{i\leftarrow 1}) - f(b^{i\leftarrow 0})` and :math:`D_i` the same
    difference taken across an antithetic pair of the other bits; the threshold makes
    bitflip-1's the smaller wherever :math:`\mathbb{E}[\Delta_i^2] \le \mathbb{E}[D_i^2]` (a
    sufficient condition for UGC's variance to be at most DisARM's at every :math:`p`, the
    abstract's claim).

    Cost: three runs of the objective, :math:`f(b)`, :math:`f(\tilde b)` and
    :math:`f(b \oplus e_j)`; bitflip-1's sample is DisARM's :math:`b`, so each coordinate's
    estimate has the law of the estimator it is taken from. The choices' logits must not
    depend on earlier samples. Returns per-example surrogates (value:
    :math:`\tfrac12(f(b) + f(\tilde b))`).
    """
    check_objective(objective)
    draws = _Draws("ugc", generator)
    first = Replay(draws.play, "ugc")
    loss = run(objective, first)
    second = Replay(_pair(draws), "ugc", first=first)
    loss_tilde = run(objective, second)
    masks, count = _flip_masks(first, loss.dim(), generator)
    change = (_flipped_run(objective, first, masks, "ugc") - loss).detach()
    flips = _bitflip_gradients(first, draws.phis, masks, count, change)
    antithetic = _disarm_gradients(draws, first, second, (loss - loss_tilde).detach())
    gradients = [
        torch.where(boundary(phi, count), flip, pair)
        for phi, flip, pair in zip(draws.phis, flips, antithetic, strict=True)
    ]
    mean = 0.5 * (loss + loss_tilde)
    return mean + logit_surrogate(first.thetas, _as_categorical(gradients), loss.shape)
