"""Decoupled ST: ST-GS at τ_f = 1, a tempered sampling law otherwise, and its (τ_f, τ_b) grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gvbench
import gvbench.estimators as E
from gvbench.harness.compare import option_grid
from tests.stats import assert_within_se


def test_forward_tau_one_is_st_gumbel_softmax_draw_for_draw():
    logits = torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(6, dtype=torch.float64)
    grads = []
    for name, options in (
        ("decoupled_straight_through", {"forward_tau": 1.0}),
        ("st_gumbel_softmax", {}),
    ):
        leaf = logits.clone().requires_grad_()
        y = getattr(E, name)(leaf, tau=0.3, generator=torch.Generator().manual_seed(1), **options)
        ((y @ weights) ** 2).sum().backward()
        grads.append((y.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("forward_tau", [0.5, 2.0])
def test_forward_tau_samples_the_tempered_distribution(forward_tau):
    theta = torch.tensor([0.8, -0.4, 0.1, -1.2], dtype=torch.float64)
    y = E.decoupled_straight_through(
        theta.expand(100_000, 4),
        forward_tau=forward_tau,
        generator=torch.Generator().manual_seed(2),
    )
    assert_within_se(y, torch.softmax(theta / forward_tau, -1))


def test_bad_forward_tau_is_named_at_the_door():
    with pytest.raises(ValueError, match="forward_tau must be a finite number > 0"):
        E.decoupled_straight_through(torch.zeros(2, 3), forward_tau=0.0)
    with pytest.raises(ValueError, match="forward_tau must be a finite number > 0"):
        E.info("decoupled_straight_through(forward_tau=-1)")
    with pytest.raises(ValueError, match="tau is swept by the grid"):
        E.info("decoupled_straight_through(tau=0.5)")
    with pytest.raises(ValueError, match="takes no option"):
        E.info("st_gumbel_softmax(forward_tau=0.5)")
    with pytest.raises(ValueError, match="a registered name or 'name"):
        E.info("decoupled_straight_through(0.5)")


def test_variants_are_estimators_with_their_own_names():
    names = E.variants("decoupled_straight_through", forward_tau=[0.5, 2])
    assert names == [
        "decoupled_straight_through(forward_tau=0.5)",
        "decoupled_straight_through(forward_tau=2)",
    ]
    entry = E.info("decoupled_straight_through( forward_tau = 0.5 )")
    assert entry.name == names[0] and entry.label == "Decoupled ST (forward_tau=0.5)"
    assert E.get(names[0]).options["forward_tau"] == 0.5


def test_a_sweep_over_forward_and_backward_temperatures():
    """τ_b is the swept τ axis, τ_f a variant per value: the Dataset keeps its dims, and
    option_grid lays the variants out as a (forward_tau, tau) grid."""
    names = E.variants("decoupled_straight_through", forward_tau=[0.5, 1.0, 2.0])
    ds = gvbench.sweep(
        "toy",
        estimators=[*names, "st_gumbel_softmax"],
        tau=[0.5, 1.0],
        k=[1],
        reps=4000,
        seed=0,
        progress=False,
    )
    assert "forward_tau" not in ds.dims and ds.sizes["estimator"] == 4
    grid = option_grid(ds["variance"], "decoupled_straight_through", "forward_tau")
    assert grid.dims[:2] == ("forward_tau", "tau")
    assert list(grid["forward_tau"].values) == [0.5, 1.0, 2.0]
    # τ_f = 1 is ST-GS at τ_b: the same variance within SE (different draws)
    one = ds.sel(estimator=names[1], k=1).squeeze()
    st = ds.sel(estimator="st_gumbel_softmax", k=1).squeeze()
    z = (one["variance"] - st["variance"]) / np.hypot(one["variance_se"], st["variance_se"])
    assert (abs(z) < 5).all()
    # a flatter forward law (τ_f = 2) is another estimator (measured at τ_b = 1: variance
    # 0.046 against ST-GS's 0.108)
    flat = ds.sel(estimator=names[2], k=1, tau=1.0).squeeze()
    z = (flat["variance"] - st["variance"].sel(tau=1.0)) / np.hypot(
        flat["variance_se"], st["variance_se"].sel(tau=1.0)
    )
    assert float(z) < -5
