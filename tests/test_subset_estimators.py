"""The k-subset estimators: the law each one samples, the bias of the Gumbel top-k ones, and
the relaxation against the authors' code (the unbiased ones meet the exact gradient in
tests/test_registry_contract.py and, on interacting subsets, in tests/test_interactions.py).

Gumbel top-k samples k items without replacement (the Plackett-Luce law of an unordered set),
which is not the exponential-family k-subset law p_θ(z) ∝ exp(θᵀz) that SIMPLE, the exact
reference and REINFORCE/RLOO over subsets use; the tests below say where the two agree
(k = 1) and where they do not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from gvbench.estimators.sampling import gumbel_like
from gvbench.estimators.subset_law import enumerate_subsets
from tests.stats import assert_within_se, trace_variance
from tests.subset_problems import (
    brute_force_gradient,
    subset_gradient_draws,
    subset_objective,
    subset_probabilities,
    subset_quadratic,
)

THETA = torch.tensor([1.2, -0.4, 0.3, -1.5, 0.6], dtype=torch.float64)


def without_replacement_probabilities(theta: torch.Tensor, size: int) -> torch.Tensor:
    """P(the first ``size`` items drawn without replacement ∝ exp θ are each subset), in
    enumerate_subsets' order: the sum over the orders in which the set can be drawn."""
    weights = theta.exp()
    rows = enumerate_subsets(theta.shape[-1], size, dtype=theta.dtype)
    probabilities = []
    for row in rows:
        items = row.nonzero().flatten().tolist()
        total = theta.new_zeros(())
        for order in itertools.permutations(items):
            left, p = weights.sum(), theta.new_ones(())
            for item in order:
                p = p * weights[item] / left
                left = left - weights[item]
            total = total + p
        probabilities.append(total)
    return torch.stack(probabilities)


def subset_frequencies(samples: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Indicators (draws, subsets) of which subset each k-hot sample is."""
    return (samples @ rows.T == rows.sum(-1)).double()


def hard_samples(name: str, theta: torch.Tensor, size: int, draws: int, seed: int) -> torch.Tensor:
    logits = theta.expand(draws, -1)
    return getattr(E, name)(logits, size, generator=torch.Generator().manual_seed(seed)).detach()


# --- the law each sampler's forward draws ----------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3])
def test_gumbel_top_k_draws_without_replacement(size):
    rows, _ = subset_probabilities(THETA, size)
    draws = hard_samples("st_gumbel_top_k", THETA, size, 50_000, seed=1)
    assert_within_se(
        subset_frequencies(draws, rows), without_replacement_probabilities(THETA, size)
    )


def test_gumbel_top_k_is_the_k_subset_law_only_at_k_1():
    rows, exponential_family = subset_probabilities(THETA, 1)
    draws = hard_samples("st_gumbel_top_k", THETA, 1, 50_000, seed=2)
    assert_within_se(subset_frequencies(draws, rows), exponential_family)
    rows, exponential_family = subset_probabilities(THETA, 2)
    draws = hard_samples("st_gumbel_top_k", THETA, 2, 50_000, seed=2)
    with pytest.raises(AssertionError, match="SE"):
        assert_within_se(subset_frequencies(draws, rows), exponential_family)


@pytest.mark.parametrize("size", [2, 3])
def test_score_function_samples_are_the_k_subset_law(size):
    rows, exponential_family = subset_probabilities(THETA, size)
    seen = []

    def objective(sample):
        z = sample(THETA.expand(60_000, -1).requires_grad_(), size)
        seen.append(z)
        return z.sum(-1)

    E.subset_reinforce(objective, generator=torch.Generator().manual_seed(3))
    (draws,) = seen
    assert_within_se(subset_frequencies(draws, rows), exponential_family)
    with pytest.raises(AssertionError, match="SE"):  # the check can fail: another law
        assert_within_se(
            subset_frequencies(draws, rows), without_replacement_probabilities(THETA, size)
        )


# --- exact enumeration (unbiasedness on interacting subsets: tests/test_interactions.py) -----


def test_exact_enumeration_of_subsets_is_the_brute_force_sum():
    f = subset_quadratic(5, seed=3)
    leaf = THETA.clone().requires_grad_()
    E.exact(subset_objective(leaf, 2, f)).sum().backward()
    torch.testing.assert_close(leaf.grad, brute_force_gradient(THETA, 2, f))


def test_too_many_subsets_to_enumerate_are_refused_before_they_are_listed():
    logits = torch.zeros(2, 40)  # C(40, 20) = 1.4e11 subsets
    with pytest.raises(ValueError, match=r"C\(40, 20\) = 137846528820 outcomes, more than"):
        E.exact(lambda sample: sample(logits, 20).sum(-1))


# --- the bias of the Gumbel top-k estimators, measured ---------------------------------------


def bias_z(draws: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """‖mean − g*‖² less its noise tr Σ/N, and that over its SE at zero bias (z-score)."""
    d = draws.double().numpy()
    n = len(d)
    gap = float(np.square(d.mean(0) - expected.numpy()).sum())
    variance, _ = trace_variance(d)
    covariance = np.cov(d.T)
    zero_bias_se = float(np.sqrt(2 * np.trace(covariance @ covariance)) / n)
    bias2 = gap - variance / n
    return bias2, bias2 / zero_bias_se


@pytest.mark.parametrize("name", ["relaxed_top_k", "st_gumbel_top_k"])
def test_gumbel_top_k_is_biased_against_the_k_subset_gradient(name):
    # Measured (τ = 0.5, k = 2, 40 000 draws): bias² = 0.082 (relaxed, z = 263) and 0.189
    # (ST, z = 330) against ‖g*‖² = 8.84, i.e. a bias of 10 % and 15 % of the gradient.
    f = subset_quadratic(5)
    expected = brute_force_gradient(THETA, 2, f)
    draws = subset_gradient_draws(E.get(name, tau=0.5), THETA, 2, f, 40_000, seed=11)
    bias2, z = bias_z(draws, expected)
    assert z > 50 and bias2 > 0.005 * float(expected.square().sum()), (bias2, z)


def test_st_gumbel_top_k_at_k_1_is_st_gumbel_softmax_on_the_same_noise():
    logits = torch.randn(200, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(5, dtype=torch.float64)
    results = []
    for sampler in (
        lambda x, g: E.st_gumbel_top_k(x, 1, tau=0.7, generator=g),
        lambda x, g: E.st_gumbel_softmax(x, tau=0.7, generator=g),
    ):
        leaf = logits.clone().requires_grad_()
        y = sampler(leaf, torch.Generator().manual_seed(5))
        ((y @ weights) ** 2).sum().backward()
        results.append((y.detach(), leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-12, atol=1e-14)


def test_relaxation_tends_to_the_hard_top_k_as_tau_falls():
    logits = torch.randn(300, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    hard = E.st_gumbel_top_k(logits, 3, generator=torch.Generator().manual_seed(7))
    for tau, tolerance in ((1e-2, 0.5), (1e-4, 1e-6)):
        soft = E.relaxed_top_k(logits, 3, tau=tau, generator=torch.Generator().manual_seed(7))
        assert (soft - hard).abs().amax(-1).median() < tolerance, tau


# --- the same noise through the authors' code --------------------------------------------------


def authors_continuous_topk(w: torch.Tensor, k: int, t: float) -> torch.Tensor:
    """A torch port of ermongroup/subsets' ``continuous_topk`` (Xie & Ermon 2019, TensorFlow):
    k softmaxes of the keys at temperature t, each after the log of the mask 1 − (the last
    softmax), floored at float32's smallest normal number; their sum."""
    floor = float(np.finfo(np.float32).tiny)
    onehot_approx = torch.zeros_like(w)
    khot_list = []
    for _ in range(k):
        khot_mask = torch.maximum(1.0 - onehot_approx, torch.tensor(floor, dtype=w.dtype))
        w = w + torch.log(khot_mask)
        onehot_approx = torch.softmax(w / t, dim=-1)
        khot_list.append(onehot_approx)
    return torch.stack(khot_list).sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("size", "tau"), [(1, 1.0), (2, 0.5), (4, 0.1), (3, 0.01)])
def test_relaxed_top_k_is_the_authors_relaxation_on_the_same_noise(dtype, size, tau):
    logits = torch.randn(500, 7, dtype=dtype, generator=torch.Generator().manual_seed(8))
    ours = E.relaxed_top_k(logits, size, tau=tau, generator=torch.Generator().manual_seed(9))
    keys = logits + gumbel_like(logits, torch.Generator().manual_seed(9))
    theirs = authors_continuous_topk(keys, size, tau)
    # Largest differences: 0 at τ ≥ 0.5; 172 and 24 float32 eps at (k, τ) = (4, 0.1),
    # (3, 0.01), 89 and 611 float64 eps: rounding (the softmax subtracts the largest key
    # before dividing by τ, theirs after), amplified by 1/τ where a near one-hot softmax
    # makes the mask 1 − a cancel.
    tolerance = 8 * torch.finfo(dtype).eps * size / tau
    assert float((ours - theirs).abs().max()) <= tolerance
