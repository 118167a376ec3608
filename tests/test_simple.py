"""SIMPLE: the authors' sampler and marginals on the same uniforms, and the paper's claim at
k = 1 (lower bias and lower variance than ST-GS) against enumeration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from gvbench.estimators.subset_law import subset_marginals
from tests.stats import assert_variance_not_above, variance_excess

# --- a port of UCLA-StarAI/SIMPLE L2X/L2X-SIMPLE.py (the paper's k-subset layer, TensorFlow),
# in torch and float64, fed our uniforms ----------------------------------------------------

NEAR_ZERO = -300.0  # the authors' log 0


def authors_logaddexp(x1, x2):
    delta = torch.where(x1 == x2, torch.zeros_like(x1), x1 - x2)
    return torch.maximum(x1, x2) + torch.nn.functional.softplus(-delta.abs())


def authors_log1mexp(x):
    """tfp.math.log1mexp: log(1 − exp(−|x|))."""
    x = -x.abs()
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-x.exp()))


def authors_log_sigmoid(logits):
    return torch.log(torch.sigmoid(logits)).clamp(max=-1e-7)


def authors_table(logp, logq, k):
    """``log_pr_exactly_k``: a[:, i, c] = log P(c − 1 of the first i items), (B, n + 1, k + 2)."""
    batch, n = logp.shape
    state = torch.full((batch, k + 2), NEAR_ZERO, dtype=logp.dtype)
    state[:, 1] = 0
    rows = [state]
    for i in range(1, n + 1):
        step = authors_logaddexp(
            state[:, :-1] + logp[:, i - 1 : i], state[:, 1:] + logq[:, i - 1 : i]
        )
        state = torch.cat([torch.full((batch, 1), NEAR_ZERO, dtype=logp.dtype), step], 1)
        rows.append(state)
    return torch.stack(rows, 1)


def authors_marginals(theta, k):
    """``marginals``: ∂ log P(k of n)/∂ log p, log q held fixed (their inner tape watches log p
    only), differentiable in θ (their outer tape)."""
    log_p = authors_log_sigmoid(theta)
    log_q = authors_log1mexp(log_p)
    watched = log_p * 1.0  # the inner tape's variable: log q does not depend on it
    log_pr = authors_table(watched, log_q, k)[:, -1, k + 1]
    (grad,) = torch.autograd.grad(log_pr.sum(), watched, create_graph=True)
    return grad


def authors_sample(theta, k, u):
    """``sample(a, logp)``: items from the last to the first, X ~ Bernoulli(logits = p − q),
    item i taken where its uniform u[:, i] < sigmoid(p − q) (as tfp's Bernoulli samples)."""
    logp = authors_log_sigmoid(theta)
    a = authors_table(logp, authors_log1mexp(logp), k)
    batch, n = theta.shape
    j = torch.full((batch,), k + 1, dtype=torch.long)
    rows = torch.arange(batch)
    taken = torch.zeros_like(theta)
    for i in range(n, 0, -1):
        p = a[rows, i - 1, j - 1] + logp[:, i - 1] - a[rows, i, j]
        x = u[:, i - 1] < torch.sigmoid(p - authors_log1mexp(p))
        taken[:, i - 1] = x.to(theta.dtype)
        j = torch.where(x, j - 1, j)
    return taken


def test_sampler_and_gradient_are_the_authors_on_the_same_uniforms():
    """The sample: gvbench goes from the first item with the suffix tables, the authors from
    the last with the prefix tables; on the reversed items and uniforms they make the same
    choices. The gradient: the VJP through the marginals (measured: 0 sample mismatches in
    2000 rows; largest gradient difference 2.1e-15, marginals 2.9e-15)."""
    n, k, rows = 7, 3, 2000
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(rows, n, dtype=torch.float64, generator=generator) * 1.5
    weight = torch.randn(rows, n, dtype=torch.float64, generator=generator)
    reversed_leaf = theta.flip(-1).clone().requires_grad_()
    ours = E.simple(reversed_leaf, k, generator=torch.Generator().manual_seed(1))
    (ours * weight.flip(-1)).sum().backward()
    u = torch.rand(rows, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    leaf = theta.clone().requires_grad_()
    marginals = authors_marginals(leaf, k)
    sample = authors_sample(theta, k, u.flip(-1))
    theirs = (sample - marginals).detach() + marginals
    (theirs * weight).sum().backward()

    assert torch.equal(ours.detach().flip(-1), sample)
    assert (sample.sum(-1) == k).all()
    marginal_gap = (subset_marginals(theta, k) - marginals).abs().max()
    gradient_gap = (reversed_leaf.grad.flip(-1) - leaf.grad).abs().max()
    assert marginal_gap < 1e-13 and gradient_gap < 1e-13  # measured 2.9e-15 and 2.1e-15
    assert leaf.grad.abs().max() > 0.1  # a gradient, not zeros on both sides


def test_exact_for_a_linear_objective():
    """∂μ/∂θ · c is the gradient of cᵀμ = E[cᵀz]: every draw is the exact gradient."""
    theta = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    c = torch.linspace(-1, 2, 6, dtype=torch.float64)
    exact_leaf = theta.clone().requires_grad_()
    (subset_marginals(exact_leaf, 2) @ c).sum().backward()
    for seed in range(5):
        leaf = theta.clone().requires_grad_()
        (E.simple(leaf, 2, generator=torch.Generator().manual_seed(seed)) @ c).sum().backward()
        torch.testing.assert_close(leaf.grad, exact_leaf.grad, rtol=0, atol=1e-14)


def test_one_item_is_straight_through_with_the_softmax_jacobian():
    """At k = 1 the marginals are softmax(θ): SIMPLE's backward is ST's (Bengio et al.)."""
    theta = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    leaf = theta.clone().requires_grad_()
    sample = E.simple(leaf, 1, generator=torch.Generator().manual_seed(4))
    upstream = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (sample * upstream).sum().backward()
    p = torch.softmax(theta, -1)
    expected = p * (upstream - (p * upstream).sum(-1, keepdim=True))
    torch.testing.assert_close(leaf.grad, expected, rtol=0, atol=1e-15)
    assert ((sample == 0) | (sample == 1)).all() and (sample.sum(-1) == 1).all()


# --- the paper's claim at k = 1 (its tractable_dist/k-subset-k=1 notebook): n = 10 items,
# θ ~ N(0, 1), f(z) = Σ(z − b)² with b = |N(0, 1)|, against ST-GS at τ = 1 ------------------

DRAWS = 20_000


def claim_problem():
    generator = torch.Generator().manual_seed(1234)
    theta = torch.randn(10, dtype=torch.float64, generator=generator)
    b = torch.randn(10, dtype=torch.float64, generator=generator).abs()
    return theta, lambda z: ((z - b) ** 2).sum(-1)


def one_hot_draws(estimator, theta, f, seed, size=None):
    """``DRAWS`` iid gradient draws, each row of the leaf its own copy of θ."""
    leaf = theta.expand(DRAWS, -1).clone().requires_grad_()
    generator = torch.Generator().manual_seed(seed)

    def objective(sample):
        return f(sample(leaf) if size is None else sample(leaf, size))

    estimator(objective, generator=generator).sum().backward()
    return leaf.grad


def bias2(draws, exact):
    """‖ḡ − g‖² less its noise tr Σ/N (unbiased for the squared bias), and its SE."""
    d = draws.numpy()
    gap = d.mean(0) - exact.numpy()
    covariance = np.cov(d, rowvar=False)
    value = gap @ gap - np.trace(covariance) / len(d)
    return float(value), float(np.sqrt(4 * gap @ covariance @ gap / len(d)))


def test_lower_bias_and_lower_variance_than_st_gumbel_softmax_at_one_item():
    """Measured: bias² 0.0400 ± 0.0008 (SIMPLE) against 0.0891 ± 0.0011 (ST-GS), 36 SE apart;
    trace variance 0.0998 ± 0.0001 against 0.260 ± 0.002, 78 SE apart."""
    theta, f = claim_problem()
    leaf = theta[None].clone().requires_grad_()
    E.exact(lambda sample: f(sample(leaf))).sum().backward()
    exact = leaf.grad[0]
    simple = one_hot_draws(E.get("simple"), theta, f, seed=1, size=1)
    st_gs = one_hot_draws(E.get("st_gumbel_softmax", tau=1.0), theta, f, seed=2)

    (b_simple, se_simple), (b_st, se_st) = bias2(simple, exact), bias2(st_gs, exact)
    assert b_simple > 10 * se_simple  # SIMPLE is biased at k = 1 ...
    assert (b_st - b_simple) / np.hypot(se_simple, se_st) > 5  # ... less than ST-GS
    assert assert_variance_not_above(simple, st_gs) < -5
    # the comparison can fail: the other way round it does
    with pytest.raises(AssertionError, match="above the baseline"):
        assert_variance_not_above(st_gs, simple)
    assert variance_excess(st_gs, simple)[1] > 5
