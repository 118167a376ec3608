"""Comparisons at equal cost: cost per cell, the frontier and the best at each budget,
stateful estimators measured adapted, several sweeps side by side."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gvbench
import gvbench.estimators as E
from gvbench.cli import main
from gvbench.estimators import registry
from gvbench.harness import read
from gvbench.harness.compare import best_at_budget, cost_points, differences, frontier
from gvbench.harness.draws import choices
from gvbench.harness.sweep import DEFAULT_WARMUP
from gvbench.tasks import Toy
from tests.stats import Z

TASK = Toy(theta=[0.6, -0.2, 0.1])
GRID = dict(
    estimators=["straight_through", "st_gumbel_softmax", "reinforce", "rloo", "unordered_set"],
    tau=[0.5, 1.0],
    k=[2, 3],
    reps=2000,
    warmup=50,
    progress=False,
)


@pytest.fixture(scope="module")
def toy():
    return gvbench.sweep(TASK, **GRID)


def test_every_done_cell_carries_its_cost_and_the_variance_at_equal_cost(toy):
    done = toy.status == "done"
    assert bool(done.any())
    for metric in ("variance", "mse"):
        for unit, cost in (("work", "evaluations"), ("time", "draw_seconds")):
            scaled = toy[f"{unit}_normalized_{metric}"].where(done)
            np.testing.assert_allclose(scaled, (toy[metric] * toy[cost]).where(done), rtol=1e-12)
            np.testing.assert_allclose(
                toy[f"{unit}_normalized_{metric}_se"].where(done),
                (toy[f"{metric}_se"] * toy[cost]).where(done),
                rtol=1e-12,
            )
    assert toy.time_normalized_variance.attrs["units"] == "s"
    expected = {"rloo": 3, "unordered_set": 4, "reinforce": 1, "st_gumbel_softmax": 1}
    for name, count in expected.items():
        cells = toy.evaluations.sel(estimator=name, k=3, tau=1.0)
        assert float(cells.squeeze()) == count, name


class Counting(Toy):
    """The toy, counting how often its loss (the objective) runs."""

    name = "counting-toy"

    def __init__(self):
        super().__init__(theta=[0.6, -0.2, 0.1])
        self.calls = 0

    def loss(self, params, sample, batch_size):
        self.calls += 1
        return super().loss(params, sample, batch_size)


@pytest.mark.parametrize("name", [n for n, i in E.available().items() if not i.binary_only])
def test_the_evaluation_count_is_the_objective_runs_the_harness_makes(name):
    task = Counting()
    options = {"k": 3} if "k" in E.info(name).hyper else {}
    estimator = E.get(name, **options)
    found = choices(task, 2)
    task.calls = 0
    task.gradients(estimator, 5, 2, None)  # one pass of five draws: each run serves all five
    assert task.calls == E.info(name).evaluations_per_draw(estimator.options, found), name


def test_the_frontier_moves_when_an_estimator_costs_more(toy, monkeypatch):
    points = frontier(cost_points(toy))
    assert points[(points.estimator == "rloo") & (points.tau == 0.5)].on_front.any()
    costly = dataclasses.replace(E.info("rloo"), evaluations=lambda o, c: 100 * o["k"])
    monkeypatch.setitem(registry._REGISTRY, "rloo", costly)
    dearer = gvbench.sweep(TASK, **{**GRID, "estimators": ["reinforce", "rloo", "unordered_set"]})
    moved = frontier(cost_points(dearer))
    assert float(moved[moved.estimator == "rloo"].cost.min()) == 200
    assert not moved[(moved.estimator == "rloo") & (moved.tau == 0.5)].on_front.any()
    budgets = best_at_budget(moved)
    assert {200.0, 300.0} <= set(budgets.budget) and not budgets.best.str.startswith("RLOO").any()


def test_the_best_at_a_budget_averages_cheaper_draws(toy):
    points = frontier(cost_points(toy))
    best = best_at_budget(points)
    one = points[(points.tau == 1.0) & (points.point == "REINFORCE")].iloc[0]
    at_three = best[(best.tau == 1.0) & (best.budget == 3)].iloc[0]
    # US-BL K=2 (3 runs) against REINFORCE averaged over three draws: V/3.
    us = points[(points.tau == 1.0) & (points.point == "US-BL K=2")].iloc[0]
    winner = "US-BL K=2" if us.variance < one.variance / 3 else "REINFORCE"
    assert at_three.best == winner
    assert np.isfinite(at_three.z)
    # On MSE every estimator competes, and averaging does not remove a bias.
    mse = best_at_budget(points, "mse")
    cheap = points[(points.tau == 0.5) & (points.cost <= 1)]
    lowest = cheap.loc[(cheap.bias2 + cheap.variance).idxmin(), "point"]
    assert mse[(mse.tau == 0.5) & (mse.budget == 1)].best.item() == lowest


@pytest.mark.slow
def test_adapted_rebar_and_relax_are_at_most_reinforce():
    """On the toy at τ = 0.5, 4,000 draws: both control variates can become REINFORCE's
    constant baseline (η = 0, a constant network), so adapted they are at most REINFORCE."""
    ds = gvbench.sweep(
        "toy",
        estimators=["reinforce", "rebar", "relax"],
        tau=[0.5],
        k=[1],
        reps=4000,
        progress=False,
    )
    cell = ds.squeeze()
    reinforce = cell.sel(estimator="reinforce")
    for name in ("rebar", "relax"):
        mine = cell.sel(estimator=name)
        bound = reinforce.variance + 3 * np.hypot(reinforce.variance_se, mine.variance_se)
        assert float(mine.variance) <= float(bound), (name, float(mine.variance), float(bound))
        assert float(mine.warmup) == DEFAULT_WARMUP
        assert np.isfinite(float(mine.adapted_eta)) and np.isfinite(float(mine.adapted_baseline))
    assert np.isfinite(float(reinforce.adapted_baseline)) and np.isnan(float(reinforce.adapted_eta))


def test_adapted_estimators_are_unbiased_and_their_cells_replay(tmp_path):
    grid = dict(estimators=["reinforce", "rebar"], tau=[1.0], k=[1], reps=4000, warmup=100)
    ds = gvbench.sweep(TASK, progress=False, path=tmp_path / "a.nc", **grid)
    assert (np.abs(ds.bias2) <= Z * ds.bias2_se).all()
    again = gvbench.sweep(TASK, progress=False, **grid)
    for name in ("variance", "bias2", "adapted_baseline", "adapted_eta", "warmup"):
        np.testing.assert_array_equal(ds[name].values, again[name].values, err_msg=name)


def test_sweeps_of_one_problem_side_by_side_and_of_two_refused(tmp_path, capsys):
    grid = {**GRID, "estimators": ["st_gumbel_softmax", "reinforce"], "reps": 400}
    gvbench.sweep(TASK, path=tmp_path / "a.nc", seed=0, **grid)
    gvbench.sweep(TASK, path=tmp_path / "b.nc", seed=1, **grid)
    gvbench.sweep(TASK, path=tmp_path / "same.nc", seed=0, **grid)
    sweeps = {name: read(tmp_path / f"{name}.nc") for name in ("a", "b", "same")}
    table = differences(sweeps)
    assert (table["variance same − a"] == 0).all()  # one seed, one code: identical numbers
    z = table["variance b − a z"].dropna()
    assert len(z) and (np.abs(z) < 5).all()  # two seeds of one estimator agree within noise
    assert main(["compare", str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]) == 0
    assert "variance b − a" in capsys.readouterr().out
    assert (
        main(["plot", str(tmp_path / "a.nc"), str(tmp_path / "b.nc"), "--out-dir", str(tmp_path)])
        == 0
    )
    assert (tmp_path / "compare-a-b-variance.png").stat().st_size > 1000
    other = Toy(theta=[0.0, 1.0, 2.0])
    gvbench.sweep(other, path=tmp_path / "other.nc", **grid)
    with pytest.raises(SystemExit) as refused:
        main(["compare", str(tmp_path / "a.nc"), str(tmp_path / "other.nc")])
    message = str(refused.value)
    assert "different problems (task_config:" in message and "\n" not in message
    assert main(["plot", "--frontier", str(tmp_path / "a.nc"), str(tmp_path / "other.nc")]) == 0
    assert main(["compare", "--frontier", str(tmp_path / "a.nc"), str(tmp_path / "other.nc")]) == 0
    assert "best at each budget" in capsys.readouterr().out
