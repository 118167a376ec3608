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


def _draws(estimator, theta, n_draws, seed, objective_of):
    """Row r of the gradient w.r.t. an (N, …) leaf, each row its own copy of θ with its own
    sample, is draw r: N iid draws from one backward pass."""
    leaf = theta.detach().expand(n_draws, *theta.shape).clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    estimator(objective_of(leaf), generator=generator).sum().backward()
    return leaf.grad


def gradient_draws(
    estimator: E.Estimator,
    theta: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    n_draws: int,
    seed: int = 0,
) -> torch.Tensor:
    """``n_draws`` iid gradient estimates of ∇θ E[f(D)] from one backward pass."""
    return _draws(estimator, theta, n_draws, seed, lambda leaf: lambda sample: f(sample(leaf)))


def single_draw(estimator, theta, f, seed, **options) -> torch.Tensor:
    """One gradient draw of ``estimator`` (a function such as ``E.carms``) on f(sample(θ)),
    from ``torch.Generator().manual_seed(seed)``: what a same-noise comparison regenerates."""
    leaf = theta.detach().clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    estimator(lambda sample: f(sample(leaf)), generator=generator, **options).backward()
    return leaf.grad


def exact_gradient(theta: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    leaf = theta.detach().clone().requires_grad_()
    E.exact(lambda sample: f(sample(leaf))).sum().backward()
    return leaf.grad


def interaction_problem(
    arity: int, variables: int, seed: int = 0
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Logits (variables, arity) and an f of their one-hot samples with pairwise interactions:
    softplus(xᵀWx/3 + cᵀx) + (cᵀx)²/4 over the flattened one-hot x (not separable, not
    linear, so no estimator is exact on it by accident)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(variables, arity, generator=g, dtype=torch.float64)
    size = variables * arity
    w = torch.randn(size, size, generator=g, dtype=torch.float64) / 2
    c = torch.randn(size, generator=g, dtype=torch.float64)

    def f(d: torch.Tensor) -> torch.Tensor:
        x = d.flatten(-2)
        linear = x @ c
        quadratic = torch.einsum("...i,ij,...j->...", x, w, x)
        return torch.nn.functional.softplus(quadratic / 3 + linear) + linear**2 / 4

    return theta, f


def two_call_objective(leaf: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]):
    """The first variable from one sampler call, the rest from a second: estimators must
    handle several calls per example."""

    def objective(sample):
        return f(torch.cat([sample(leaf[..., :1, :]), sample(leaf[..., 1:, :])], -2))

    return objective


def interaction_draws(
    estimator: E.Estimator,
    theta: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    n_draws: int,
    seed: int = 0,
) -> torch.Tensor:
    """``n_draws`` iid gradient estimates on an :func:`interaction_problem`, (N, variables, arity)."""
    return _draws(estimator, theta, n_draws, seed, lambda leaf: two_call_objective(leaf, f))


def interaction_exact(
    theta: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    leaf = theta.detach().clone()[None].requires_grad_()
    E.exact(two_call_objective(leaf, f)).sum().backward()
    return leaf.grad[0]


def adapted(
    estimator: E.Estimator,
    theta: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    seed: int = 10_000,
) -> E.Estimator:
    """The estimator after ``steps`` calls on 16 draws each (its state's own update rule),
    frozen there so that its draws are i.i.d."""
    for step in range(steps):
        interaction_draws(estimator, theta, f, 16, seed + step)
    return estimator.freeze()
