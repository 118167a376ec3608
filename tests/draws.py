"""Independent gradient draws of one estimator on a single-categorical objective."""

from __future__ import annotations

from collections.abc import Callable

import torch

import gvbench.estimators as E


def quadratic(n: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's toy: Q_ij = exp(−2|i − j|) and a non-uniform centre c (so f is not constant)."""
    idx = torch.arange(n, dtype=dtype)
    q = torch.exp(-2 * (idx[:, None] - idx[None, :]).abs())
    c = torch.linspace(0.1, 0.6, n, dtype=dtype)
    return q, c


def quadratic_loss(q: torch.Tensor, c: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(d: torch.Tensor) -> torch.Tensor:
        x = d - c
        return torch.einsum("...i,ij,...j->...", x, q, x)

    return f


def gradient_draws(
    estimator: E.Estimator,
    theta: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    n_draws: int,
    seed: int = 0,
) -> torch.Tensor:
    """``n_draws`` iid gradient estimates of ∇θ E[f(D)] from one backward pass.

    Each row of an (N, n) leaf is its own copy of θ with its own sample, so row r of the
    gradient is draw r.
    """
    leaf = theta.detach().expand(n_draws, *theta.shape).clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    estimator(lambda sample: f(sample(leaf)), generator=generator).sum().backward()
    return leaf.grad


def exact_gradient(theta: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    leaf = theta.detach().clone().requires_grad_()
    E.exact(lambda sample: f(sample(leaf))).sum().backward()
    return leaf.grad
