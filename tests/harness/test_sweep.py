"""The harness on the toy task: statistics, determinism, resume, storage, errors."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch
import xarray as xr

import gvbench
import gvbench.estimators as E
from gvbench.harness import gradient_draws, gradient_metrics, process_pool, read, reference_gradient
from gvbench.harness.metrics import METRICS, Reference
from gvbench.harness.spec import SweepSpec
from gvbench.tasks import Toy
from tests.stats import Z

# The package exports the function `sweep`; the tests patch the module behind it.
sweep_module = importlib.import_module("gvbench.harness.sweep")
TASK = Toy(n=3, theta=[0.6, -0.2, 0.1])
METRIC_VARS = [*METRICS, *(f"{m}_se" for m in METRICS)]


def exact_moments(task, per_outcome):
    p = torch.softmax(task.theta[0], -1)
    mean = (p[:, None] * per_outcome).sum(0)
    return mean, float((p * ((per_outcome - mean) ** 2).sum(-1)).sum())


def test_reference_is_exact_for_the_toy():
    reference = reference_gradient(TASK, batch_size=4)
    assert reference.kind == "exact" and reference.count == 0
    p = torch.softmax(TASK.theta[0], -1)
    f = torch.stack(
        [(e - TASK.centre) @ TASK.q @ (e - TASK.centre) for e in torch.eye(3, dtype=torch.float64)]
    )
    np.testing.assert_allclose(
        reference.gradient, ((torch.diag(p) - torch.outer(p, p)) @ f).numpy(), rtol=1e-12
    )


def test_high_sample_reference_agrees_with_exact(monkeypatch):
    monkeypatch.setattr(Toy, "enumerable", lambda self, batch_size: False)
    estimate = reference_gradient(
        TASK, 1, reps=20_000, k=4, generator=torch.Generator().manual_seed(0)
    )
    monkeypatch.undo()
    exact = reference_gradient(TASK, 1)
    se = np.sqrt(estimate.variance / len(exact.gradient) / estimate.count)
    assert estimate.count == 20_000 and estimate.kind.startswith("rloo")
    assert (np.abs(estimate.gradient - exact.gradient) <= Z * se).all()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_harness_variance_covers_exact_straight_through_variance(batch_size):
    tau = 0.7
    s = torch.softmax(TASK.theta[0] / tau, -1)
    jacobian = (torch.diag(s) - torch.outer(s, s)) / tau
    upstream = 2 * (torch.eye(3, dtype=torch.float64) - TASK.centre) @ TASK.q
    _, variance = exact_moments(TASK, upstream @ jacobian)
    draws = gradient_draws(
        TASK,
        E.get("straight_through", tau=tau),
        20_000,
        batch_size,
        torch.Generator().manual_seed(1),
    )
    m = gradient_metrics(draws, reference_gradient(TASK, batch_size))
    # B examples with independent samples: the variance of their mean is V/B.
    assert abs(m["variance"] - variance / batch_size) <= Z * m["variance_se"]
    assert m["bias2"] > Z * m["bias2_se"]  # ST is biased on this task


def test_harness_variance_covers_exact_reinforce_variance():
    p = torch.softmax(TASK.theta[0], -1)
    f = torch.stack(
        [(e - TASK.centre) @ TASK.q @ (e - TASK.centre) for e in torch.eye(3, dtype=torch.float64)]
    )
    _mean, variance = exact_moments(
        TASK, (f - 0.5)[:, None] * (torch.eye(3, dtype=torch.float64) - p)
    )
    draws = gradient_draws(
        TASK, E.get("reinforce", baseline=0.5), 20_000, 1, torch.Generator().manual_seed(2)
    )
    m = gradient_metrics(draws, reference_gradient(TASK, 1))
    assert abs(m["variance"] - variance) <= Z * m["variance_se"]
    assert abs(m["bias2"]) <= Z * m["bias2_se"]


@pytest.fixture(scope="module")
def toy_sweep():
    return gvbench.sweep(
        TASK,
        estimators=[
            "st_gumbel_softmax",
            "gumbel_rao",
            "reinforce",
            "rloo",
            "gumbel_softmax",
            "foust_reconstruction",
        ],
        tau=[0.1, 0.5, 1.0],
        k=[1, 10, 100],
        reps=20_000,
        seed=3,
        progress=False,
    )


def test_sweep_layout(toy_sweep):
    ds = toy_sweep
    assert dict(ds.sizes) == {"estimator": 6, "tau": 3, "k": 3, "batch_size": 1}
    for name in [*METRIC_VARS, "status", "seconds"]:
        assert name in ds.data_vars
    for name in METRICS:
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"] == "1"
    assert ds.attrs["task"] == "toy" and '"n": 3' in ds.attrs["task_config"]
    for key in (
        "gvbench_version",
        "git_commit",
        "torch_version",
        "device",
        "dtype",
        "seed",
        "created",
    ):
        assert key in ds.attrs
    assert list(ds.label.values[:2]) == ["ST-GS", "GR-MCK"]


def test_not_applicable_cells_are_recorded(toy_sweep):
    status = toy_sweep.status
    assert (status.sel(estimator="rloo", k=1) == "not applicable: RLOO needs 2 <= k <= 65536").all()
    assert str(status.sel(estimator="foust_reconstruction").values.flat[0]).startswith(
        "not applicable: FouST (reconstruction) is binary-only"
    )
    assert np.isnan(toy_sweep.variance.sel(estimator="foust_reconstruction")).all()
    assert (status.sel(estimator="gumbel_rao") == "done").all()


def test_estimators_without_tau_or_k_are_broadcast(toy_sweep):
    reinforce = toy_sweep.variance.sel(estimator="reinforce")
    assert (reinforce == reinforce.isel(tau=0, k=0)).all()
    st_gs = toy_sweep.variance.sel(estimator="st_gumbel_softmax")
    assert (st_gs == st_gs.isel(k=0)).all() and not (st_gs == st_gs.isel(tau=0)).all()


def test_unbiased_estimators_have_zero_bias2(toy_sweep):
    for name in ("reinforce", "rloo"):
        cells = toy_sweep.sel(estimator=name)
        done = cells.status == "done"
        assert done.any()
        assert ((np.abs(cells.bias2) <= Z * cells.bias2_se) | ~done).all()


def test_st_gs_is_biased_at_tau_one(toy_sweep):
    cell = toy_sweep.sel(estimator="st_gumbel_softmax", tau=1.0, k=1, batch_size=1)
    assert cell.bias2 > Z * cell.bias2_se


def test_gumbel_rao_agrees_with_st_gs_and_reduces_variance(toy_sweep):
    gr = toy_sweep.sel(estimator="gumbel_rao", batch_size=1)
    st = toy_sweep.sel(estimator="st_gumbel_softmax", batch_size=1, k=1)
    gr1 = gr.sel(k=1)
    assert (
        np.abs(gr1.variance - st.variance) <= Z * np.hypot(gr1.variance_se, st.variance_se)
    ).all()
    for k in (10, 100):
        cells = gr.sel(k=k)
        assert (
            cells.variance <= st.variance + Z * np.hypot(cells.variance_se, st.variance_se)
        ).all()
        assert (np.abs(cells.bias2 - st.bias2) <= Z * np.hypot(cells.bias2_se, st.bias2_se)).all()
    assert gr.sel(k=100, tau=0.1).variance < st.sel(tau=0.1).variance / 2


def _metrics(ds):
    """The computed numbers and statuses (timings and creation times differ run to run)."""
    return ds[[*METRIC_VARS, "status"]]


def test_same_seed_same_results_in_process_and_in_a_process_pool(tmp_path):
    grid = dict(
        estimators=["st_gumbel_softmax", "gumbel_rao", "rloo"],
        tau=[0.1, 1.0],
        k=[2, 10],
        reps=500,
        seed=7,
        progress=False,
    )
    in_process = gvbench.sweep(TASK, **grid)
    with process_pool(2) as pool:
        pooled = gvbench.sweep(TASK, executor=pool, **grid)
    xr.testing.assert_equal(_metrics(in_process), _metrics(pooled))
    other = gvbench.sweep(TASK, **{**grid, "seed": 8})
    assert not _metrics(other).equals(_metrics(in_process))


def test_a_killed_sweep_resumes_with_identical_numbers(tmp_path, monkeypatch):
    path = tmp_path / "toy.nc"
    grid = dict(
        estimators=["st_gumbel_softmax", "gumbel_rao", "reinforce"],
        tau=[0.1, 1.0],
        k=[1, 10],
        reps=300,
        seed=1,
        progress=False,
    )
    real_run_cell = sweep_module.run_cell
    calls = []

    def dies_after_three(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C or a kill looks like mid-sweep
        calls.append(args[1])
        return real_run_cell(*args)

    monkeypatch.setattr(sweep_module, "run_cell", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        gvbench.sweep(TASK, path=path, **grid)
    partial = read(path)
    assert (partial.status == "done").sum() > 0 and (partial.status == "pending").sum() > 0

    resumed_cells = []
    monkeypatch.setattr(
        sweep_module, "run_cell", lambda *a: resumed_cells.append(a[1]) or real_run_cell(*a)
    )
    resumed = gvbench.sweep(TASK, path=path, **grid)
    assert set(resumed_cells).isdisjoint(calls) and len(resumed_cells) + len(calls) == 7
    fresh = gvbench.sweep(TASK, **grid)
    xr.testing.assert_equal(_metrics(resumed), _metrics(fresh))
    done = partial.status == "done"
    xr.testing.assert_equal(_metrics(partial).where(done), _metrics(resumed).where(done))
    xr.testing.assert_equal(_metrics(read(path)), _metrics(fresh))


def test_extending_a_grid_computes_only_new_cells(tmp_path, monkeypatch):
    path = tmp_path / "toy.nc"
    grid = dict(estimators=["st_gumbel_softmax"], k=[1], reps=200, seed=0, progress=False)
    gvbench.sweep(TASK, path=path, tau=[0.5], **grid)
    cells = []
    real_run_cell = sweep_module.run_cell
    monkeypatch.setattr(
        sweep_module, "run_cell", lambda *a: cells.append(a[1]) or real_run_cell(*a)
    )
    merged = gvbench.sweep(TASK, path=path, tau=[1.0], **grid)
    assert [c.tau for c in cells] == [1.0]
    assert list(merged.tau.values) == [0.5, 1.0] and (merged.status == "done").all()


def test_resume_refuses_a_different_experiment(tmp_path):
    path = tmp_path / "toy.nc"
    gvbench.sweep(TASK, estimators=["reinforce"], tau=1.0, k=1, reps=50, progress=False, path=path)
    with pytest.raises(ValueError, match=r"different experiment.*reps"):
        gvbench.sweep(
            TASK, estimators=["reinforce"], tau=1.0, k=1, reps=60, progress=False, path=path
        )


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (dict(tau=[0.5, 0.0]), "tau must be a finite number > 0"),
        (dict(k=[0]), "k must be an integer >= 1"),
        (dict(batch_size=[0]), "batch_size must be an integer >= 1"),
        (dict(reps=3), "reps must be an integer >= 4"),
        (dict(estimators=["nope"]), "unknown estimator 'nope'"),
    ],
)
def test_bad_grids_fail_before_any_work(tmp_path, grid, message):
    path = tmp_path / "never.nc"
    with pytest.raises((ValueError, KeyError), match=message):
        gvbench.sweep(TASK, path=path, progress=False, **grid)
    assert not path.exists()


def test_a_spec_is_canonical_and_frozen():
    spec = SweepSpec(
        "toy",
        ["reinforce", "st_gumbel_softmax", "reinforce"],
        tau=0.5,
        k=[10, 1, 10],
        batch_size=[4, 2],
        reps=50,
        seed=[3, 0, 3],
        reference_reps=None,
        max_warmup_seconds=60,
    )
    assert isinstance(spec.task, Toy)
    assert spec.estimators == ("reinforce", "st_gumbel_softmax")  # the order given, once each
    assert (spec.tau, spec.k, spec.batch_size, spec.seed) == ((0.5,), (1, 10), (2, 4), (0, 3))
    assert spec.seed_axis and spec.reference_reps == "auto"
    assert spec.max_warmup_seconds == 60.0 and isinstance(spec.max_warmup_seconds, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.reps = 10
    assert SweepSpec(TASK).estimators == tuple(
        name
        for name, entry in E.available().items()
        if entry.default and entry.variable == "categorical"  # the toy's
    )


def test_a_spec_keeps_a_single_seed_without_a_seed_axis():
    spec = SweepSpec(TASK, ["reinforce"], seed=7)
    assert spec.seed == (7,) and not spec.seed_axis
    # Rebuilt from its own canonical values (a one-seed tuple), it still has no seed axis.
    assert dataclasses.replace(spec, reps=100) == SweepSpec(TASK, ["reinforce"], reps=100, seed=7)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(task="nope"), KeyError, "unknown task 'nope'"),
        (dict(tau=[]), ValueError, "tau must not be empty"),
        (dict(seed=2**63), ValueError, r"seed must be an integer <= 9223372036854775807"),
        (dict(reference_reps=1), ValueError, "reference_reps must be an integer >= 2"),
        (dict(reference_k=1), ValueError, "reference_k must be an integer >= 2"),
        (dict(threads_per_cell=0), ValueError, "threads_per_cell must be an integer >= 1"),
        (dict(warmup=-1), ValueError, "warmup must be an integer >= 0"),
        (dict(max_warmup_seconds=0), ValueError, "max_warmup_seconds must be a number > 0"),
    ],
)
def test_a_bad_spec_names_the_argument_and_its_range(arguments, error, message):
    arguments = {"task": TASK, "estimators": ["reinforce"], **arguments}
    with pytest.raises(error, match=message):
        SweepSpec(**arguments)


class OneHotOnly(Toy):
    """The toy with a loss that only makes sense at one-hot inputs."""

    name = "one-hot-toy"
    relaxed_inputs = False


def test_relaxed_estimators_are_skipped_with_a_reason():
    ds = gvbench.sweep(
        OneHotOnly(),
        estimators=["gumbel_softmax", "straight_through"],
        tau=1.0,
        k=1,
        reps=20,
        progress=False,
    )
    assert str(ds.status.sel(estimator="gumbel_softmax").item()).startswith(
        "not applicable: GS feeds relaxed samples; the one-hot-toy task needs one-hot inputs"
    )
    assert ds.status.sel(estimator="straight_through").item() == "done"


def test_toy_task_validates_its_configuration():
    with pytest.raises(ValueError, match=r"n .* >= 2"):
        Toy(n=1)
    with pytest.raises(ValueError, match="theta must have m × n = 2 × 3 values"):
        Toy(n=3, m=2, theta=[0.0, 1.0, 2.0])
    assert Toy(n=4, m=2).theta.shape == (2, 4)


def test_a_sampled_reference_measures_its_spread_and_keeps_it(tmp_path, monkeypatch):
    # tr Σ_ref² and the SE of V_ref enter bias²'s SE: measured on the reference's own draws,
    # saved with it, and a reference saved before they were measured still loads.
    from gvbench.harness import reference as references

    monkeypatch.setattr(Toy, "enumerable", lambda self, batch_size: False)
    estimate = reference_gradient(TASK, 1, reps=4000, generator=torch.Generator().manual_seed(0))
    draws = gradient_draws(TASK, E.get("rloo", k=8), 4000, 1, torch.Generator().manual_seed(0))
    centred = draws.double().numpy() - draws.double().numpy().mean(0)
    covariance = centred.T @ centred / (len(centred) - 1)
    exact_square = float(np.trace(covariance @ covariance))
    # The mean of 1000 squared products of pair differences: its relative SE is about
    # √(2/1000) = 4.5% for near-Gaussian products, so 20% is 4.4 of them.
    assert estimate.covariance_square == pytest.approx(exact_square, rel=0.2)
    assert 0 < estimate.variance_se < estimate.variance
    path = tmp_path / "reference.npz"
    references.save(estimate, path, "id")
    loaded, why = references.load(path, "id")
    assert why is None and loaded.covariance_square == estimate.covariance_square
    assert loaded.variance_se == estimate.variance_se
    older = Reference(estimate.gradient, estimate.variance, estimate.count, estimate.kind)
    references.save(older, path, "id")
    loaded, why = references.load(path, "id")
    assert why is None and np.isnan(loaded.covariance_square)
    assert loaded.noise_square() == estimate.variance**2  # the bound any law obeys
