r"""Bernoulli and categorical forms of one sampler.

A Bernoulli with logit :math:`\ell` is the 2-category case with logits :math:`(0, \ell)`: the
Gumbel difference becomes logistic noise. :func:`bernoulli` turns any categorical sampler into
one that takes one logit per variable and returns :math:`b \in \{0, 1\}`;
:func:`categorical_from_bernoulli` goes the other way, so that a binary-only sampler (the FouST
reconstruction) runs on any task with arity-2 variables. This module imports no estimator and
no registry: the registry wraps binary-only samplers with it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gvbench.estimators.validation import refuse_subset_size

__all__ = ["bernoulli", "categorical_from_bernoulli"]


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

    def sample(logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        if logits.shape[dim] != 2:
            raise ValueError(
                f"{getattr(sampler, '__name__', 'this estimator')} is binary-only: logits need "
                f"exactly 2 categories along dim={dim}, got {logits.shape[dim]}"
            )
        first, second = logits.unbind(dim)
        b = sampler(second - first)
        return torch.stack([1 - b, b], dim=dim)

    return sample
