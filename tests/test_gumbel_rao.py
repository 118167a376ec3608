"""Gumbel-Rao: conditional Gumbel sampling and the properties of GR-MCK (spec, Gumbel-Rao)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import gvbench.estimators as E
from tests.draws import gradient_draws, quadratic, quadratic_loss
from tests.stats import Z, as_numpy, trace_variance

# The package re-exports the function under the module's name, so fetch the module itself.
gumbel_rao_module = importlib.import_module("gvbench.estimators.gumbel_rao")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 8),
    batch=st.integers(1, 5),
    k=st.integers(1, 6),
    scale=st.sampled_from([0.1, 1.0, 10.0, 1e3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_conditional_gumbel_has_requested_argmax(n, batch, k, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, n, generator=gen, dtype=torch.float64) * scale
    index = torch.randint(0, n, (batch,), generator=gen)
    z = E.conditional_gumbel(logits, index, k, generator=gen)
    assert z.shape == (k, batch, n)
    assert torch.isfinite(z).all()
    assert (z.argmax(-1) == index).all()
    one_hot = torch.nn.functional.one_hot(index, n).double()
    z_from_one_hot = E.conditional_gumbel(logits, one_hot, k, generator=gen)
    assert (z_from_one_hot.argmax(-1) == index).all()


def test_conditional_gumbel_is_detached_and_dim_aware():
    logits = torch.randn(3, 5, 2, requires_grad=True)
    z = E.conditional_gumbel(logits, torch.tensor([[0, 4], [1, 1], [2, 3]]), 4, dim=1)
    assert z.shape == (4, 3, 5, 2) and not z.requires_grad
    assert (z.argmax(2) == torch.tensor([[0, 4], [1, 1], [2, 3]])).all()


def test_conditional_gumbel_law_matches_rejection_sampling():
    theta = torch.tensor([0.5, -0.3, 1.2, 0.0], dtype=torch.float64)
    d = 1  # a low-probability category: the truncation matters most
    gen = torch.Generator().manual_seed(11)
    candidates = theta + E.gumbel_like(theta.expand(400_000, 4), gen)
    accepted = candidates[candidates.argmax(-1) == d]
    exact = E.conditional_gumbel(theta, torch.tensor(d), 20_000, generator=gen)
    assert len(accepted) > 20_000
    for j in range(4):
        result = stats.ks_2samp(as_numpy(accepted[:, j]), as_numpy(exact[:, j]))
        assert result.pvalue > 1e-4, (j, result)
    # The test can fail: an untruncated draw for the other coordinates has another law.
    wrong = theta + E.gumbel_like(theta.expand(20_000, 4), gen)
    assert stats.ks_2samp(as_numpy(accepted[:, 0]), as_numpy(wrong[:, 0])).pvalue < 1e-6


def test_gr_mc1_has_st_gs_distribution():
    theta = torch.tensor([0.4, -1.0, 0.9, 0.1, -0.3], dtype=torch.float64)
    f = quadratic_loss(*quadratic(5))
    gs = gradient_draws(E.get("st_gumbel_softmax", tau=0.5), theta, f, 20_000, seed=1)
    gr = gradient_draws(E.get("gumbel_rao", tau=0.5, k=1), theta, f, 20_000, seed=2)
    for j in range(5):
        assert stats.ks_2samp(as_numpy(gs[:, j]), as_numpy(gr[:, j])).pvalue > 1e-4
    gr10 = gradient_draws(E.get("gumbel_rao", tau=0.5, k=10), theta, f, 20_000, seed=3)
    assert (
        min(stats.ks_2samp(as_numpy(gs[:, j]), as_numpy(gr10[:, j])).pvalue for j in range(5))
        < 1e-6
    )


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_gr_mck_mean_equals_st_gs_and_variance_falls_with_k(tau):
    theta = torch.tensor([0.4, -1.0, 0.9, 0.1, -0.3], dtype=torch.float64)
    f = quadratic_loss(*quadratic(5))
    n_draws = 20_000
    reference = gradient_draws(E.get("st_gumbel_softmax", tau=tau), theta, f, n_draws, seed=10)
    ref_mean, ref_se = as_numpy(reference).mean(0), as_numpy(reference).std(0, ddof=1)
    previous = trace_variance(reference)
    for i, k in enumerate([1, 10, 100]):
        draws = as_numpy(
            gradient_draws(E.get("gumbel_rao", tau=tau, k=k), theta, f, n_draws, seed=20 + i)
        )
        se = np.sqrt(ref_se**2 / n_draws + draws.var(0, ddof=1) / n_draws)
        assert (np.abs(draws.mean(0) - ref_mean) <= Z * se).all(), (k, draws.mean(0), ref_mean)
        variance = trace_variance(draws)
        # Non-increasing in K: never significantly above the previous K (or ST-GS).
        assert variance[0] <= previous[0] + Z * np.hypot(variance[1], previous[1]), (k, variance)
        previous = variance
    st_gs = trace_variance(reference)
    if tau <= 0.5:  # the reduction is large at low τ: K = 100 must beat ST-GS decisively
        assert previous[0] + Z * np.hypot(previous[1], st_gs[1]) < st_gs[0]


def _replay_gumbel_rao(theta, tau, k, seed, upstream):
    """GR-MCK's gradient computed by hand from the same noise: (1/τ)(diag s̄ − mean s sᵀ)ᵀ u."""
    gen = torch.Generator().manual_seed(seed)
    sample = E.categorical_one_hot(theta, -1, gen)
    z = E.conditional_gumbel(theta, sample, k, generator=gen)
    s = torch.softmax(z / tau, -1)
    jacobian = (torch.diag_embed(s) - s[..., :, None] * s[..., None, :]).mean(0) / tau
    return sample, (jacobian.transpose(-1, -2) @ upstream[..., None]).squeeze(-1)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("k", [1, 3, 50, 700])  # 700 draws span several chunks
def test_gumbel_rao_gradient_equals_replayed_formula(k, tau, monkeypatch):
    """For the same noise, the backward equals the logaddexp race's formula to 1e-12 (float64)."""
    monkeypatch.setattr(gumbel_rao_module, "CHUNK_ELEMENTS", 1000)
    theta = torch.tensor([[0.3, -0.2, 1.0, 0.5], [2.0, 0.0, -1.0, 0.1]], dtype=torch.float64)
    upstream = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.2, 0.4, -1.0, 2.0]], dtype=torch.float64)
    leaf = theta.clone().requires_grad_()
    y = E.gumbel_rao(leaf, tau, k=k, generator=torch.Generator().manual_seed(4))
    (y * upstream).sum().backward()
    sample, expected = _replay_gumbel_rao(theta, tau, k, 4, upstream)
    torch.testing.assert_close(y.detach(), sample, rtol=0, atol=0)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-12 * expected.abs().max())


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_float32_is_shift_invariant(tau):
    """Logits 1e4 + N(0, 1) and the same logits less 1e4 give the same sample and gradient."""
    noise = torch.randn(100, 20, 10, generator=torch.Generator().manual_seed(0))
    high = (1e4 + noise).float()
    low = high - 1e4  # exact: the differences between the logits are the same
    upstream = torch.randn(100, 20, 10, generator=torch.Generator().manual_seed(1))

    def run(logits):
        leaf = logits.clone().requires_grad_()
        y = E.gumbel_rao(leaf, tau, k=100, generator=torch.Generator().manual_seed(2))
        (y * upstream).sum().backward()
        return y.detach(), leaf.grad

    (y_high, g_high), (y_low, g_low) = run(high), run(low)
    torch.testing.assert_close(y_high, y_low, rtol=0, atol=0)
    assert float((g_high - g_low).abs().max() / g_low.abs().max()) <= 2e-5


def test_float32_above_unit_temperature_keeps_categories_below_float32_range():
    """At τ > 1 a category 100 nats below the rest still carries weight (p underflows in float32).

    float32 logits are then computed in float64, from the same uniforms as float64 logits.
    """
    theta = torch.tensor([[0.0, 0.5, -100.0], [1.0, -100.0, 0.0]], dtype=torch.float64)
    upstream = torch.tensor([[1.0, 2.0, -3.0], [0.5, 4.0, -1.0]], dtype=torch.float64)

    def run(dtype):
        leaf = theta.to(dtype).requires_grad_()
        y = E.gumbel_rao(leaf, 10.0, k=50, generator=torch.Generator().manual_seed(5))
        (y * upstream.to(dtype)).sum().backward()
        return leaf.grad.double()

    exact32, exact64 = run(torch.float32), run(torch.float64)
    # ~e^{-100/τ}·… ≈ 1e-5 at τ = 10: far above float32 resolution, lost if p₃ underflowed.
    assert float(exact64[0, 2].abs()) > 1e-6
    torch.testing.assert_close(exact32, exact64, rtol=1e-6, atol=1e-9)


def test_forward_alone_draws_only_the_sample():
    """The K conditional draws wait for the backward pass: a forward pass costs one sample."""
    logits = torch.randn(4, 6, dtype=torch.float64)
    after_gr, after_sample = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    y = E.gumbel_rao(logits, 0.5, k=1000, generator=after_gr)
    d = E.categorical_one_hot(logits, -1, after_sample)
    torch.testing.assert_close(y, d, rtol=0, atol=0)
    assert torch.equal(after_gr.get_state(), after_sample.get_state())


def test_noise_is_not_differentiated_through():
    """Differentiating through the conditional sampler (a public bug) gives another gradient."""
    theta = torch.tensor([0.3, -0.2, 1.0, 0.5], dtype=torch.float64)
    upstream = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    leaf = theta.clone().requires_grad_()
    gen = torch.Generator().manual_seed(8)
    sample = E.categorical_one_hot(theta, -1, gen)
    # The wrong construction: z as a differentiable function of θ (no stop-gradient).
    e = torch.empty(5, 4, dtype=torch.float64).exponential_(generator=gen)
    d = int(sample.argmax())
    top = torch.logsumexp(leaf, -1) - e[:, d].log()
    z = -torch.logaddexp(-top[:, None], e.log() - leaf)
    z = torch.cat([z[:, :d], top[:, None], z[:, d + 1 :]], -1)
    (torch.softmax(z / 0.3, -1).mean(0) * upstream).sum().backward()
    _, right = _replay_gumbel_rao(theta, 0.3, 5, 8, upstream)
    assert not torch.allclose(leaf.grad, right, atol=1e-3)


def test_chunked_forward_matches_single_chunk(monkeypatch):
    theta = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def grad_with_chunk(elements):
        monkeypatch.setattr(gumbel_rao_module, "CHUNK_ELEMENTS", elements)
        leaf = theta.clone().requires_grad_()
        (
            E.gumbel_rao(leaf, 0.2, k=40, generator=torch.Generator().manual_seed(3)) * upstream
        ).sum().backward()
        return leaf.grad

    # Chunks draw the same noise stream in the same order, so results agree to rounding.
    torch.testing.assert_close(
        grad_with_chunk(30), grad_with_chunk(1 << 21), rtol=1e-10, atol=1e-12
    )
