r"""Binary variables: Bernoulli forms of the categorical estimators, and FouST.

A Bernoulli with logit :math:`\ell` is the 2-category case with logits :math:`(0, \ell)`: the
Gumbel difference becomes logistic noise. :func:`bernoulli` turns any categorical sampler into
one that takes one logit per variable and returns :math:`b \in \{0, 1\}`;
:func:`categorical_from_bernoulli` goes the other way for binary-only estimators (FouST) so
that they run on any task with arity-2 variables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import replace_gradient, uniform_like
from gvbench.estimators.validation import check_real


def bernoulli(sampler: Callable[..., Tensor]) -> Callable[..., Tensor]:
    r"""A Bernoulli form of a categorical sampler: ``logit`` (any shape) → :math:`b \in \{0,1\}`.

    ``bernoulli(gumbel_rao)(logit, tau=0.5, k=10)`` samples :math:`b \sim \mathrm{Bernoulli}(\sigma(\ell))`
    through the categorical estimator on logits :math:`(0, \ell)`; the gradient reaches
    :math:`\ell` through the second logit.
    """

    def sample(logit: Tensor, *args: object, **kwargs: object) -> Tensor:
        if not isinstance(logit, Tensor) or not logit.is_floating_point():
            raise ValueError("logit must be a floating-point torch.Tensor")
        if "dim" in kwargs:
            raise ValueError("a Bernoulli sampler takes no dim: every element is one variable")
        logits = torch.stack([torch.zeros_like(logit), logit], dim=-1)
        return sampler(logits, *args, **kwargs)[..., 1]

    sample.__name__ = f"bernoulli_{getattr(sampler, '__name__', 'sampler')}"
    sample.__doc__ = f"Bernoulli form of {getattr(sampler, '__name__', 'a sampler')}."
    return sample


def categorical_from_bernoulli(sampler: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A categorical sampler over exactly 2 categories from a Bernoulli one (logit = θ₁ − θ₀)."""

    def sample(logits: Tensor, *, dim: int = -1) -> Tensor:
        if logits.shape[dim] != 2:
            raise ValueError(
                f"{getattr(sampler, '__name__', 'this estimator')} is binary-only: logits need "
                f"exactly 2 categories along dim={dim}, got {logits.shape[dim]}"
            )
        first, second = logits.unbind(dim)
        b = sampler(second - first)
        return torch.stack([1 - b, b], dim=dim)

    return sample


def _check_logit(logit: Tensor) -> None:
    if not isinstance(logit, Tensor) or not logit.is_floating_point():
        raise ValueError("logit must be a floating-point torch.Tensor")
    if logit.numel() and not bool(torch.isfinite(logit).all()):
        raise ValueError("logit must be finite (no NaN or ±inf)")


@register(unbiased=False, relaxed=True, binary_only=True, label="FouST")
def foust(
    logit: Tensor,
    *,
    uniform_low: float = 0.0,
    importance_weights: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""FouST for Bernoulli variables (Pervez, Cohen & Gavves 2020, ICML).

    Approximates: :math:`\nabla_\ell \mathbb{E}[f(b)]`, :math:`b \sim \mathrm{Bernoulli}(p)`,
    :math:`p = \sigma(\ell)`, whose exact value is :math:`p(1-p)\,(f(1) - f(0))` coordinate-wise.
    The straight-through gradient :math:`p(1-p) f'(b)` is biased by every Fourier/Taylor term
    of :math:`f` above degree one. FouST lowers that bias with two of the paper's steps:

    - *Bernoulli splitting uniform* (discounting Taylor coefficients): the derivative is taken
      not at :math:`b` but at :math:`t = \tfrac12 + (b - \tfrac12)u`, :math:`u \sim U[a, 1]`
      (``uniform_low`` = :math:`a`), a point in :math:`b`'s half of :math:`[0, 1]`;
      :math:`a = 1` gives back ST.
    - *importance weighting* to the symmetric point :math:`p = \tfrac12`: the gradient is scaled
      by :math:`w(b) = 1/(2 q(b))`, :math:`q(1) = p`, :math:`q(0) = 1-p`.

    With both on (:math:`a = 0`), :math:`\mathbb{E}[w(b)\,f'(t)] = f(1) - f(0)` for every
    coordinate along which :math:`f` is separable, so the estimator is unbiased for such
    :math:`f` and its remaining bias comes only from interactions between variables.
    Forward value: :math:`t` (relaxed: :math:`f` must accept values in :math:`[0, 1]`;
    :math:`t` rounds to :math:`b`). Gradient: :math:`w(b)\,p(1-p)\,\partial f/\partial t`.

    The paper's third step (variance reduction by scaling the representation) and its
    hyper-parameter schedule are not reproduced; this is a reconstruction from the bias
    analysis, not a transcription of the authors' code (none was released).
    """
    _check_logit(logit)
    a = check_real(uniform_low, "uniform_low")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"uniform_low must lie in [0, 1], got {uniform_low!r}")
    p = torch.sigmoid(logit)
    b = (uniform_like(logit.shape, logit, generator) < p.detach()).to(logit.dtype)
    u = a + (1 - a) * uniform_like(logit.shape, logit, generator).to(logit.dtype)
    t = 0.5 + (b - 0.5) * u
    if importance_weights:
        q = torch.where(b > 0, p, 1 - p).detach()
        weight = 0.5 / q
    else:
        weight = torch.ones_like(p)
    return replace_gradient(t, weight * p)
