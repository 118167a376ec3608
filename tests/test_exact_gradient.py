"""A task's exact gradient in closed form: ``ModuleTask(expected_loss=…)`` and the
experiment hook behind it, checked against enumeration and used as the sweep's reference."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import gvbench.estimators as E
from gvbench.harness import sweep
from gvbench.tasks import ModuleTask


class Bits(nn.Module):
    """Six independent binary choices per example; loss Σ (z − t)² with t near ½."""

    arity = 2

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.linspace(-1.5, 2.0, 12, dtype=torch.float64).view(6, 2))
        self.register_buffer("target", torch.linspace(0.3, 0.7, 6, dtype=torch.float64))

    def forward(self, x: torch.Tensor, *, sample) -> torch.Tensor:
        z = sample(self.theta.expand(len(x), 6, 2))[..., 1]
        return ((z - self.target) ** 2).sum(-1) * x


def expected(module: Bits, x: torch.Tensor) -> torch.Tensor:
    """By independence: each bit is 1 with probability softmax(θ)[1]."""
    p = torch.softmax(module.theta, -1)[:, 1]
    t = module.target
    return (p * (1 - t) ** 2 + (1 - p) * t**2).sum() * x


def task(**options) -> ModuleTask:
    inputs = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    return ModuleTask(Bits(), inputs, **options)


def test_the_closed_form_gradient_equals_the_enumerated_one():
    closed, enumerated = task(expected_loss=expected), task()
    assert closed.exact(8) and not enumerated.exact(8)  # 2⁶ outcomes: not enumerated by default
    params = {"theta": closed.module.theta.detach()[None].clone().requires_grad_()}
    # enumeration of the same model, through the Task protocol's default
    by_enumeration = E.exact(lambda sample: closed.loss(params, sample, 8))
    by_enumeration.mean(1).sum().backward()
    want = params["theta"].grad[0].reshape(-1)
    got = closed.exact_gradient(8)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=0, atol=1e-14)
    # the module itself is left as it was
    assert closed.module.theta.grad is None


def test_a_sweep_measures_bias_against_the_closed_form_gradient():
    data = sweep(
        task(expected_loss=expected),
        ["straight_through", "reinforce"],
        tau=1.0,
        k=1,
        batch_size=8,
        reps=4000,
        seed=0,
        progress=False,
    )
    # an exact reference has no noise of its own (a sampled one would store V_ref/N_ref)
    assert float(data["reference_variance"].max()) == 0.0
    bias2 = data["bias2"].squeeze()
    se = data["bias2_se"].squeeze()
    reinforce = bias2.sel(estimator="reinforce").item()
    # REINFORCE is unbiased: its bias² against the exact gradient is within 4 SE of zero.
    assert abs(reinforce) < 4 * se.sel(estimator="reinforce").item()
    # ST is biased on (z − t)² with t ≠ ½; the exact reference resolves it.
    st = bias2.sel(estimator="straight_through").item()
    assert st > 5 * se.sel(estimator="straight_through").item()


def test_a_bad_expected_loss_is_one_clear_error():
    with pytest.raises(TypeError, match="expected_loss must be callable"):
        task(expected_loss=3)
    wrong = task(expected_loss=lambda module, x: expected(module, x).sum())
    with pytest.raises(ValueError, match=r"expected_loss must return .* shape \(8,\)"):
        wrong.exact_gradient(8)
    assert math.isfinite(float(np.sum(task(expected_loss=expected).exact_gradient(4).numpy())))
