"""ARM and DisARM: unbiased on Bernoulli problems with interactions, DisARM's variance at most
ARM's, and a clear refusal of choices whose logits depend on earlier samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from tests.stats import Z, assert_within_se, trace_variance

LOGITS = torch.tensor([5.0, -5.0, 0.0], dtype=torch.float64)  # φ of three Bernoulli variables
W = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def quadratic_interaction(b):
    """(w·b − 1)², not separable across variables."""
    return (b @ W - 1.0) ** 2


def softplus_interaction(b):
    return torch.nn.functional.softplus(3 * b[..., 0] * b[..., 1] - b[..., 2]) + b[..., 1]


def categorical(phi):
    return torch.stack([torch.zeros_like(phi), phi], -1)


def draws(name, f, phi, n, seed):
    leaf = categorical(phi).expand(n, -1, -1).clone().requires_grad_()
    estimator = E.get(name)
    out = estimator(
        lambda sample: f(sample(leaf)[..., 1]), generator=torch.Generator().manual_seed(seed)
    )
    out.sum().backward()
    return leaf.grad[..., 1]  # ∂/∂θ₁ = ∂/∂φ, φ = θ₁ − θ₀


def exact(f, phi):
    leaf = categorical(phi)[None].clone().requires_grad_()
    E.exact(lambda sample: f(sample(leaf)[..., 1])).sum().backward()
    return leaf.grad[0, :, 1]


@pytest.mark.parametrize("name", ["arm", "disarm"])
@pytest.mark.parametrize("f", [quadratic_interaction, softplus_interaction])
@pytest.mark.parametrize("phi", [LOGITS, torch.tensor([0.3, -0.8, 1.2], dtype=torch.float64)])
def test_unbiased_against_enumeration_with_interactions(name, f, phi):
    g = draws(name, f, phi, 50_000, seed=1)
    assert_within_se(g, exact(f, phi))


def test_disarm_has_lower_variance_than_arm():
    """Dong et al. (2020): integrating out the augmentation never raises the variance."""
    f = lambda b: ((b - 0.499) ** 2).sum(-1)  # noqa: E731 — the toy of the REBAR/ARM papers
    phi = torch.tensor([0.0, 0.5, -1.0, 2.0], dtype=torch.float64)
    arm = trace_variance(draws("arm", f, phi, 40_000, seed=2))
    disarm = trace_variance(draws("disarm", f, phi, 40_000, seed=3))
    assert disarm[0] + Z * np.hypot(arm[1], disarm[1]) < arm[0], (arm, disarm)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_the_loss_value_is_the_mean_of_the_two_evaluations(name):
    phi = torch.tensor([[0.2, -0.3]], dtype=torch.float64)
    values = []

    def objective(sample):
        loss = quadratic_interaction(
            torch.cat([sample(categorical(phi))[..., 1], torch.ones(1, 1, dtype=torch.float64)], -1)
        )
        values.append(loss)
        return loss

    out = getattr(E, name)(objective, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.detach(), 0.5 * (values[0] + values[1]))


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_choices_that_depend_on_earlier_samples_are_refused(name):
    first = categorical(torch.tensor([[0.0]], dtype=torch.float64))

    def sequential(sample):
        b = sample(first)[..., 1]
        return sample(categorical(3.0 * b - 1.0))[..., 1].sum(-1)

    with pytest.raises(ValueError, match="logits depend on earlier samples"):
        for seed in range(20):  # until the two evaluations' first draws differ
            getattr(E, name)(sequential, generator=torch.Generator().manual_seed(seed))
