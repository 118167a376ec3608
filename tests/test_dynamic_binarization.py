"""Dynamic binarization (DisARM's and the coupled estimators' ``dynamic_mnist``): a run's
batch transform draws a fresh binarization of every training batch from a generator of the
run's own, which leaves its data order and samples as they were, resumes bit for bit, and
gives the same numbers in a stack as alone; runs without one keep every number they had."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from gvbench.experiments.binary_vae.config import BinaryVAEConfig, preset_config
from gvbench.experiments.binary_vae.experiment import BINARY_VAE, preset_configs
from gvbench.experiments.binary_vae.presets import LINEAR
from gvbench.experiments.binary_vae.presets import PRESETS as BINARY_PRESETS
from gvbench.experiments.categorical_vae.experiment import CATEGORICAL_VAE, TrainConfig
from gvbench.experiments.categorical_vae.presets import PRESETS as CATEGORICAL_PRESETS
from gvbench.experiments.categorical_vae.summary import training_configs
from gvbench.experiments.images import binarized_batch, load_images
from gvbench.study import PresetRun
from gvbench.training import CheckpointError, loop, stacked
from gvbench.training.runs import RunState, batch_transform_seed

BINARY_RUN = dict(steps=6, eval_every=3, variance_every=0, iw_samples=3)
BINARY_RUN |= dict(valid_iw_samples=2, dynamic_binarization=True)
COUPLED_RUN = dict(estimator="rloo", k=2, hidden=16, batch_size=8, steps=6, eval_every=3)
COUPLED_RUN |= dict(test_samples=3, dynamic_binarization=True)


def assert_same_run(a: xr.Dataset, b: xr.Dataset) -> None:
    """Curves, figures and the best parameters equal bit for bit."""
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    for key, value in a.attrs.items():
        if key.startswith(("best_", "test_", "initial_", "final_", "valid_")):
            assert value == b.attrs[key], key


def checkpoint(out, config) -> dict:
    return torch.load(out / config.name() / "checkpoint.pt", weights_only=False)


def run_state(config: BinaryVAEConfig, tmp_path) -> RunState:
    (run,) = BINARY_VAE._runs([config], [BINARY_VAE.data(config)], tmp_path)
    return RunState(run, BINARY_VAE._steps(config))


def test_each_draw_of_a_batch_is_a_fresh_binarization_whose_mean_is_the_grey_levels(tmp_path):
    config = BinaryVAEConfig(**BINARY_RUN)
    state = run_state(config, tmp_path)
    # The batch at step 0 indexes the same images each time: only the binarization is drawn.
    first = state.batch(config.batch_size)[0]
    index = state.progress.order[1][: config.batch_size]  # type: ignore[index]
    grey = state.run.train[0][index].double()
    draws = torch.stack([first] + [state.batch(config.batch_size)[0] for _ in range(399)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(draws[0], draws[1])
    mean = draws.double().mean(0)
    certain = (grey == 0) | (grey == 1)
    assert torch.equal(mean[certain], grey[certain])
    p = grey[~certain]
    z = (mean[~certain] - p) / torch.sqrt(p * (1 - p) / len(draws))
    # Bonferroni over the ~10⁴ uncertain pixels: 5.5σ each leaves a false alarm below 10⁻³;
    # thresholding at 0.5 (a static binarization's stand-in) puts grey 0.3 at z ≈ −44.
    assert z.abs().max() < 5.5, float(z.abs().max())
    assert len(p) > 1000


def first_batch(grey: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """A run's first training batch rebuilt apart from the loop: its first epoch's order from
    ``seed``, then one Bernoulli draw of those images from the run's batch-transform seed."""
    index = torch.randperm(len(grey), generator=torch.Generator().manual_seed(seed))
    noise = torch.Generator().manual_seed(batch_transform_seed(seed))
    (batch,) = binarized_batch((grey[index[:batch_size]],), noise)
    return batch


def test_the_transform_draws_from_its_own_generator_and_moves_no_other_stream(tmp_path):
    dynamic = run_state(BinaryVAEConfig(**BINARY_RUN), tmp_path / "dynamic")
    static = run_state(BinaryVAEConfig(**{**BINARY_RUN, "dynamic_binarization": False}), tmp_path)
    assert static.transform_generator is None
    drawn = []
    for step in range(3):
        dynamic.progress.step = static.progress.step = step
        drawn.append(dynamic.batch(50)[0]), static.batch(50)
    # The data order's and samples' generator is where it is without the transform.
    assert torch.equal(dynamic.generator.get_state(), static.generator.get_state())
    assert torch.equal(dynamic.progress.order[1], static.progress.order[1])  # type: ignore[index]
    assert torch.equal(drawn[0], first_batch(dynamic.run.train[0], 0, 50))
    assert batch_transform_seed(0) != batch_transform_seed(1)


def test_a_dynamic_run_trains_on_binary_batches_and_is_scored_on_the_seed_s_draw(
    tmp_path, monkeypatch
):
    config = BinaryVAEConfig(**BINARY_RUN)
    static = dataclasses.replace(config, dynamic_binarization=False)
    splits, source = BINARY_VAE.data(config)
    fixed, _ = BINARY_VAE.data(static)
    grey = load_images("mnist", binarize="dynamic", seed=0)
    assert torch.equal(splits["train"][0], grey.train)
    for split in ("valid", "test"):
        assert torch.equal(splits[split][0], fixed[split][0])
    assert "a fresh binarization every batch" in source
    seen = []
    real = RunState.batch
    monkeypatch.setattr(RunState, "batch", lambda s, b: seen.append(real(s, b)) or seen[-1])
    dynamic_run = BINARY_VAE.train(config, out_dir=tmp_path, progress=False)
    assert len(seen) >= config.steps  # more where a step is undone and drawn again
    assert all(set(x.unique().tolist()) <= {0.0, 1.0} for (x,) in seen)
    monkeypatch.setattr(RunState, "batch", real)
    static_run = BINARY_VAE.train(static, out_dir=tmp_path, progress=False)
    # The same images and valid set; the centring mean is the grey levels' or the seed's draws'.
    assert dynamic_run.initial_valid_negative_elbo != static_run.initial_valid_negative_elbo
    assert not np.array_equal(dynamic_run.train_loss.values, static_run.train_loss.values)


def test_dynamic_runs_in_a_stack_are_the_runs_alone(tmp_path):
    configs = [BinaryVAEConfig(seed=seed, **BINARY_RUN) for seed in range(2)]
    group = BINARY_VAE.train(configs, out_dir=tmp_path / "group", progress=False)
    alone = BINARY_VAE.train(configs[1], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[1], alone)
    a, b = checkpoint(tmp_path / "group", configs[1]), checkpoint(tmp_path / "alone", configs[1])
    assert torch.equal(a["transform_generator"], b["transform_generator"])
    assert not np.array_equal(group[0].train_loss.values, group[1].train_loss.values)
    couples = [TrainConfig(seed=seed, **COUPLED_RUN) for seed in range(2)]
    together = CATEGORICAL_VAE.train(couples, out_dir=tmp_path / "group", progress=False)
    assert_same_run(together[1], CATEGORICAL_VAE.train(couples[1], tmp_path, progress=False))


def test_a_step_undone_to_grow_the_pool_draws_its_binarization_again(tmp_path, monkeypatch):
    config = BinaryVAEConfig(**BINARY_RUN)
    seen = []
    real = RunState.batch
    monkeypatch.setattr(RunState, "batch", lambda s, b: seen.append(real(s, b)) or seen[-1])
    grown = BINARY_VAE.train(config, out_dir=tmp_path / "grown", progress=False)
    monkeypatch.setattr(RunState, "batch", real)
    pool = checkpoint(tmp_path / "grown", config)["state"]["data"]["pool"]
    assert pool > stacked.INITIAL_POOL  # the first step ran out of its pool and was undone
    # The undone step's batch, drawn again, is the binarization it first drew.
    grey = BINARY_VAE.data(config)[0]["train"][0]
    assert len(seen) == config.steps + 1
    assert torch.equal(seen[0][0], first_batch(grey, 0, config.batch_size))
    assert torch.equal(seen[1][0], seen[0][0])
    # A run whose pool is that size from the start undoes nothing, and is the same run.
    monkeypatch.setattr(stacked, "INITIAL_POOL", pool)
    monkeypatch.setattr(loop, "INITIAL_POOL", pool)
    ample = BINARY_VAE.train(config, out_dir=tmp_path / "ample", progress=False)
    assert "pool" not in checkpoint(tmp_path / "ample", config)["state"]["data"]
    assert_same_run(grown, ample)
    a, b = checkpoint(tmp_path / "grown", config), checkpoint(tmp_path / "ample", config)
    for key in ("generator", "transform_generator"):
        assert torch.equal(a[key], b[key]), key


def test_a_killed_dynamic_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    configs = [BinaryVAEConfig(seed=seed, **BINARY_RUN) for seed in range(2)]
    fresh = BINARY_VAE.train(configs, out_dir=tmp_path / "fresh", progress=False)
    real, calls = loop.scores, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # initial scores, step 3, then killed at step 6
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "scores", killed)
    with pytest.raises(KeyboardInterrupt):
        BINARY_VAE.train(configs, out_dir=tmp_path / "resumed", progress=False)
    saved = checkpoint(tmp_path / "resumed", configs[0])
    assert saved["state"]["step"] == 3 and "transform_generator" in saved
    monkeypatch.setattr(loop, "scores", real)
    resumed = BINARY_VAE.train(configs, out_dir=tmp_path / "resumed", progress=False)
    for a, b in zip(fresh, resumed, strict=True):
        assert_same_run(a, b)
    # A checkpoint without the transform's generator cannot resume such a run.
    path = tmp_path / "resumed" / configs[0].name() / "checkpoint.pt"
    saved = torch.load(path, weights_only=False)
    del saved["transform_generator"]
    torch.save(saved, path)
    with pytest.raises(CheckpointError, match="batch-transform generator"):
        run_state(configs[0], tmp_path / "resumed").resume()


def test_runs_binarized_once_keep_their_names_and_checkpoints(tmp_path):
    static = BinaryVAEConfig(**{**BINARY_RUN, "dynamic_binarization": False})
    assert "dynamic_binarization" not in static.as_dict()
    assert BinaryVAEConfig(**BINARY_RUN).name() != static.name()
    assert BINARY_VAE.batch_transform(static) is None
    assert BINARY_VAE.batch_transform(BinaryVAEConfig(**BINARY_RUN)) is binarized_batch
    BINARY_VAE.train(static, out_dir=tmp_path, progress=False)
    assert "transform_generator" not in checkpoint(tmp_path, static)
    # Nor does such a run resume from a checkpoint that holds one.
    path = tmp_path / static.name() / "checkpoint.pt"
    torch.save({**checkpoint(tmp_path, static), "transform_generator": torch.ones(3)}, path)
    with pytest.raises(CheckpointError, match="has no batch transform") as error:
        run_state(static, tmp_path).resume()
    assert "\n" not in str(error.value)
    coupled = TrainConfig(**{**COUPLED_RUN, "dynamic_binarization": False})
    assert "dynamic_binarization" not in coupled.as_dict()


def test_the_published_presets_binarize_dynamically_and_tiny_does_not():
    for name, preset in BINARY_PRESETS.items():
        assert preset.dynamic_binarization is (name != "tiny"), name
        configs = preset_configs(preset, range(1), PresetRun())
        assert {c.dynamic_binarization for c in configs.values()} == {name != "tiny"}
        base = preset_config(preset, *LINEAR[1:], "disarm", 1)
        assert base.dynamic_binarization is (name != "tiny")
    for name, preset in CATEGORICAL_PRESETS.items():
        assert not preset.reinmax.dynamic_binarization
        assert preset.coupled.dynamic_binarization is (name != "tiny"), name
        for (part, *_), config in training_configs(TrainConfig, preset).items():
            assert config.dynamic_binarization is (part == "coupled" and name != "tiny")


@pytest.mark.parametrize(
    "make",
    [
        lambda: BinaryVAEConfig(dataset="binarized_mnist", dynamic_binarization=True),
        lambda: TrainConfig(dataset="binarized_mnist", dynamic_binarization=True),
        lambda: TrainConfig(protocol="reinmax", dynamic_binarization=True),
    ],
    ids=["binary_vae-binarized_mnist", "coupled-binarized_mnist", "reinmax"],
)
def test_dynamic_binarization_without_intensities_is_refused(make):
    with pytest.raises(ValueError, match="dynamic_binarization") as error:
        make()
    assert "\n" not in str(error.value)
