"""REBAR and RELAX: unbiased on enumerable problems, RELAX's variance falls as its control
variate trains, and the control variate's state survives a checkpoint."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from tests.draws import exact_gradient, quadratic, quadratic_loss
from tests.stats import Z, assert_within_se, trace_variance

THETA = torch.tensor([[0.3, -0.8, 1.1], [1.5, 0.2, -1.0]], dtype=torch.float64)
W = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def interaction(d):
    """Two categorical variables of arity 3 with an interaction (accepts relaxed input)."""
    return (d[..., 0, :] @ W) * (d[..., 1, :] @ W) + (d[..., 1, :] ** 2).sum(-1)


def draws(estimator, theta, f, n, seed):
    leaf = theta.expand(n, *theta.shape).clone().requires_grad_()
    estimator(lambda sample: f(sample(leaf)), generator=torch.Generator().manual_seed(seed))
    surrogate = estimator(
        lambda sample: f(sample(leaf)), generator=torch.Generator().manual_seed(seed + 1)
    )
    leaf.grad = None
    surrogate.sum().backward()
    return leaf.grad.reshape(n, -1)


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_unbiased_on_two_interacting_variables(name):
    expected = exact_gradient(THETA, interaction).reshape(-1)
    assert_within_se(draws(E.get(name), THETA, interaction, 40_000, seed=0), expected)


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_unbiased_with_a_frozen_untrained_control_variate(name):
    """Unbiased for any control-variate parameters, not only trained ones."""
    control = E.ControlVariate(hidden=16 if name == "relax" else 0, eta=3.0, temperature=2.0, lr=0)
    theta = torch.tensor([0.4, -1.0, 0.9, 0.1, -0.3], dtype=torch.float64)
    f = quadratic_loss(*quadratic(5))
    estimator = E.get(name, control=control)
    assert_within_se(draws(estimator, theta, f, 40_000, seed=3), exact_gradient(theta, f))


def test_relax_variance_falls_as_its_control_variate_trains():
    theta = torch.tensor([0.4, -1.0, 0.9, 0.1, -0.3], dtype=torch.float64)
    f = quadratic_loss(*quadratic(5))
    control = E.ControlVariate(hidden=16, eta=0.0, lr=0.03)  # starts as plain REINFORCE
    untrained = copy.deepcopy(control).freeze()
    estimator = E.get("relax", control=control)
    leaf = theta.expand(256, 5).clone().requires_grad_()
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        estimator(lambda sample: f(sample(leaf)), generator=generator)
    control.freeze()
    before = trace_variance(draws(E.get("relax", control=untrained), theta, f, 20_000, seed=5))
    after = trace_variance(draws(E.get("relax", control=control), theta, f, 20_000, seed=7))
    assert after[0] + Z * np.hypot(before[1], after[1]) < before[0], (before, after)


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_the_control_variates_state_round_trips(name, tmp_path):
    theta = torch.tensor([[0.4, -1.0, 0.9]], dtype=torch.float64).requires_grad_()
    f = quadratic_loss(*quadratic(3))
    estimator = E.get(name)
    for seed in range(3):
        estimator(lambda sample: f(sample(theta)), generator=torch.Generator().manual_seed(seed))
    torch.save(estimator.state_dict(), tmp_path / "state.pt")
    restored = E.get(name)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))

    def gradient(est):
        theta.grad = None
        est(
            lambda sample: f(sample(theta)), generator=torch.Generator().manual_seed(9)
        ).sum().backward()
        return theta.grad.clone()

    torch.testing.assert_close(gradient(estimator), gradient(restored), rtol=0, atol=0)
    torch.testing.assert_close(gradient(estimator), gradient(restored), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_choices_that_depend_on_earlier_samples_are_refused(name):
    first = torch.zeros(1, 3, dtype=torch.float64)

    def sequential(sample):
        d = sample(first)
        return (sample(first + 5 * d) * W).sum(-1)

    with pytest.raises(ValueError, match="logits depend on earlier samples"):
        E.get(name)(sequential, generator=torch.Generator().manual_seed(0))
