r"""DARN: the score function with a first-order Taylor baseline (Gregor, Danihelka, Mnih,
Blundell & Wierstra 2014, ICML, "Deep AutoRegressive Networks"), Bernoulli variables.

The score function of :math:`b \sim \mathrm{Bern}(p)`, :math:`p = \sigma(\varphi)`, is
:math:`(f(b) - c)(b - p)`. DARN takes the baseline :math:`c = f(\xi) + f'(b)(\xi - b)`, the
first-order Taylor expansion of :math:`f` around the sample evaluated at :math:`\xi = \tfrac12`,
and drops the term that would correct it: the estimate needs :math:`\partial f/\partial b` at
the sample and one run of the objective, and is biased.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import replace_gradient, uniform_like
from gvbench.estimators.validation import check_bernoulli_logit

__all__ = ["darn"]


@register(unbiased=False, binary_only=True, label="DARN")
def darn(logit: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    r"""DARN (Gregor et al. 2014), Bernoulli variables: a sampler, biased.

    Approximates: :math:`\nabla_\varphi \mathbb{E}[f(b)]`, :math:`b \sim \mathrm{Bern}(\sigma(\varphi))`.
    With: forward :math:`b = \mathbb{1}[u < p]`, :math:`u \sim U(0, 1)`; gradient

    .. math::
        \hat g = \frac{\partial f}{\partial b}\,(b - \tfrac12)(b - p)
        = \frac{\partial f}{\partial b}\,\frac{p(1 - p)}{2\,q(b)},\qquad
        q(1) = p,\ q(0) = 1 - p,

    straight-through's :math:`p(1-p)\,\partial f/\partial b` weighted by :math:`1/(2q(b))`.
    Exact in expectation for every :math:`f` that is a polynomial of degree at most two in
    :math:`b` (the Taylor step is then exact on :math:`\{0, 1\}`), biased beyond it: on
    :math:`f = b^3` (:math:`= b` on :math:`\{0, 1\}`) its mean is :math:`\tfrac32 p(1 - p)`.
    Shekhovtsov (2023) writes it as ``ZGR_binary`` ("DARN(1/2)"): for one Bernoulli variable
    ZGR's gradient is DARN's. One run of the objective; ``logit`` of any shape, one variable
    per element.
    """
    check_bernoulli_logit(logit)
    p = torch.sigmoid(logit)
    b = (uniform_like(logit.shape, logit, generator) < p.detach()).to(logit.dtype)
    q = torch.where(b > 0, p, 1 - p).detach()
    return replace_gradient(b, (0.5 / q) * p)
