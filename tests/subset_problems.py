"""k-subset objectives, their exact gradients and independent gradient draws (for the tests of
the k-subset estimators, as tests/draws.py is for the categorical ones)."""

from __future__ import annotations

from collections.abc import Callable

import torch

import gvbench.estimators as E
from gvbench.estimators.subset_law import enumerate_subsets

Loss = Callable[[torch.Tensor], torch.Tensor]


def subset_quadratic(
    n: int, seed: int = 0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Loss:
    """f(z) = (wᵀz − t)² for random weights w and t = 1: the chosen items interact."""
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    return lambda z: (z @ w - 1.0).square()


def subset_interactions(n: int, seed: int = 0) -> Loss:
    """softplus(zᵀWz/3 + cᵀz) + (cᵀz)²/4: neither separable nor quadratic in z."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=generator, dtype=torch.float64) / 2
    c = torch.randn(n, generator=generator, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        linear = z @ c
        quadratic = torch.einsum("...i,ij,...j->...", z, w, z)
        return torch.nn.functional.softplus(quadratic / 3 + linear) + linear**2 / 4

    return f


def subset_objective(logits: torch.Tensor, size: int, f: Loss):
    """The objective of one k-subset per row of ``logits`` (per-example losses)."""
    return lambda sample: f(sample(logits, size))


def subset_gradient_draws(
    estimator: E.Estimator, theta: torch.Tensor, size: int, f: Loss, n_draws: int, seed: int = 0
) -> torch.Tensor:
    """``n_draws`` iid gradient estimates of ∇θ E[f(z)] from one backward pass: row r of an
    (N, …) leaf is draw r."""
    leaf = theta.detach().expand(n_draws, *theta.shape).clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    estimator(subset_objective(leaf, size, f), generator=generator).sum().backward()
    return leaf.grad


def brute_force_gradient(theta: torch.Tensor, size: int, f: Loss) -> torch.Tensor:
    """∇θ Σ_z p_θ(z) f(z) over every k-subset z, written out (no enumerator, no DP)."""
    leaf = theta.detach().clone().requires_grad_()
    rows = enumerate_subsets(theta.shape[-1], size, dtype=theta.dtype)
    weights = torch.softmax(leaf @ rows.T, -1)
    (weights * f(rows)).sum().backward()
    return leaf.grad


def subset_probabilities(theta: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k-subset (rows) and its probability under p_θ(z) ∝ exp(θᵀz)."""
    rows = enumerate_subsets(theta.shape[-1], size, dtype=theta.dtype)
    return rows, torch.softmax(theta @ rows.T, -1)


def two_subsets_problem() -> tuple[torch.Tensor, Loss]:
    """Logits of two k-subset choices of 5 items (2 and 3 chosen) and an f of both together
    with pairwise interactions (:func:`subset_interactions` over the 10 indicators)."""
    theta = torch.tensor([1.2, -0.4, 0.3, -1.5, 0.6], dtype=torch.float64)
    return torch.stack([theta, theta.flip(0) * 0.7]), subset_interactions(10, seed=1)


def two_subsets_objective(leaf: torch.Tensor, f: Loss):
    """Two sampler calls, ``sample(leaf[..., 0, :], 2)`` and ``sample(leaf[..., 1, :], 3)``."""

    def objective(sample):
        return f(torch.cat([sample(leaf[..., 0, :], 2), sample(leaf[..., 1, :], 3)], -1))

    return objective


def two_subsets_exact(theta: torch.Tensor, f: Loss) -> torch.Tensor:
    leaf = theta.detach().clone().requires_grad_()
    E.exact(two_subsets_objective(leaf, f)).sum().backward()
    return leaf.grad


def two_subsets_draws(
    estimator: E.Estimator, theta: torch.Tensor, f: Loss, n_draws: int, seed: int = 0
) -> torch.Tensor:
    leaf = theta.detach().expand(n_draws, *theta.shape).clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    estimator(two_subsets_objective(leaf, f), generator=generator).sum().backward()
    return leaf.grad
