"""Comparisons at equal cost: cost per cell, the frontier and the best at each budget,
stateful estimators measured adapted, several sweeps side by side."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import gvbench
import gvbench.estimators as E
from gvbench.cli import main
from gvbench.estimators import registry
from gvbench.harness import read
from gvbench.harness.compare import best_at_budget, cost_points, differences, frontier, holm
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


@pytest.mark.parametrize(
    "name",
    [n for n, i in E.available().items() if not i.binary_only and i.variable == "categorical"],
)
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
    assert "different problems (task_config.theta: [[0.0, 1.0, 2.0]] vs [[0.6," in message
    assert "\n" not in message
    assert main(["plot", "--frontier", str(tmp_path / "a.nc"), str(tmp_path / "other.nc")]) == 0
    assert main(["compare", "--frontier", str(tmp_path / "a.nc"), str(tmp_path / "other.nc")]) == 0
    assert "best at each budget" in capsys.readouterr().out


def test_holm_adjusts_the_family_and_skips_comparisons_not_made():
    adjusted = holm([0.01, np.nan, 0.04, 0.03])
    # Sorted 0.01, 0.03, 0.04 over a family of three: 0.03, 0.06, then max(0.06, 0.04).
    np.testing.assert_allclose(adjusted, [0.03, np.nan, 0.06, 0.06])
    assert (holm([0.5, 0.9]) <= 1).all()


def points_table(variances, ses, cost=1.0):
    names = [f"E{i}" for i in range(len(variances))]
    return pd.DataFrame(
        {
            "tau": 1.0,
            "batch_size": 1,
            "estimator": names,
            "k": 1,
            "point": names,
            "unbiased": True,
            "cost": cost,
            "variance": variances,
            "variance_se": ses,
            "bias2": 0.0,
            "bias2_se": 0.0,
        }
    )


def test_a_winner_beats_every_other_at_the_family_error():
    # E0 beats E1 by 5 SE but E2 by 3.3 only: p = 2·Φ(−3.3) = 9.7e-4, decided alone at 0.001.
    # Two such rows are a family of two: Holm asks 5e-4 of the first, and neither is decided.
    row = points_table([1.0, 1.0 + 5 * np.sqrt(2), 1.0 + 3.3 * np.sqrt(2)], [1.0] * 3)
    alone = best_at_budget(row)
    assert alone["p"].iloc[0] == pytest.approx(2 * stats.norm.sf(3.3))
    assert list(alone["winner"]) == ["E0"]
    twice = best_at_budget(pd.concat([row, row.assign(tau=2.0)], ignore_index=True))
    assert list(twice["winner"]) == ["", ""]
    assert list(twice["best"]) == ["E0", "E0"]  # the best is still named, not declared


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    grid = {**GRID, "estimators": ["st_gumbel_softmax", "reinforce"], "reps": 200, "k": [2]}
    for machine, seed in (("a", 0), ("b", 1)):
        (folder / machine).mkdir()
        gvbench.sweep(TASK, path=folder / machine / "toy.nc", seed=seed, **grid)
    gvbench.sweep(TASK, path=folder / "seeds.nc", seed=[0, 1], **grid)
    return folder


def test_two_machines_files_of_one_name_are_both_shown(files, capsys):
    assert main(["compare", str(files / "a" / "toy.nc"), str(files / "b" / "toy.nc")]) == 0
    out = capsys.readouterr().out
    assert "variance [" in out and out.count("toy]") >= 2 and "p_holm" in out and "differs" in out


def test_the_same_file_twice_is_refused(files):
    with pytest.raises(SystemExit, match="is given twice"):
        main(["compare", str(files / "seeds.nc"), str(files / "seeds.nc")])


def test_a_sweep_over_seeds_is_compared_seed_by_seed(files, capsys):
    assert main(["compare", str(files / "seeds.nc")]) == 0
    frontier_table = capsys.readouterr().out
    assert "seed" in frontier_table
    table = differences({"seeds": read(files / "seeds.nc"), "one": read(files / "a" / "toy.nc")})
    assert sorted(set(table["seed"])) == [0, 1]
    assert (table.loc[table["seed"] == 0, "variance one − seeds"] == 0).all()  # seed 0 is a
    assert main(["plot", "--frontier", str(files / "seeds.nc"), "--out-dir", str(files)]) == 0


def test_a_file_whose_cells_all_failed_is_one_line_for_compare_and_frontier(tmp_path):
    class Failing(Toy):
        name = "failing-toy"

        def loss(self, params, sample, batch_size):
            return super().loss(params, sample, batch_size) * float("nan")

    path = tmp_path / "failed.nc"
    with pytest.warns(UserWarning, match="failed"):
        gvbench.sweep(Failing(theta=[0.6, -0.2, 0.1]), path=path, **GRID)
    for argv in (["compare", str(path)], ["plot", "--frontier", str(path)]):
        with pytest.raises(SystemExit, match="no finished cell among its") as refused:
            main(argv)
        assert "\n" not in str(refused.value)
