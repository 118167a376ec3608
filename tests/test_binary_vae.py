"""DisARM's binary VAE and sigmoid belief nets: the models' ELBO against a hand computation,
the optimiser's split, the tiny preset end to end, DisARM's variance below ARM's, and the
leaderboard's columns."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr

import gvbench.estimators as E
from gvbench.experiments.binary_vae import leaderboard
from gvbench.experiments.binary_vae.config import BinaryVAEConfig
from gvbench.experiments.binary_vae.experiment import BINARY_VAE
from gvbench.experiments.binary_vae.model import (
    LATENT,
    PIXELS,
    BinaryLatentModel,
    importance_weighted_nll,
    negative_elbo,
)
from gvbench.experiments.binary_vae.presets import LINEAR, NONLINEAR, PRESETS, SBN
from gvbench.harness.draws import gradient_draws
from gvbench.leaderboard.column import Column
from gvbench.training import SGD, Adam


def _fixed_sampler(latents: list[torch.Tensor]):
    """Returns the given binary latents, one per call, as arity-2 one-hots."""
    calls = iter(latents)

    def sample(logits, *, dim=-1):
        assert logits.shape[-1] == 2 and torch.equal(
            logits[..., 0], torch.zeros_like(logits[..., 0])
        )
        z = next(calls)
        return torch.stack([1 - z, z], -1)

    return sample


def _log_bernoulli(logits: np.ndarray, value: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-logits))
    return (value * np.log(p) + (1 - value) * np.log(1 - p)).sum(-1)


def _weights(model: BinaryLatentModel) -> dict[str, np.ndarray]:
    return {n: p.detach().double().numpy() for n, p in model.state_dict().items()}


@pytest.mark.parametrize("variant,layers", [("linear", 1), ("sbn", 2)])
def test_elbo_matches_a_hand_computation(variant: str, layers: int) -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.rand(PIXELS, generator=g) * 0.5
    model = BinaryLatentModel(variant, layers, mean, seed=3)
    with torch.no_grad():
        model.prior.copy_(torch.randn(LATENT, generator=g))
    x = torch.bernoulli(torch.full((3, PIXELS), 0.3), generator=g)
    z = [torch.bernoulli(torch.full((3, LATENT), 0.5), generator=g) for _ in range(layers)]
    terms = model(x, sample=_fixed_sampler(z))
    w, xs, zs = _weights(model), x.double().numpy(), [v.double().numpy() for v in z]

    def affine(name: str, inputs: np.ndarray) -> np.ndarray:
        return inputs @ w[f"{name}.0.weight"].T + w[f"{name}.0.bias"]

    # q(z1 | x) reads x − mean; q(z2 | z1) reads z1; p(x | z1) reads 2 z1 − 1; p(z1 | z2) z2.
    log_q = _log_bernoulli(affine("encoder.0", xs - w["mean"]), zs[0])
    log_p = _log_bernoulli(affine("decoder.0", 2 * zs[0] - 1), xs)
    if layers == 2:
        log_q += _log_bernoulli(affine("encoder.1", zs[0]), zs[1])
        log_p += _log_bernoulli(affine("decoder.1", zs[1]), zs[0])
    log_prior = _log_bernoulli(np.broadcast_to(w["prior"], zs[-1].shape), zs[-1])
    expected = log_q - log_p - log_prior
    np.testing.assert_allclose(negative_elbo(terms).detach().double().numpy(), expected, rtol=1e-5)
    # The pixels' bias starts at the logit of the clipped training mean (DisARM's launcher).
    clipped = np.clip(mean.double().numpy(), 0.001, 0.999)
    np.testing.assert_allclose(w["decoder.0.0.bias"], np.log(clipped / (1 - clipped)), atol=1e-6)


def test_model_shapes() -> None:
    mean = torch.full((PIXELS,), 0.2)
    shapes = {
        ("linear", 1): {"encoder.0.0.weight": (200, 784), "decoder.0.0.weight": (784, 200)},
        ("nonlinear", 1): {
            "encoder.0.0.weight": (200, 784),
            "encoder.0.4.weight": (200, 200),
            "decoder.0.0.weight": (200, 200),
            "decoder.0.4.weight": (784, 200),
        },
        ("sbn", 4): {"encoder.3.0.weight": (200, 200), "decoder.3.0.weight": (200, 200)},
    }
    for (variant, layers), expected in shapes.items():
        model = BinaryLatentModel(variant, layers, mean)
        params = {n: tuple(p.shape) for n, p in model.named_parameters()}
        assert params["prior"] == (LATENT,)
        assert expected.items() <= params.items()
        calls = []

        def sample(logits, *, dim=-1, calls=calls):
            calls.append(tuple(logits.shape))
            return E.categorical_one_hot(logits, dim, torch.Generator().manual_seed(0))

        terms = model(torch.zeros(5, PIXELS), sample=sample)
        assert calls == [(5, LATENT, 2)] * layers
        assert all(t.shape == (5,) for t in terms)


def test_importance_weighted_bound() -> None:
    model = BinaryLatentModel("linear", 1, torch.full((PIXELS,), 0.2), seed=0)
    x = torch.bernoulli(torch.full((40, PIXELS), 0.2), generator=torch.Generator().manual_seed(0))
    one = importance_weighted_nll(model, x, 1, torch.Generator().manual_seed(5))
    sample = BINARY_VAE.evaluation_sampler(torch.Generator().manual_seed(5))
    single = negative_elbo(model(x, sample=sample)).double()
    torch.testing.assert_close(one, single)
    # More samples: a tighter bound, by far more than its noise here.
    many = importance_weighted_nll(model, x, 50, torch.Generator().manual_seed(5))
    assert float(many.mean()) < float(one.mean()) - 1.0


def test_prior_by_sgd_and_networks_by_adam(tmp_path) -> None:
    config = BinaryVAEConfig(steps=1, eval_every=1, variance_every=0, iw_samples=1)
    optimizer = BINARY_VAE.optimizer(config)
    assert optimizer.max_norm is None
    assert optimizer.rule("prior") == SGD(1e-2, 0.0)
    assert optimizer.rule("encoder.0.0.weight") == Adam(1e-4, eps=1e-7)
    assert optimizer.rule("decoder.0.0.bias") == Adam(1e-4, eps=1e-7)
    before = {n: p.detach().clone() for n, p in BINARY_VAE.model(config).named_parameters()}
    BINARY_VAE.train(config, out_dir=tmp_path, final_checkpoints=[tmp_path / "final.pt"])
    after = torch.load(tmp_path / "final.pt", weights_only=True)["params"]
    # Adam's first step moves a coordinate by lr · g / (|g| + ε): at most lr.
    for name in before:
        step = (after[name] - before[name]).abs()
        if name == "prior":
            # SGD at 1e-2: the gradient at logits 0 is the mean of σ(0) − z over the 50
            # examples' two DisARM draws, a multiple of 1/100, so every step is a multiple of
            # 1e-4, and some larger than any first step of Adam at 1e-4.
            units = step.double() / 1e-4
            torch.testing.assert_close(units, units.round(), atol=1e-3, rtol=0)
            assert float(step.max()) > 1.5e-4
        else:
            rounding = torch.finfo(torch.float32).eps * after[name].abs()  # of θ − Δ
            assert bool((step <= 1e-4 * (1 + 1e-6) + rounding).all())
            assert float(step.max()) > 0.9e-4


def test_disarm_has_lower_variance_than_arm() -> None:
    """DisARM is ARM conditioned on the pair (b, b̃) (Dong et al. 2020, §3): with the same
    uniforms its draws are those of ARM with noise removed, so the paired difference of the
    two trace variances (per-draw terms, one seed) is positive by many SEs."""
    config = BinaryVAEConfig()
    splits, _ = BINARY_VAE.data(config)
    task = BINARY_VAE.module_task(BINARY_VAE.model(config), [splits["valid"][0][:10]], config)
    draws = {
        name: gradient_draws(task, E.get(name), 40, 5, torch.Generator().manual_seed(0)).double()
        for name in ("disarm", "arm")
    }
    assert draws["arm"].shape[1] == 784 * 200 + 200  # the encoder's parameters alone

    def terms(d: torch.Tensor) -> torch.Tensor:
        return ((d - d.mean(0)) ** 2).sum(1) * len(d) / (len(d) - 1)

    difference = terms(draws["arm"]) - terms(draws["disarm"])
    se = float(difference.std()) / math.sqrt(len(difference))
    assert float(difference.mean()) > 5 * se


def test_tiny_preset_end_to_end(tmp_path) -> None:
    summary = BINARY_VAE.run_preset("tiny", tmp_path)
    assert (tmp_path / "tiny.nc").is_file()
    assert (summary.sizes["model"], summary.sizes["run"], summary.sizes["seed"]) == (1, 2, 2)
    assert list(summary["run"].values) == ["DisARM", "REINFORCE"]
    bound = summary["test_iw_nll"].values
    assert np.isfinite(bound).all() and (bound > 0).all()
    assert not summary["diverged"].values.any()
    assert np.isfinite(summary["gradient_variance"].sel(step=4).values).all()
    tables = BINARY_VAE.summary_table(summary)
    assert len(tables) == 2 and all(" ± " in str(t.iloc[0, 0]) for t in tables.values())


def test_leaderboard_columns_follow_the_preset() -> None:
    # A study without the preset gives no column (gvbench.study.Study.leaderboard); a preset
    # gives a column per model it trains (cpu: no sigmoid belief net).
    assert BINARY_VAE.leaderboard("no_such_preset") == ()
    assert [c.name for c in BINARY_VAE.leaderboard("tiny")] == ["binary_vae_linear"]
    cpu = ["binary_vae_linear", "binary_vae_nonlinear"]
    assert [c.name for c in BINARY_VAE.leaderboard("cpu")] == cpu


def test_leaderboard_columns_are_well_formed(tmp_path, monkeypatch) -> None:
    every_model = dataclasses.replace(PRESETS["tiny"], models=(LINEAR, NONLINEAR, SBN))
    columns = leaderboard.columns(BINARY_VAE, every_model)
    assert [c.name for c in columns] == ["binary_vae_linear", "binary_vae_nonlinear", "sbn"]
    for column in columns:
        assert isinstance(column, Column) and column.gradients and column.training
        assert column.gradients.task.keywords["train_steps"] == 4
        assert column.gradients.reference_reps == 16
        training = column.training
        assert training.momentum is None and training.lr[0] < 1e-4 < training.lr[1]
        assert training.base.steps == 4 and training.base.variance_every == 0
        assert training.outcome == "test_iw_nll" and not training.outcome_higher_is_better
        for claim in column.claims:
            assert {claim.better, claim.worse} <= set(E.available())
            if column.name == "sbn":  # sequential choices: DisARM and ARM do not apply
                assert E.info(claim.better).sequential and E.info(claim.worse).sequential
    assert columns[2].training.base.layers == 4
    monkeypatch.chdir(tmp_path)  # the checkpoint is trained once, under results/
    task = columns[2].gradients.task()
    assert task.arity == 2 and task.sequential_choices
    assert (task.config()["model"], task.config()["layers"]) == ("sbn", 4)
    assert all(name.startswith("encoder.") for name in task.parameters())
    assert any(c.better == "disarm" and c.worse == "arm" for c in columns[0].claims)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="model must be one of linear, nonlinear, sbn"):
        BinaryVAEConfig(model="conv")
    with pytest.raises(ValueError, match="layers >= 2"):
        BinaryVAEConfig(model="sbn", layers=1)
    with pytest.raises(ValueError, match="one stochastic layer"):
        BinaryVAEConfig(model="linear", layers=3)
    with pytest.raises(ValueError, match="estimator disarm needs every choice's logits"):
        BinaryVAEConfig(model="sbn", layers=2, estimator="disarm")
    with pytest.raises(ValueError, match="prior_lr must be a number > 0"):
        BinaryVAEConfig(prior_lr=0.0)
    with pytest.raises(ValueError, match="dataset must be one of mnist, binarized_mnist"):
        BinaryVAEConfig(dataset="cifar")


def test_summary_se_counts_only_finite_seeds() -> None:
    # Seeds 100, 102 and a diverged one: SE = sd(100, 102) / sqrt(2) = sqrt(2) / sqrt(2) = 1.
    values = np.array([[[100.0, 102.0, np.nan]]])
    summary = xr.Dataset(
        {
            "test_iw_nll": (("model", "run", "seed"), values),
            "gradient_variance": (("model", "run", "seed"), values),
        },
        coords={"model": ["linear"], "run": ["DisARM"], "seed": [0, 1, 2]},
    )
    for table in BINARY_VAE.summary_table(summary).values():
        assert table.loc["DisARM", "linear"] == "101 ± 1"


def test_the_paper_preset_trains_the_layerwise_forms_on_the_belief_net_only() -> None:
    from gvbench.experiments.binary_vae.experiment import preset_configs
    from gvbench.study import PresetRun

    configs = preset_configs(PRESETS["paper"], range(1), PresetRun(progress=False))
    layerwise = {(model, config.estimator) for (model, _, _), config in configs.items()}
    assert {("sbn-4", "disarm_layerwise"), ("sbn-4", "arm_layerwise")} <= layerwise
    assert not {e for m, e in layerwise if m != "sbn-4" and e.endswith("_layerwise")}
    assert ("sbn-4", "disarm") not in layerwise  # its choices are sequential
