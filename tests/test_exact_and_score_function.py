"""Exact references by enumeration, exact variances, and the score-function estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from tests.draws import exact_gradient, gradient_draws, quadratic, quadratic_loss
from tests.stats import Z, as_numpy, assert_within_se, trace_variance

THETA = torch.tensor([0.3, -0.8, 1.1, 0.0, -0.2], dtype=torch.float64)


def outcome_values(f, n):
    return f(torch.eye(n, dtype=torch.float64))


def test_enumeration_gradient_matches_closed_form_and_autograd():
    c = torch.tensor([0.1, 0.5, -0.2, 0.3, 0.0], dtype=torch.float64)
    f = lambda d: ((d - c) ** 2).sum(-1)  # noqa: E731
    p = torch.softmax(THETA, -1)
    f_vec = outcome_values(f, 5)
    closed_form = (torch.diag(p) - torch.outer(p, p)) @ f_vec
    leaf = THETA.clone().requires_grad_()
    (torch.softmax(leaf, -1) * f_vec).sum().backward()
    enumerated = exact_gradient(THETA, f)
    torch.testing.assert_close(enumerated, closed_form, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(enumerated, leaf.grad, rtol=1e-12, atol=1e-12)


def test_enumeration_over_several_variables_and_batches():
    theta = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def objective(sample):  # per-example loss with an interaction between the two variables
        d = sample(leaf)
        return (d[:, 0] @ weights) * (d[:, 1] @ weights) + d[:, 0, 2]

    leaf = theta.clone().requires_grad_()
    E.exact(objective).sum().backward()
    expected = torch.zeros_like(theta)
    for b in range(3):
        t = theta[b].clone().requires_grad_()
        p = torch.softmax(t, -1)
        total = sum(
            p[0, i] * p[1, j] * (weights[i] * weights[j] + (i == 2))
            for i in range(3)
            for j in range(3)
        )
        total.backward()
        expected[b] = t.grad
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-12)


def sequential_objective(leaf_first, weight):
    """Two choices; the second's logits depend on the first sample (like a parse tree)."""

    def objective(sample):
        first = sample(leaf_first)
        second = sample(first @ weight)  # logits of step 2 are a function of step 1
        return (second * torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)).sum(-1) + first[:, 0]

    return objective


def test_enumeration_of_sequential_choices_and_rloo_agree():
    theta = torch.tensor([[0.2, -0.4, 0.7]], dtype=torch.float64)
    weight = torch.tensor(
        [[0.5, -1.0, 0.0], [1.0, 1.0, -2.0], [0.0, 0.3, 0.4]], dtype=torch.float64
    )
    leaf, w = theta.clone().requires_grad_(), weight.clone().requires_grad_()
    E.exact(sequential_objective(leaf, w)).sum().backward()
    # Hand enumeration of the 9 paths.
    t, ww = theta.clone().requires_grad_(), weight.clone().requires_grad_()
    p1 = torch.softmax(t[0], -1)
    total = 0
    for i in range(3):
        p2 = torch.softmax(ww[i], -1)
        for j in range(3):
            total = total + p1[i] * p2[j] * ([1.0, -1.0, 2.0][j] + (i == 0))
    total.backward()
    torch.testing.assert_close(leaf.grad, t.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.grad, ww.grad, rtol=1e-12, atol=1e-12)
    # RLOO through the same objective interface: unbiased for both parameter groups.
    n_draws = 20_000
    leaf_draws = theta.expand(n_draws, 3).clone().requires_grad_()
    w_draws = weight.expand(n_draws, 3, 3).clone().requires_grad_()

    def batched(sample):
        first = sample(leaf_draws)
        second = sample(torch.einsum("ni,nij->nj", first, w_draws))
        return (second * torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)).sum(-1) + first[:, 0]

    E.rloo(batched, k=3, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert_within_se(leaf_draws.grad, t.grad[0])
    assert_within_se(w_draws.grad.reshape(n_draws, -1), ww.grad.reshape(-1))


def test_enumeration_refuses_too_many_outcomes():
    leaf = torch.zeros(1, 12, 4)
    with pytest.raises(ValueError, match="max_outcomes"):
        E.exact(lambda s: s(leaf).sum((-1, -2)), max_outcomes=1000)


def exact_moments(per_outcome, p):
    """Exact mean and trace variance of an estimator that depends on D alone."""
    mean = (p[:, None] * per_outcome).sum(0)
    variance = (p * ((per_outcome - mean) ** 2).sum(-1)).sum()
    return mean, variance


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_straight_through_exact_mean_and_variance(tau):
    q, c = quadratic(5)
    f = quadratic_loss(q, c)
    s = torch.softmax(THETA / tau, -1)
    jacobian = (torch.diag(s) - torch.outer(s, s)) / tau
    upstream = 2 * (torch.eye(5, dtype=torch.float64) - c) @ q  # ∂f/∂D at each e_i
    per_outcome = upstream @ jacobian  # row i: Jᵀ u(e_i) (J symmetric)
    mean, variance = exact_moments(per_outcome, torch.softmax(THETA, -1))
    draws = gradient_draws(E.get("straight_through", tau=tau), THETA, f, 40_000, seed=3)
    assert_within_se(draws, mean)
    v, se = trace_variance(draws)
    assert abs(v - float(variance)) <= Z * se
    # ST is biased here: its mean is not the exact gradient.
    assert not torch.allclose(mean, exact_gradient(THETA, f), atol=1e-2)


def test_reinforce_with_fixed_baseline_exact_mean_and_variance():
    q, c = quadratic(5)
    f = quadratic_loss(q, c)
    p = torch.softmax(THETA, -1)
    f_vec = outcome_values(f, 5)
    baseline = 0.25
    per_outcome = (f_vec - baseline)[:, None] * (torch.eye(5, dtype=torch.float64) - p)
    mean, variance = exact_moments(per_outcome, p)
    torch.testing.assert_close(mean, exact_gradient(THETA, f))  # unbiased whatever b
    draws = gradient_draws(E.get("reinforce", baseline=baseline), THETA, f, 40_000, seed=4)
    assert_within_se(draws, mean)
    v, se = trace_variance(draws)
    assert abs(v - float(variance)) <= Z * se


def test_running_mean_baseline_never_uses_the_current_sample():
    baseline = E.RunningMean(beta=0.5)
    seen = []

    def objective(sample):
        d = sample(torch.zeros(4, 3, dtype=torch.float64))
        loss = d @ torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        seen.append(baseline())
        return loss

    losses = []
    for seed in range(4):
        out = E.reinforce(
            objective, baseline=baseline, generator=torch.Generator().manual_seed(seed)
        )
        losses.append(float(out.detach().mean()))
    assert seen[0] == 0.0 and seen[1] == pytest.approx(losses[0])
    assert seen[2] == pytest.approx(0.5 * losses[0] + 0.5 * losses[1])
    assert baseline.value == pytest.approx(0.5 * seen[3] + 0.5 * losses[3])


def test_registry_gives_each_reinforce_its_own_baseline():
    a, b = E.get("reinforce"), E.get("reinforce")
    assert a.options["baseline"] is not b.options["baseline"]


def test_rloo_variance_falls_with_k_and_beats_plain_reinforce():
    q, c = quadratic(5)
    f = quadratic_loss(q, c)
    plain = trace_variance(gradient_draws(E.get("reinforce", baseline=0.0), THETA, f, 20_000, 1))
    previous = plain
    for k in (2, 8):
        current = trace_variance(gradient_draws(E.get("rloo", k=k), THETA, f, 20_000, seed=k))
        assert current[0] + Z * np.hypot(current[1], previous[1]) < previous[0]
        previous = current


def test_score_function_rejects_choices_outside_the_examples():
    def objective(sample):
        sample(torch.zeros(3, 4))
        return torch.zeros(5)

    with pytest.raises(ValueError, match="does not start with the objective's per-example"):
        E.reinforce(objective)
    with pytest.raises(ValueError, match="never called the sampler"):
        E.reinforce(lambda sample: torch.zeros(3))


def test_surrogate_value_is_the_loss():
    q, c = quadratic(5)
    f = quadratic_loss(q, c)
    leaf = THETA.expand(100, 5).clone().requires_grad_()
    gen = torch.Generator().manual_seed(0)
    out = E.reinforce(lambda s: f(s(leaf)), baseline=0.3, generator=gen)
    gen = torch.Generator().manual_seed(0)
    sample = E.categorical_one_hot(leaf, -1, gen)
    torch.testing.assert_close(out.detach(), f(sample))
    assert set(np.round(as_numpy(out), 10)) <= set(np.round(as_numpy(outcome_values(f, 5)), 10))
