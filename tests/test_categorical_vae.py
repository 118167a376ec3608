"""The categorical VAE of the coupled-estimator and ReinMax protocols: its enumerated expected
loss and gradient against an independent enumeration and a Monte-Carlo mean, its exact harness
task, its tiny preset end to end, its leaderboard columns."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from gvbench.experiments.categorical_vae.enumeration import expected_negative_elbo
from gvbench.experiments.categorical_vae.experiment import CATEGORICAL_VAE
from gvbench.experiments.categorical_vae.model import (
    CategoricalMLPVAE,
    negative_elbo,
    reconstruction_loss,
)
from gvbench.experiments.categorical_vae.protocols import PROTOCOLS
from gvbench.harness import sweep
from gvbench.study import PresetRun
from gvbench.training.optimizers import SGD, Adam


def small_model(name: str, latents: int = 3, categories: int = 3) -> tuple:
    """A float64 model of the protocol with random weights and prior, and 3 images for it."""
    generator = torch.Generator().manual_seed(7)
    mean = torch.rand(784, generator=generator) * 0.6 + 0.2
    model = CategoricalMLPVAE(PROTOCOLS[name], latents, categories, (16, 8), mean, seed=3)
    model = model.double()
    if PROTOCOLS[name].learned_prior:
        with torch.no_grad():
            model.prior.copy_(torch.randn(latents, categories, generator=generator))
    x = mean.double().expand(3, -1)
    if PROTOCOLS[name].binarize:
        x = torch.bernoulli(x, generator=generator)
    return model, x


@pytest.mark.parametrize("reconstruction", [False, True])
@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_the_enumerated_loss_and_gradient_are_those_of_a_replayed_enumeration(name, reconstruction):
    model, x = small_model(name)
    ours = expected_negative_elbo(model, x, chunk=5, reconstruction=reconstruction)  # 27 codes
    # gvbench.estimators.exact replays the model's forward once per joint outcome
    loss = reconstruction_loss if reconstruction else negative_elbo
    replayed = E.exact(lambda sample: loss(model(x, sample=sample)))
    assert torch.allclose(ours, replayed, rtol=0, atol=1e-10)
    parameters = list(model.parameters())
    got = torch.autograd.grad(ours.sum(), parameters, allow_unused=True)
    want = torch.autograd.grad(replayed.sum(), parameters, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)  # the prior: unused by the reconstruction term
        assert g is None or torch.allclose(g, w, rtol=0, atol=1e-10)
    assert any(g is not None and float(g.abs().max()) > 1e-3 for g in got)  # not all zeros


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_the_enumerated_loss_is_the_monte_carlo_mean_within_its_se(name):
    model, x = small_model(name)
    draws = 10_000
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sample = lambda logits, *, dim=-1: E.categorical_one_hot(logits, dim, generator)  # noqa: E731
        losses = negative_elbo(model(x.repeat(draws, 1), sample=sample)).view(draws, len(x))
        expected = expected_negative_elbo(model, x)
    se = losses.std(0) / math.sqrt(draws)
    assert ((losses.mean(0) - expected).abs() < 5 * se).all()
    assert float(se.min()) > 0


def test_chunks_do_not_change_the_expected_loss_and_too_many_codes_are_refused():
    model, x = small_model("reinmax", latents=4, categories=8)
    whole = expected_negative_elbo(model, x)
    assert torch.allclose(expected_negative_elbo(model, x, chunk=1000), whole, rtol=1e-12)
    large, _ = small_model("coupled", latents=20, categories=10)
    with pytest.raises(ValueError, match=r"10\^20 = 1e\+20 codes"):
        expected_negative_elbo(large, x)
    with pytest.raises(ValueError, match="chunk must be a positive number"):
        expected_negative_elbo(model, x, chunk=0)


def test_the_8x4_task_is_exact_and_reinforce_is_unbiased_against_it():
    config = CATEGORICAL_VAE.Config(protocol="reinmax", hidden=16, estimator="reinforce")
    model = CATEGORICAL_VAE.model(config)
    (valid,) = CATEGORICAL_VAE.data(config)[0]["valid"]
    task = CATEGORICAL_VAE.module_task(model, [valid[:4]], config)
    assert task.exact(4)
    data = sweep(
        task,
        ["reinforce"],
        tau=1.3,
        k=1,
        batch_size=4,
        reps=2000,
        seed=0,
        warmup=20,
        progress=False,
    )
    # the exact reference has no noise of its own
    assert float(data["reference_variance"].max()) == 0.0
    bias2, se = (
        float(data[name].sel(estimator="reinforce").squeeze()) for name in ("bias2", "bias2_se")
    )
    assert abs(bias2) < 4 * se
    # a wrong exact gradient would show: REINFORCE's bias² would then be resolved from zero
    assert float(data["reference_norm2"].sel(estimator="reinforce").squeeze()) > 20 * se
    # The coupled protocol's 20 × 10 codes are not enumerated: its task samples a reference.
    coupled = CATEGORICAL_VAE.Config(protocol="coupled", hidden=16)
    task = CATEGORICAL_VAE.module_task(CATEGORICAL_VAE.model(coupled), [valid[:4]], coupled)
    assert not task.exact(4)


def test_the_tiny_preset_runs_end_to_end(tmp_path):
    summary = CATEGORICAL_VAE.run_preset("tiny", tmp_path, PresetRun(progress=False))
    assert (tmp_path / "tiny.nc").is_file()
    assert list(summary["protocol"].values) == ["coupled", "reinmax"]
    bound = summary["test_iw_nll"]
    for part in CATEGORICAL_VAE.preset("tiny").parts():
        trained = bound.sel(protocol=part.protocol, run=[label for label, _, _ in part.runs])
        assert bool(trained.notnull().all()) and float(trained.min()) > 0
    # ReinMax's analysis is against the exact gradient at every checkpoint; the coupled
    # protocol's against a sampled one
    reinmax = summary.sel(protocol="reinmax", checkpoint=[2, 4], estimator="reinmax")
    assert float(reinmax["reference_variance"].max()) == 0.0
    assert bool(reinmax["cosine"].notnull().all()) and bool(reinmax["relative_std"].notnull().all())
    coupled = summary.sel(protocol="coupled", checkpoint=3, estimator="reinforce")
    assert float(coupled["reference_variance"]) > 0
    tables = CATEGORICAL_VAE.summary_table(summary)
    assert len(tables["test −log p(x) bound, mean ± SE over seeds"]) == 4


def test_each_protocol_has_its_optimiser_and_bad_options_are_one_clear_error():
    coupled = CATEGORICAL_VAE.optimizer(CATEGORICAL_VAE.Config(protocol="coupled"))
    assert coupled.rules == (("prior", SGD(1e-2)), ("", Adam(1e-4)))
    assert coupled.max_norm is None
    reinmax = CATEGORICAL_VAE.Config(protocol="reinmax")
    assert (reinmax.latents, reinmax.categories, reinmax.batch_size) == (4, 8, 100)
    assert CATEGORICAL_VAE.optimizer(reinmax).rules == (("", Adam(5e-4)),)
    with pytest.raises(ValueError, match="protocol must be one of coupled, reinmax, got 'x'"):
        CATEGORICAL_VAE.Config(protocol="x")
    with pytest.raises(ValueError, match="dataset must be one of"):
        CATEGORICAL_VAE.Config(dataset="cifar")
    with pytest.raises(ValueError, match="binary latents"):
        CATEGORICAL_VAE.Config(estimator="disarm")


def test_the_leaderboard_columns_are_well_formed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tasks' checkpoints are cached under results/
    columns = CATEGORICAL_VAE.leaderboard("tiny")
    assert [c.name for c in columns] == ["categorical_vae_20x10", "categorical_vae_8x4"]
    assert CATEGORICAL_VAE.leaderboard("medium") == ()
    available = set(E.available())
    for column in columns:
        assert column.protocol and column.claims
        assert all({c.better, c.worse} <= available for c in column.claims)
        assert column.training.outcome in ("test_iw_nll", "test_negative_elbo")
        assert column.training.momentum is None
    exact = [c.gradients.task().exact(c.gradients.batch_size) for c in columns]
    assert exact == [False, True]


def test_the_8x4_column_measures_before_the_posterior_saturates(tmp_path):
    # At the cpu preset's last checkpoint (1,500 steps) the example's posterior is one-hot to
    # rounding: the exact gradient's norm is 1e-9 and every estimator's variance 0.
    part = CATEGORICAL_VAE.preset("cpu").reinmax
    assert part.gradient_check_steps == part.checkpoints[0] == 100
    (column,) = [c for c in CATEGORICAL_VAE.leaderboard("cpu") if c.name == "categorical_vae_8x4"]
    task = column.gradients.task(checkpoint_dir=str(tmp_path))
    exact = task.exact_gradient(column.gradients.batch_size)
    assert float(exact.norm()) > 0.1
    with pytest.raises(ValueError, match="leaderboard_checkpoint must be one of checkpoints"):
        dataclasses.replace(part, leaderboard_checkpoint=99)


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_preset_runs_are_each_configuration_once_and_train(preset, tmp_path):
    configs = CATEGORICAL_VAE.preset_runs(preset)
    parts = CATEGORICAL_VAE.preset(preset).parts()
    expected = [(p.protocol, estimator) for p in parts for _, estimator, _ in p.runs]
    assert [(c.protocol, c.estimator) for c in configs] == expected
    assert {c.seed for c in configs} == {0}
    assert all(c.steps == p.steps for c in configs for p in parts if p.protocol == c.protocol)
    # The cpu preset's runs train a few steps here, as the step-cost benchmark counts them.
    if preset == "cpu":
        configs = [
            dataclasses.replace(c, steps=2, eval_every=2, **CATEGORICAL_VAE.counting_overrides(c))
            for c in configs
        ]
    for config in configs:
        curves = CATEGORICAL_VAE.train(config, tmp_path, progress=False)
        assert bool(np.isfinite(curves["valid_negative_elbo"]).all())


def test_the_task_and_a_run_default_to_the_same_protocol():
    options = CATEGORICAL_VAE.Options()
    assert options.protocol == CATEGORICAL_VAE.Config().protocol == "coupled"
