"""ZGR: the author's computation on the same samples, its binary form (DARN(½)), its limit
(GR-MCK at τ → 0, K → ∞) and the paper's claim (unbiased exactly when f is quadratic)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from tests.draws import (
    gradient_draws,
    interaction_draws,
    interaction_exact,
    interaction_problem,
    quadratic,
    quadratic_loss,
)
from tests.stats import Z, as_numpy, assert_within_se

# --- a port of shekhovt/ZGR zgr.py, in torch, fed our samples --------------------------------


def authors_zgr(logits, index):
    """``ZGR(logits)`` with its sample given: y + (dx − sg dx), dx = ½(p + (y − sg p) log p_x)."""
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    p = logp.exp()
    y = torch.nn.functional.one_hot(index, logits.shape[-1]).to(p)
    logpx = logp.gather(-1, index.unsqueeze(-1))
    dx = (p + (y - p.detach()) * logpx) / 2
    return y + (dx - dx.detach())


def authors_zgr_backward(logits, index, upstream):
    """``ZGR_Function.backward``, their equation (50): ½ p ⊙ (J − J_x), minus its sum at x."""
    p = torch.softmax(logits, dim=-1)
    xu = index.unsqueeze(-1)
    grad = (upstream - upstream.gather(-1, xu)) * p / 2
    return grad.scatter_add(-1, xu, -grad.sum(dim=-1, keepdim=True))


def authors_zgr_binary(logit, b):
    """``ZGR_binary`` with its sample given: b + sg(J)(φ − sg φ), J = ½(b(1 − p) + (1 − b)p)."""
    p = torch.sigmoid(logit)
    jacobian = (b * (1 - p) + (1 - b) * p) / 2
    return b + jacobian.detach() * (logit - logit.detach())


def our_draw(logits, upstream, seed, dim=-1):
    """E.zgr's sample and gradient of ⟨y, upstream⟩, and the sample's index (regenerated)."""
    leaf = logits.detach().clone().requires_grad_()
    y = E.zgr(leaf, dim=dim, generator=torch.Generator().manual_seed(seed))
    (y * upstream).sum().backward()
    index = E.categorical_one_hot(logits, dim, torch.Generator().manual_seed(seed)).argmax(dim)
    return y.detach(), leaf.grad, index


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_samples_as_the_authors_code(dtype):
    """Both of the author's forms (surrogate and equation (50)) on our samples: rounding."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(50, 7, 6, generator=g, dtype=torch.float64) * 2).to(dtype)
    upstream = torch.randn(50, 7, 6, generator=g, dtype=torch.float64).to(dtype)
    worst = 0.0
    for seed in range(20):
        y, ours, index = our_draw(logits, upstream, seed)
        leaf = logits.clone().requires_grad_()
        theirs = authors_zgr(leaf, index)
        (theirs * upstream).sum().backward()
        torch.testing.assert_close(y, theirs.detach(), rtol=0, atol=0)
        for reference in (leaf.grad, authors_zgr_backward(logits, index, upstream)):
            worst = max(worst, float((ours - reference).abs().max()))
    # measured: 6.7e-16 in float64, 3.6e-7 in float32 (the two forms' own rounding)
    assert worst <= 8 * torch.finfo(dtype).eps, worst


def test_category_axis_and_masked_categories():
    """Categories along dim = 1: the author's formula with that axis moved last; a -inf
    category gets exactly zero gradient."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    logits[:, 2, 0] = -torch.inf
    upstream = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    _, ours, index = our_draw(logits, upstream, 2, dim=1)
    theirs = authors_zgr_backward(logits.transpose(1, 2), index, upstream.transpose(1, 2))
    torch.testing.assert_close(ours, theirs.transpose(1, 2), rtol=1e-12, atol=1e-15)
    assert torch.isfinite(ours).all() and (ours[:, 2, 0] == 0).all()


def test_float32_is_shift_invariant():
    """Logits 1e4 + N(0, 1) and the same logits less 1e4 give the same sample and gradient."""
    high = (1e4 + torch.randn(100, 20, 10, generator=torch.Generator().manual_seed(0))).float()
    upstream = torch.randn(100, 20, 10, generator=torch.Generator().manual_seed(1))
    y_high, g_high, _ = our_draw(high, upstream, 2)
    y_low, g_low, _ = our_draw(high - 1e4, upstream, 2)  # exact: the differences are kept
    torch.testing.assert_close(y_high, y_low, rtol=0, atol=0)
    torch.testing.assert_close(g_high, g_low, rtol=0, atol=0)


def test_binary_form_is_darn_half_and_half_st_plus_darn():
    """Two categories (0, φ): ∂/∂φ = ½ ∂f/∂b (b(1 − p) + (1 − b)p) = ½(ST + DARN), and the
    author's ``ZGR_binary`` on the same b."""
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(200, generator=g, dtype=torch.float64) * 3
    upstream = torch.randn(200, 2, generator=g, dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(phi), phi], -1)
    _, ours, index = our_draw(logits, upstream, 4)
    b, p, slope = index.double(), torch.sigmoid(phi), upstream[:, 1] - upstream[:, 0]
    darn_half = 0.5 * slope * (b * (1 - p) + (1 - b) * p)
    st = slope * p * (1 - p)
    darn = slope * (b - p) ** 2  # score (b − p) times the Taylor difference f'(b)(b − p)
    leaf = phi.clone().requires_grad_()
    (authors_zgr_binary(leaf, b) * slope).sum().backward()
    for expected in (darn_half, 0.5 * (st + darn), leaf.grad):
        torch.testing.assert_close(ours[:, 1], expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ours[:, 0], -ours[:, 1], rtol=0, atol=1e-15)


def test_gumbel_rao_approaches_zgr_at_low_temperature():
    """GR-MCK at τ = 0.01, K = 1000, minus ZGR on the same sample D (both draw D from the same
    uniforms), is zero in mean within 5 SE for each D. GR-MCK's conditional mean is
    E[ST-GS | D], so this is the τ → 0 limit itself, not only the unconditional mean.

    It can fail: at τ = 0.5 the same check is off by ~130 SE, and straight-through's gradient
    (deterministic given D) differs from ZGR's with no spread at all.
    """
    theta = torch.tensor([0.4, -1.0, 0.9, 0.1], dtype=torch.float64)
    f = quadratic_loss(*quadratic(4))
    n_draws = 2000
    zgr = gradient_draws(E.get("zgr"), theta, f, n_draws, seed=5)
    categories = E.categorical_one_hot(
        theta.expand(n_draws, 4), -1, torch.Generator().manual_seed(5)
    ).argmax(-1)
    assert set(categories.tolist()) == {0, 1, 2, 3}

    def per_sample_check(name, **options):
        draws = gradient_draws(E.get(name, **options), theta, f, n_draws, seed=5)
        for d in range(4):
            difference = (draws - zgr)[categories == d]
            assert_within_se(difference, torch.zeros(4, dtype=torch.float64))

    per_sample_check("gumbel_rao", tau=0.01, k=1000)
    with pytest.raises(AssertionError):
        per_sample_check("gumbel_rao", tau=0.5, k=100)
    with pytest.raises(AssertionError):
        per_sample_check("straight_through")


def _quadratic_problem():
    """3 ternary variables, f = xᵀWx + cᵀx over their flattened one-hot x (W not symmetric,
    so within-variable and cross terms both occur)."""
    theta, _ = interaction_problem(3, 3, seed=0)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(9, 9, generator=g, dtype=torch.float64) / 2
    c = torch.randn(9, generator=g, dtype=torch.float64)

    def f(d):
        x = d.flatten(-2)
        return torch.einsum("...i,ij,...j->...", x, w, x) + x @ c

    return theta, f


def _zgr_mean_by_enumeration(theta, f):
    """Σ_D P(D) ĝ(D) with the author's equation (50): ZGR is a function of D alone."""
    log_p = torch.log_softmax(theta, -1)
    mean = torch.zeros_like(theta)
    for configuration in itertools.product(range(theta.shape[-1]), repeat=theta.shape[0]):
        index = torch.tensor(configuration)
        sample = torch.nn.functional.one_hot(index, theta.shape[-1]).double().requires_grad_()
        (upstream,) = torch.autograd.grad(f(sample), sample)
        weight = log_p.gather(-1, index[:, None]).sum().exp()
        mean += weight * authors_zgr_backward(theta, index, upstream)
    return mean


def test_unbiased_for_a_quadratic_objective():
    """The paper's claim, on interacting variables and two sampler calls: ZGR's draws are within
    5 SE of the exact gradient (enumeration), and its exact mean equals it to rounding.
    Straight-through on the same draws is ~60 SE off (it can fail)."""
    theta, f = _quadratic_problem()
    exact = interaction_exact(theta, f)
    assert_within_se(interaction_draws(E.get("zgr"), theta, f, 20_000, seed=3), exact)
    torch.testing.assert_close(_zgr_mean_by_enumeration(theta, f), exact, rtol=0, atol=1e-14)
    with pytest.raises(AssertionError):
        assert_within_se(interaction_draws(E.get("straight_through"), theta, f, 20_000, 3), exact)


def test_biased_for_a_non_quadratic_objective():
    """On softplus(xᵀWx/3 + cᵀx) + (cᵀx)²/4 the exact mean is 0.0083 off (largest
    coordinate), and the draws' mean is more than 10 SE from the exact gradient."""
    theta, f = interaction_problem(3, 3, seed=0)
    exact = interaction_exact(theta, f)
    bias = _zgr_mean_by_enumeration(theta, f) - exact
    assert float(bias.abs().max()) > 0.005
    draws = as_numpy(interaction_draws(E.get("zgr"), theta, f, 100_000, seed=3))
    se = draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert float((np.abs(draws.mean(0) - as_numpy(exact)) / se).max()) > 2 * Z
