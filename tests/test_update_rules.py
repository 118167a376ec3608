"""ReinMax, GST-1.0 and GST-p against their published update rules, computed by hand at fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gvbench.estimators as E

THETA = np.array([0.5, -0.3, 1.2, 0.9])
UPSTREAM = np.array([1.0, -2.0, 0.5, 3.0])


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def softmax_jacobian(s):
    return np.diag(s) - np.outer(s, s)


def run(function, seed, **options):
    leaf = torch.tensor(THETA, requires_grad=True)
    y = function(leaf, generator=torch.Generator().manual_seed(seed), **options)
    (y * torch.tensor(UPSTREAM)).sum().backward()
    return y.detach().numpy(), leaf.grad.numpy()


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("seed", range(6))
def test_reinmax_update_rule(tau, seed):
    d, grad = run(E.reinmax, seed, tau=tau)
    p = softmax(THETA)
    pi1 = 0.5 * (d + softmax(THETA / tau))
    # Liu et al. 2023, Algorithm 2: ∇ = [2 ∂π₁/∂θ − ½ ∂π₀/∂θ]ᵀ u with ∂π₁/∂θ the softmax
    # Jacobian at π₁ (π₁ is re-expressed as softmax(sg(log π₁ − θ) + θ)).
    expected = (2 * softmax_jacobian(pi1) - 0.5 * softmax_jacobian(p)).T @ UPSTREAM
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_reinmax_on_a_hand_worked_case():
    # θ = (0, 0), τ = 1, D = e₀: π₀ = (½, ½), π₁ = (¾, ¼);
    # ∇ = [2·(3/16)·[[1,−1],[−1,1]] − ½·(¼)·[[1,−1],[−1,1]]] u = (3/8 − 1/8)(u₀ − u₁)(1, −1).
    for seed in range(20):
        leaf = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        y = E.reinmax(leaf, generator=torch.Generator().manual_seed(seed))
        if y[0] == 1:
            break
    (y * torch.tensor([3.0, 1.0], dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), [0.25 * 2, -0.25 * 2], rtol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 0.3])
@pytest.mark.parametrize("seed", range(8))
def test_gapped_straight_through_update_rule(tau, seed):
    d, grad = run(E.gapped_straight_through, seed, tau=tau)
    sampled = int(d.argmax())
    mode = THETA.max()
    shifted = np.minimum(THETA, mode - 1.0)  # others at least `gap` below the mode
    shifted[sampled] = mode  # the sampled logit raised to the mode's
    assert (np.delete(shifted, sampled) <= shifted[sampled] - 1.0 + 1e-12).all()
    expected = softmax_jacobian(softmax(shifted / tau)).T @ UPSTREAM / tau
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


def test_gapped_straight_through_on_a_hand_worked_case():
    # θ = (0, 2, 1.5), D = e₀, gap 1: θ' = (2, 1, 1) before centring; τ = 1.
    theta = torch.tensor([0.0, 2.0, 1.5], dtype=torch.float64)
    for seed in range(200):
        leaf = theta.clone().requires_grad_()
        y = E.gapped_straight_through(leaf, generator=torch.Generator().manual_seed(seed))
        if y[0] == 1:
            break
    else:
        pytest.fail("no seed sampled category 0")
    (y * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)).sum().backward()
    e2, e1 = np.exp(2.0), np.exp(1.0)
    s0 = e2 / (e2 + 2 * e1)
    np.testing.assert_allclose(
        leaf.grad.numpy(), [s0 * (1 - s0), -s0 * (1 - s0) / 2, -s0 * (1 - s0) / 2]
    )


def gst_p_gap(theta, sampled):
    """Fan et al. 2022, GST-p: gap = -log(1 - π_d)/π_d."""
    pi = softmax(theta)[sampled]
    return -np.log1p(-pi) / pi


@pytest.mark.parametrize("tau", [1.0, 0.3])
@pytest.mark.parametrize("seed", range(8))
def test_gapped_straight_through_p_update_rule(tau, seed):
    d, grad = run(E.gapped_straight_through_p, seed, tau=tau)
    sampled = int(d.argmax())
    gap = gst_p_gap(THETA, sampled)
    assert gap > 1.0
    mode = THETA.max()
    shifted = np.minimum(THETA, mode - gap)
    shifted[sampled] = mode
    expected = softmax_jacobian(softmax(shifted / tau)).T @ UPSTREAM / tau
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probability_gap_over_the_whole_range_of_pi(dtype):
    from gvbench.estimators.straight_through import _probability_gap

    # Two categories, θ = (0, -x): π_0 = σ(x), π_1 = σ(-x), from 1e-30 to 1 - 1e-30.
    x = np.linspace(-69.0, 69.0, 277)
    theta = torch.tensor(np.stack([np.zeros_like(x), -x], -1), dtype=dtype)
    for category in (0, 1):
        sample = torch.nn.functional.one_hot(torch.full(x.shape, category), 2).to(dtype)
        gap = _probability_gap(theta, sample, -1).squeeze(-1).double().numpy()
        z = x if category == 0 else -x  # logit of the sampled category against the other
        pi = np.exp(-np.logaddexp(0.0, -z))
        expected = np.logaddexp(0.0, z) / pi  # -log(1 - π)/π from log-sigmoids, no cancellation
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(gap, expected, rtol=rtol)
        assert (gap >= 1.0).all()


def test_gapped_straight_through_p_gap_where_one_minus_pi_rounds_to_zero():
    # π_d = 1 - e^-50 rounds to 1; the gap is -log(1 - π_d) ≈ 50, taken from logsumexp.
    theta = np.array([50.0, 0.0, -np.inf])
    leaf = torch.tensor(theta, requires_grad=True)
    y = E.gapped_straight_through_p(leaf, tau=10.0, generator=torch.Generator().manual_seed(0))
    assert y[0] == 1
    (y * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).sum().backward()
    shifted = np.array([50.0, 0.0 - max(0.0, 0.0 - 50.0 + 50.0), -np.inf])
    s = softmax(shifted / 10.0)
    expected = (np.diag(s) - np.outer(s, s))[:, 1] / 10.0
    assert np.isfinite(leaf.grad.numpy()).all()
    np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-9, atol=1e-300)


def test_gapped_straight_through_p_with_a_single_possible_category():
    leaf = torch.tensor([0.0, -np.inf, -np.inf], dtype=torch.float64, requires_grad=True)
    y = E.gapped_straight_through_p(leaf, generator=torch.Generator().manual_seed(0))
    (y * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
    assert y.tolist() == [1.0, 0.0, 0.0]
    assert torch.isfinite(leaf.grad).all()
