"""CARMS keeps the importance weights of the probabilities it last saw: a sweep cell's draws
(fixed parameters) compute them once, and a kept draw is bit for bit a fresh one."""

from __future__ import annotations

import torch

import gvbench.estimators as E
from gvbench.estimators import copula


def objective_of(theta: torch.Tensor):
    target = torch.linspace(-1, 1, theta.shape[-1], dtype=theta.dtype)

    def objective(sample):
        return ((sample(theta) - target) ** 2).sum((-2, -1))

    return objective


def gradient(theta: torch.Tensor, seed: int) -> torch.Tensor:
    theta = theta.detach().requires_grad_()
    generator = torch.Generator().manual_seed(seed)
    E.get("carms", k=5)(objective_of(theta), generator=generator).sum().backward()
    return theta.grad


def test_a_draw_with_kept_weights_is_a_fresh_draw_bit_for_bit(monkeypatch):
    theta = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fresh = []
    for seed in (1, 2, 3):
        copula._kept.clear()
        fresh.append(gradient(theta, seed))
    computed = []
    real = copula.carms_weights
    monkeypatch.setattr(
        copula, "carms_weights", lambda p, k: computed.append(p.shape) or real(p, k)
    )
    kept = [gradient(theta, seed) for seed in (1, 2, 3)]
    assert computed == []  # the weights of these probabilities were kept
    for a, b in zip(fresh, kept, strict=True):
        assert torch.equal(a, b)
    copula._kept.clear()
    assert torch.equal(gradient(theta, 3), fresh[2]) and computed == [(3, 4, 6)]
    gradient(theta + 1.0, 3)  # other probabilities: computed, and kept beside the first
    assert len(computed) == 2 and len(copula._kept) == 2


def test_no_more_than_a_few_weights_are_kept():
    copula._kept.clear()
    for shift in range(copula.KEPT_WEIGHTS + 3):
        gradient(shift * torch.linspace(0, 1, 3, dtype=torch.float64).expand(2, 1, 3), 0)
    assert len(copula._kept) == copula.KEPT_WEIGHTS
