r"""Polynomial programming: ``D`` independent binary variables and a separable polynomial loss.

.. math::

    f(z) = \frac1D \sum_{i=1}^{D} |z_i - c|^p, \qquad
    z_i = D_{i,0},\ D_i \sim \mathrm{Categorical}(\mathrm{softmax}\ \theta_i),\ \theta \in
    \mathbb{R}^{D \times 2},

with :math:`z_i = 1` where variable :math:`i` takes its first category, as in ReinMax's
``poly/poly_programming.py`` (``z[:, :, 0]`` of the one-hot sample). With
:math:`q_i = \mathrm{softmax}(\theta_i)_0`, independence gives the expected loss and its gradient
exactly, whatever :math:`D`:

.. math::

    \mathbb{E}[f(z)] = \frac1D \sum_i \big(q_i (1 - c)^p + (1 - q_i) c^p\big), \qquad
    \frac{\partial\,\mathbb{E}[f]}{\partial \theta_{i0}} =
    -\frac{\partial\,\mathbb{E}[f]}{\partial \theta_{i1}} =
    \frac{(1 - c)^p - c^p}{D}\, q_i (1 - q_i).

Polynomial programming (Liu et al. 2023, ReinMax) is :math:`D = 128`, :math:`c = 0.45`,
:math:`p \in \{1.5, 2, 3\}`; the quadratic toy of REBAR, RELAX and ARM (Tucker et al. 2017,
Grathwohl et al. 2018, Yin & Zhou 2019) is :math:`D = 1`, :math:`p = 2`, :math:`c = 0.499`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Outcome(NamedTuple):
    """What one forward pass gives per example: the loss of its draw and, from the same
    parameters, the exact expected loss (the same for every example: each is one draw)."""

    loss: Tensor
    expected: Tensor


def polynomial_loss(z: Tensor, target: float, power: float) -> Tensor:
    r""":math:`\frac1D \sum_i |z_i - c|^p` over the last axis; ``z`` may be relaxed."""
    return (z - target).abs().pow(power).mean(-1)


def expected_polynomial_loss(probability: Tensor, target: float, power: float) -> Tensor:
    r""":math:`\frac1D \sum_i q_i (1 - c)^p + (1 - q_i) c^p` over the last axis, where
    :math:`q_i` (``probability``) is the probability that :math:`z_i = 1`."""
    one, zero = abs(1.0 - target) ** power, abs(target) ** power
    return (probability * one + (1 - probability) * zero).mean(-1)


class PolynomialProgram(nn.Module):
    r"""The logits :math:`\theta \in \mathbb{R}^{D \times 2}` of ``variables`` binary variables
    and the loss they are judged by (see the module's docstring).

    Initialisation: :math:`\theta \sim U(-s, s)` elementwise (ReinMax: :math:`s = 0.01`), its
    first column shifted by :math:`\operatorname{logit}(q_0)` so that every variable starts
    near :math:`P(z_i = 1) = q_0`; :math:`s = 0` starts exactly there (RELAX's toy: :math:`q_0
    = \tfrac12`). ``forward(x, sample=…)`` draws one outcome of the variables per example of
    ``x`` (its values are not read: an example is one draw) through ``sample`` on the logits
    expanded to ``(len(x), D, 2)``.
    """

    arity = 2

    def __init__(
        self,
        variables: int,
        power: float,
        target: float,
        *,
        initial_probability: float = 0.5,
        init_scale: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.variables, self.power, self.target = variables, float(power), float(target)
        generator = torch.Generator().manual_seed(seed)
        theta = (2 * torch.rand(variables, 2, generator=generator) - 1) * init_scale
        theta[:, 0] += math.log(initial_probability / (1 - initial_probability))
        self.logits = nn.Parameter(theta)

    def probability(self) -> Tensor:
        """:math:`q_i = P(z_i = 1)`, shape ``(D,)``."""
        return torch.softmax(self.logits, -1)[:, 0]

    def expected(self, examples: int) -> Tensor:
        """The exact expected loss, once per example: shape ``(examples,)``."""
        value = expected_polynomial_loss(self.probability(), self.target, self.power)
        return value.expand(examples)

    def forward(self, x: Tensor, *, sample: Callable[..., Tensor]) -> Outcome:
        draws = sample(self.logits.expand(len(x), self.variables, 2))
        z = draws[..., 0]
        return Outcome(polynomial_loss(z, self.target, self.power), self.expected(len(x)))

    def extra_repr(self) -> str:
        return f"variables={self.variables}, power={self.power:g}, target={self.target:g}"
