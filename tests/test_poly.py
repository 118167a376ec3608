"""Polynomial programming and the quadratic toy: the exact expected loss and gradient against
enumeration and Monte Carlo, the tiny preset end to end, ``gvbench sweep poly`` against the
exact gradient, and the leaderboard columns."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import xarray as xr

import gvbench.estimators as E
from gvbench.cli import main
from gvbench.experiments.poly import POLY, PolyConfig, PolynomialProgram
from gvbench.leaderboard.column import Column
from gvbench.report.builder import Report
from gvbench.study import PresetRun
from gvbench.tasks import ModuleTask


def small_program(power: float, seed: int = 3) -> PolynomialProgram:
    """Four variables spread over (0, 1), in float64: 2⁴ outcomes to enumerate."""
    return PolynomialProgram(4, power, 0.45, init_scale=1.5, seed=seed).double()


@pytest.mark.parametrize("power", [1.5, 2.0, 3.0])
def test_the_exact_expected_loss_and_gradient_equal_enumeration(power):
    model = small_program(power)
    x = torch.arange(3)
    closed = POLY.expected_loss(model, x)
    (closed_grad,) = torch.autograd.grad(closed.mean(), model.logits)
    enumerated = E.exact(lambda sample: POLY.loss(model(x, sample=sample), x))
    (enumerated_grad,) = torch.autograd.grad(enumerated.mean(), model.logits)
    assert closed.shape == enumerated.shape == (3,)
    torch.testing.assert_close(closed, enumerated, rtol=0, atol=1e-14)
    torch.testing.assert_close(closed_grad, enumerated_grad, rtol=0, atol=1e-14)
    # and by hand: ∂E/∂θ_i0 = −∂E/∂θ_i1 = ((1 − c)^p − c^p) q_i (1 − q_i) / D
    q = torch.softmax(model.logits.detach(), -1)[:, 0]
    by_hand = (0.55**power - 0.45**power) * q * (1 - q) / 4
    torch.testing.assert_close(closed_grad[:, 0], by_hand, rtol=0, atol=1e-15)
    torch.testing.assert_close(closed_grad[:, 1], -by_hand, rtol=0, atol=1e-15)


def test_the_exact_expected_loss_is_the_mean_of_many_draws():
    model = small_program(3.0, seed=5)
    x = torch.arange(20_000)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        outcome = model(x, sample=lambda logits: E.categorical_one_hot(logits, -1, generator))
    mean = outcome.loss.mean().item()
    se = outcome.loss.std().item() / math.sqrt(len(x))
    exact = outcome.expected[0].item()
    assert se > 0 and abs(mean - exact) < 5 * se


def test_the_tiny_preset_runs_end_to_end(tmp_path):
    summary = POLY.run_preset("tiny", tmp_path, PresetRun(progress=False))
    assert (tmp_path / "tiny.nc").exists()
    final = summary["final_expected_loss"]
    assert final.dims == ("run", "power", "target", "seed") and final.shape == (2, 1, 1, 2)
    assert summary["toy_final_expected_loss"].shape == (2, 1, 1, 2)
    assert np.isfinite(final).all() and not summary["diverged"].any()
    # a run's final value is its curve's last point; its best is the lowest of the curve
    curve = summary["expected_loss"]
    np.testing.assert_array_equal(final, curve.isel(step=-1))
    np.testing.assert_allclose(summary["best_expected_loss"], curve.min("step"), rtol=1e-6)
    tables = POLY.summary_table(summary)
    assert len(tables) == 2 and all(len(table) for table in tables.values())
    again = POLY.run_preset("tiny", tmp_path, PresetRun(progress=False))  # resumes: no work
    xr.testing.assert_equal(again["final_expected_loss"], final)
    (claim,) = POLY.claims({"poly": summary})  # one p: ReinMax against ST, over two seeds
    assert claim.statement.startswith("ReinMax ends below ST") and claim.evidence
    report = Report(tmp_path / "report")
    POLY.report(report, {"poly": summary})
    ((title, blocks),) = report.sections
    assert title == "Polynomial programming and the quadratic toy"
    assert len(blocks) == 4 and (tmp_path / "report/figures/poly-toy-curves.png").is_file()


@pytest.mark.parametrize("estimator", ["straight_through", "reinmax"])
def test_st_stops_at_its_fixed_point_and_reinmax_goes_past_it(estimator, tmp_path):
    # ST's expected step E f'(z) q(1 − q) vanishes at q* = c^(p−1) / (c^(p−1) + (1 − c)^(p−1)),
    # not at the optimum q = 0: with p = 3, q* = 0.401 and E = 0.12130 there.
    q = 0.45**2 / (0.45**2 + 0.55**2)
    at_fixed_point = q * 0.55**3 + (1 - q) * 0.45**3
    config = PolyConfig(
        estimator=estimator, variables=32, power=3.0, batch_size=64, steps=150,
        eval_every=150, lr=0.04,
    )  # fmt: skip
    final = POLY.train(config, out_dir=tmp_path, progress=False).attrs["best_expected_loss"]
    if estimator == "straight_through":
        assert abs(final - at_fixed_point) < 1e-3
    else:
        assert final < at_fixed_point - 0.02


def test_sweep_poly_measures_bias_against_the_exact_gradient(tmp_path):
    out = tmp_path / "poly.nc"
    main(
        [
            "sweep", "poly", "--estimators", "reinforce", "straight_through", "--tau", "1",
            "--k", "1", "--batch-size", "8", "--reps", "1000", "--warmup", "0", "--seed", "0",
            "--no-progress",
            "--out", str(out), "--task-option", "power=3", "variables=16", "batch_pool=8",
        ]
    )  # fmt: skip
    data = xr.load_dataset(out)
    assert float(data["reference_variance"].max()) == 0.0  # the exact gradient: no noise
    bias2, se = data["bias2"].squeeze(), data["bias2_se"].squeeze()
    reinforce = bias2.sel(estimator="reinforce").item()
    assert abs(reinforce) < 4 * se.sel(estimator="reinforce").item()
    # ST is biased on |z − c|³ at q ≈ ½ (E f'(z) = 0.15 against f(1) − f(0) = 0.075): resolved
    st = bias2.sel(estimator="straight_through").item()
    assert st > 5 * se.sel(estimator="straight_through").item()


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_the_leaderboard_columns_are_well_formed(preset):
    columns = POLY.leaderboard(preset)
    chosen = POLY.preset(preset)
    assert all(isinstance(column, Column) for column in columns)
    assert len(columns) == len(chosen.poly.powers) + len(chosen.toy.targets)
    assert len({column.name for column in columns}) == len(columns)
    registered = set(E.available())
    for column in columns:
        assert column.protocol and column.gradients is not None and column.training is not None
        assert all({c.better, c.worse} <= registered for c in column.claims)
        assert set(column.options) <= registered
        assert isinstance(column.training.base, PolyConfig)
        lo, hi = column.training.lr
        assert lo < column.training.base.lr < hi  # the search is around the published lr
        task = pickle.loads(pickle.dumps(column.gradients.task))()
        assert isinstance(task, ModuleTask) and task.exact(column.gradients.batch_size)
    assert POLY.leaderboard("no-such-preset") == ()


def test_the_tiny_columns_train_and_report_their_figures(tmp_path):
    for column in POLY.leaderboard("tiny")[::2]:
        training = column.training
        curves = training.train(training.base, out_dir=tmp_path, progress=False)
        assert math.isfinite(curves.attrs[training.selection])
        # the outcome is the loss where training ends, as ReinMax's curves report it
        assert training.outcome == "final_expected_loss"
        assert curves.attrs[training.outcome] == float(curves["expected_loss"][-1])


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match="power must be a finite number > 0"):
        PolyConfig(power=0.0)
    with pytest.raises(ValueError, match=r"initial_probability must lie in \(0, 1\)"):
        PolyConfig(initial_probability=1.0)
    with pytest.raises(ValueError, match="init_scale must be a finite number >= 0"):
        PolyConfig(init_scale=-1.0)
    with pytest.raises(TypeError, match="the poly task takes no option degree"):
        POLY.task(degree=3)


@pytest.mark.parametrize(
    "option, message",
    [
        ("batch_pool=-1", "batch_pool must be an integer >= 1, got -1"),
        ("batch_pool=0", "batch_pool must be an integer >= 1, got 0"),
        ("train_steps=-5", "train_steps must be an integer >= 0, got -5"),
    ],
)
def test_a_task_of_no_examples_or_negative_steps_is_one_clear_error(option, message, tmp_path):
    name, value = option.split("=")
    with pytest.raises(ValueError, match=message):
        POLY.task(**{name: int(value)})
    with pytest.raises(SystemExit, match=f"^gvbench: {message}$"):
        main(["sweep", "poly", "--no-progress", "--out", str(tmp_path / "x.nc"),
              "--task-option", option])  # fmt: skip
