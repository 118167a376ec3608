"""The k-subset law against brute force: every one of the C(n, k) subsets, weighed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gvbench.estimators.subset_law import (
    enumerate_subsets,
    subset_log_partition,
    subset_log_prob,
    subset_marginals,
    subset_sample,
)
from tests.stats import assert_within_se

CASES = [(2, 1), (5, 1), (5, 2), (6, 3), (7, 6)]


def brute_log_weights(theta: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k-hot row of ``theta``'s items and its unnormalised log weight θᵀz."""
    rows = enumerate_subsets(theta.shape[-1], size, dtype=theta.dtype)
    return rows, theta @ rows.T


def logits(n: int, *batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, n, dtype=torch.float64, generator=generator) * 1.5


@pytest.mark.parametrize(("n", "size"), CASES)
def test_log_partition_and_marginals_are_the_sums_over_every_subset(n, size):
    theta = logits(n, 4).requires_grad_()
    rows, log_w = brute_log_weights(theta, size)
    torch.testing.assert_close(subset_log_partition(theta, size), torch.logsumexp(log_w, -1))
    expected = torch.softmax(log_w, -1) @ rows
    marginals = subset_marginals(theta, size)
    torch.testing.assert_close(marginals, expected)
    torch.testing.assert_close(marginals.sum(-1), torch.full((4,), float(size), dtype=theta.dtype))
    # the marginals are ∂ log Z/∂θ ...
    (grad,) = torch.autograd.grad(subset_log_partition(theta, size).sum(), theta)
    torch.testing.assert_close(grad, expected)
    # ... and differentiable: their Jacobian is the covariance of z, Cov = E[zzᵀ] − μμᵀ
    jacobian = torch.autograd.functional.jacobian(lambda t: subset_marginals(t, size), theta[0])
    p = torch.softmax(log_w[0], -1).detach()
    covariance = (rows.T * p) @ rows - torch.outer(expected[0], expected[0]).detach()
    torch.testing.assert_close(jacobian, covariance)


@pytest.mark.parametrize(("n", "size"), CASES)
def test_log_prob_is_the_normalised_weight(n, size):
    theta = logits(n, 3, seed=1)
    rows, log_w = brute_log_weights(theta, size)
    for index in range(len(rows)):
        sample = rows[index].expand(3, n)
        expected = log_w[:, index] - torch.logsumexp(log_w, -1)
        torch.testing.assert_close(subset_log_prob(theta, sample), expected)
        torch.testing.assert_close(subset_log_prob(theta, sample, size), expected)


def test_enumeration_lists_each_subset_once():
    rows = enumerate_subsets(6, 2)
    assert rows.shape == (math.comb(6, 2), 6)
    assert (rows.sum(-1) == 2).all()
    assert len({tuple(r.tolist()) for r in rows}) == len(rows)
    assert rows[0].tolist() == [1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(("n", "size"), [(4, 2), (5, 3)])
def test_sample_frequencies_are_the_exact_probabilities_within_se(n, size):
    theta = logits(n, seed=2)
    rows, log_w = brute_log_weights(theta, size)
    probabilities = torch.softmax(log_w, -1)
    draws = subset_sample(theta.expand(60_000, n), size, generator=torch.Generator().manual_seed(3))
    assert ((draws == 0) | (draws == 1)).all() and (draws.sum(-1) == size).all()
    # indicator of each subset: its mean is that subset's frequency
    indicators = (draws @ rows.T == size).double()
    assert (indicators.sum(-1) == 1).all()
    assert_within_se(indicators, probabilities)


def test_sampling_a_wrong_law_would_be_caught():
    # The check above can fail: independent Bernoullis with the right marginals, renormalised
    # over the k-subsets, are a different law, and the same draws tell it apart.
    theta = logits(4, seed=2)
    rows = enumerate_subsets(4, 2, dtype=theta.dtype)
    marginals = subset_marginals(theta, 2)
    product = (rows * marginals + (1 - rows) * (1 - marginals)).prod(-1)
    wrong = product / product.sum()
    draws = subset_sample(theta.expand(60_000, 4), 2, generator=torch.Generator().manual_seed(3))
    indicators = (draws @ rows.T == 2).double()
    with pytest.raises(AssertionError, match="SE"):
        assert_within_se(indicators, wrong)


def test_sample_is_reproducible_and_keeps_dtype():
    theta = logits(6, 5, seed=4).float()
    a = subset_sample(theta, 2, generator=torch.Generator().manual_seed(9))
    b = subset_sample(theta, 2, generator=torch.Generator().manual_seed(9))
    c = subset_sample(theta, 2, generator=torch.Generator().manual_seed(10))
    assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)


def test_extreme_logits_stay_finite_and_exact_in_count():
    theta = (logits(8, 6, seed=5) * 1e4).requires_grad_()
    marginals = subset_marginals(theta, 3)
    assert torch.isfinite(marginals).all()
    torch.testing.assert_close(marginals.sum(-1), torch.full((6,), 3.0, dtype=theta.dtype))
    subset_log_partition(theta, 3).sum().backward()
    assert torch.isfinite(theta.grad).all()
    assert (subset_sample(theta, 3).sum(-1) == 3).all()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    batch=st.lists(st.integers(1, 3), max_size=3),
    n=st.integers(2, 7),
    data=st.data(),
)
def test_any_batch_shape(batch, n, data):
    size = data.draw(st.integers(1, n - 1))
    theta = logits(n, *batch, seed=len(batch) + n)
    assert subset_log_partition(theta, size).shape == tuple(batch)
    assert subset_marginals(theta, size).shape == (*batch, n)
    sample = subset_sample(theta, size, generator=torch.Generator().manual_seed(0))
    assert sample.shape == (*batch, n) and (sample.sum(-1) == size).all()
    assert subset_log_prob(theta, sample).shape == tuple(batch)
    assert (subset_log_prob(theta, sample) <= 1e-12).all()


@pytest.mark.parametrize("size", [0, -1, 5, 6])
def test_size_out_of_range_is_named(size):
    with pytest.raises(
        ValueError, match=r"size \(items chosen\) must be an integer in \[1, n - 1\]"
    ):
        subset_sample(torch.zeros(2, 5), size)
    with pytest.raises(ValueError, match=r"\[1, 4\] for n = 5"):
        subset_log_partition(torch.zeros(5), size)


@pytest.mark.parametrize("size", [1.5, True, "2", None])
def test_size_must_be_an_integer(size):
    with pytest.raises(TypeError, match="size"):
        subset_marginals(torch.zeros(5), size)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_logits_must_be_finite(bad):
    theta = torch.zeros(2, 5)
    theta[1, 3] = bad
    with pytest.raises(ValueError, match="logits"):
        subset_sample(theta, 2)


def test_a_sample_that_is_not_k_hot_is_refused():
    with pytest.raises(ValueError, match="k-hot"):
        subset_log_prob(torch.zeros(2, 4), torch.tensor([[1.0, 1, 0, 0], [1.0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="k-hot"):
        subset_log_prob(torch.zeros(4), torch.tensor([1.0, 0.5, 0.5, 0]), 2)
    with pytest.raises(ValueError, match="4 items"):
        subset_log_prob(torch.zeros(4), torch.ones(3))
