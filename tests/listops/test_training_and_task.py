"""ListOps training (learning, resuming) and the ListOps task in the harness."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xarray as xr

import gvbench
import gvbench.estimators as E
from gvbench.cli import main
from gvbench.listops.experiment import LISTOPS, TrainConfig
from tests.stats import Z

run_group = importlib.import_module("gvbench.training.loop")
train = LISTOPS.train


@pytest.mark.parametrize(("estimator", "k"), [("st_gumbel_softmax", 1), ("gumbel_rao", 10)])
def test_the_model_learns_on_the_small_setting(tmp_path, estimator, k):
    config = TrainConfig(
        estimator=estimator,
        tau=1.0,
        k=k,
        max_length=10,
        steps=1000,
        sizes=(2000, 300, 300),
        eval_every=250,
        variance_every=1000,
        seed=0,
    )
    curves = train(config, out_dir=tmp_path, progress=False)
    majority = curves.attrs["test_majority_accuracy"]
    assert curves.attrs["test_accuracy"] > majority + 0.2, (curves.attrs["test_accuracy"], majority)
    assert curves.train_loss.values[-1] < curves.train_loss.values[0]
    assert np.isfinite(curves.gradient_variance.sel(step=1000))
    assert (tmp_path / config.name() / "curves.nc").exists()
    for provenance in ("git_commit", "created", "gvbench_version", "torch_version"):
        assert provenance in curves.attrs, provenance


def test_an_interrupted_run_resumes_to_the_same_curves(tmp_path, monkeypatch):
    config = TrainConfig(
        max_length=8,
        d_hidden=8,
        steps=60,
        sizes=(200, 40, 40),
        eval_every=20,
        variance_every=40,
        variance_reps=4,
        seed=1,
    )
    fresh = train(config, out_dir=tmp_path / "fresh", progress=False)
    real_scores = run_group.scores
    evaluations = []

    def killed_at_the_second_evaluation(*args):
        if len(evaluations) == 2:  # the initial score, step 20, then killed at step 40
            raise KeyboardInterrupt
        evaluations.append(1)
        return real_scores(*args)

    monkeypatch.setattr(run_group, "scores", killed_at_the_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        train(config, out_dir=tmp_path / "resumed", progress=False)
    monkeypatch.setattr(run_group, "scores", real_scores)
    resumed = train(config, out_dir=tmp_path / "resumed", progress=False)
    xr.testing.assert_equal(fresh, resumed)
    assert fresh.attrs["test_accuracy"] == resumed.attrs["test_accuracy"]


def test_bad_training_configurations():
    with pytest.raises(ValueError, match="relaxed samples"):
        TrainConfig(estimator="gumbel_softmax")
    with pytest.raises(ValueError, match="tau must be"):
        TrainConfig(tau=0.0)
    with pytest.raises(KeyError, match="unknown estimator"):
        TrainConfig(estimator="nope")


@pytest.fixture(scope="module")
def small_task(tmp_path_factory):
    return LISTOPS.task(
        max_length=8,
        d_hidden=8,
        train_steps=40,
        checkpoint_dir=str(tmp_path_factory.mktemp("ckpt")),
    )


def test_every_applicable_estimator_runs_on_the_task(small_task):
    ds = gvbench.sweep(
        small_task, tau=1.0, k=[2], batch_size=4, reps=8, progress=False, reference_reps=64
    )
    status = ds.status.sel(tau=1.0, k=2, batch_size=4).to_series()
    assert "foust_reconstruction" not in status  # not in the default set
    for name, reason in status.items():
        info = E.info(name)
        if info.relaxed:  # the tree needs hard merges
            assert reason.startswith(f"not applicable: {info.label} feeds relaxed samples"), name
        elif info.binary_only:  # merges are over several candidates
            assert reason.startswith(f"not applicable: {info.label} is binary-only"), name
        elif not info.sequential:  # each merge's candidates depend on the merges before
            assert reason.startswith(f"not applicable: {info.label} needs every choice"), name
    others = status[
        [
            E.info(n).sequential and not (E.info(n).relaxed or E.info(n).binary_only)
            for n in status.index
        ]
    ]
    assert len(others) >= 6
    assert (others == "done").all(), others


def test_unbiased_estimators_have_zero_bias_against_the_high_sample_reference(small_task):
    ds = gvbench.sweep(
        small_task,
        estimators=["reinforce", "rloo"],
        tau=1.0,
        k=[4],
        batch_size=4,
        reps=400,
        progress=False,
        reference_reps=800,
    )
    cells = ds.sel(tau=1.0, k=4, batch_size=4)
    assert (np.abs(cells.bias2) <= Z * cells.bias2_se).all(), cells.bias2.values


def test_cli_trains_one_run(tmp_path, capsys):
    argv = [
        "train",
        "listops",
        "--max-length",
        "8",
        "--d-hidden",
        "8",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--variance-every",
        "0",
        "--no-progress",
        "--out-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert "test_accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown listops preset"):
        main(["train", "listops", "--preset", "nope", "--out-dir", str(tmp_path)])
