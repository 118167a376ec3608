"""Binary variables: Bernoulli forms of the categorical estimators, and the FouST reconstruction."""

from __future__ import annotations

import pytest
import torch

import gvbench.estimators as E
from tests.conftest import CATEGORICAL_SAMPLERS
from tests.stats import assert_within_se

LOGIT = torch.tensor([-1.5, 0.2, 1.0, 2.5], dtype=torch.float64)


def g(x):
    """A separable, far-from-linear per-variable loss."""
    return torch.sin(3 * x) + x**3


def exact_bernoulli_gradient(logit):
    p = torch.sigmoid(logit)
    one, zero = torch.ones(()), torch.zeros(())
    return p * (1 - p) * (g(one) - g(zero))


def bernoulli_draws(sampler, n_draws, seed, **options):
    leaf = LOGIT.expand(n_draws, -1).clone().requires_grad_()
    b = sampler(leaf, generator=torch.Generator().manual_seed(seed), **options)
    g(b).sum().backward()
    return b.detach(), leaf.grad


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_bernoulli_form_matches_categorical_on_zero_logit(name):
    function = getattr(E, name)
    leaf = LOGIT.clone().requires_grad_()
    b = E.bernoulli(function)(leaf, generator=torch.Generator().manual_seed(0))
    (b * torch.arange(1.0, 5.0, dtype=torch.float64)).sum().backward()
    logits = torch.stack([torch.zeros_like(LOGIT), LOGIT], -1).requires_grad_()
    y = function(logits, generator=torch.Generator().manual_seed(0))
    (y[..., 1] * torch.arange(1.0, 5.0, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(b.detach(), y[..., 1].detach())
    torch.testing.assert_close(leaf.grad, logits.grad[..., 1])  # the first logit is fixed at 0
    assert b.shape == LOGIT.shape
    if not E.info(name).relaxed:
        assert set(b.detach().unique().tolist()) <= {0.0, 1.0}


def test_bernoulli_samples_have_the_right_frequency():
    b, _ = bernoulli_draws(E.bernoulli(E.straight_through), 40_000, seed=1)
    assert_within_se(b, torch.sigmoid(LOGIT))


def test_foust_reconstruction_without_its_steps_is_straight_through():
    t, grad = bernoulli_draws(
        E.foust_reconstruction, 1000, seed=2, uniform_low=1.0, importance_weights=False
    )
    assert set(t.unique().tolist()) <= {0.0, 1.0}
    p = torch.sigmoid(LOGIT)
    x = t.clone().requires_grad_()
    g(x).sum().backward()
    torch.testing.assert_close(grad, p * (1 - p) * x.grad)


def test_foust_reconstruction_is_unbiased_for_separable_losses_where_st_is_not():
    expected = exact_bernoulli_gradient(LOGIT)
    t, grad = bernoulli_draws(E.foust_reconstruction, 50_000, seed=3)
    assert ((t >= 0) & (t <= 1)).all() and ((t > 0.5) == (t.round() == 1)).all()
    assert_within_se(grad, expected)
    _, st_grad = bernoulli_draws(E.bernoulli(E.straight_through), 50_000, seed=4)
    with pytest.raises(AssertionError):
        assert_within_se(st_grad, expected)


def test_foust_reconstruction_forward_rounds_to_a_bernoulli_sample():
    t, _ = bernoulli_draws(E.foust_reconstruction, 40_000, seed=5)
    assert_within_se(t.round(), torch.sigmoid(LOGIT))


def test_binary_only_estimator_runs_on_arity_two_and_refuses_more():
    estimator = E.get("foust_reconstruction")
    logits = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    out = estimator(lambda s: g(s(logits)[..., 1]).sum(-1))
    out.sum().backward()
    assert out.shape == (6,) and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match=r"binary-only.*exactly 2 categories"):
        estimator(lambda s: s(torch.zeros(3, 5)).sum(-1))


@pytest.mark.parametrize("name, label", [("arm", "ARM"), ("disarm", "DisARM")])
def test_an_antithetic_estimator_names_itself_when_it_refuses_an_arity(name, label):
    with pytest.raises(ValueError, match=rf"^{label} is binary-only: .* along dim=1, got 3$"):
        E.get(name)(lambda s: s(torch.zeros(4, 3)).sum(-1))


def test_foust_reconstruction_bad_input():
    with pytest.raises(ValueError, match="uniform_low"):
        E.foust_reconstruction(LOGIT, uniform_low=1.5)
    with pytest.raises(ValueError, match="logit must be finite"):
        E.foust_reconstruction(torch.tensor([0.0, float("nan")]))
