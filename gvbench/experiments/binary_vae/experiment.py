"""The binary VAE and sigmoid belief nets of DisARM (Dong, Mnih & Tucker 2020, NeurIPS: its
VAE experiments, Figure 5; code: google-research ``disarm/binary/``), as a gvbench experiment.

The protocol, from the authors' launchers (``experiment_launcher_singlelayer.py``,
``experiment_launcher_multilayer.py``) where they and the paper's text differ:

- models: :mod:`~gvbench.experiments.binary_vae.model` (200 Bernoulli latents per layer,
  a learned Bernoulli prior), input centred by the training mean, the pixel bias at the
  logit of that mean (the launchers' ``demean_input`` and ``initialize_with_bias``);
- loss: the single-sample negative ELBO, :math:`-\\log p(x, z) + \\log q(z \\mid x)`, no
  analytic KL (``DiscreteVAE.call``);
- optimiser: torch's Adam at 1e-4 with the authors' ε = 1e-7 for the encoder and decoder
  (their Keras Adam adds its ε̂ to the uncorrected √v, torch adds ε after the bias
  correction, so the same ε is not the same update), plain SGD at 1e-2 for the prior's
  logits, no clipping, batch 50 (the launchers' flag defaults);
- data: MNIST binarized by Bernoulli draws (``dynamic_mnist``, the launchers' default) through
  :func:`gvbench.experiments.images.load_images`. Their pipeline (``disarm/binary/dataset.py``,
  ``get_dynamic_mnist_batch``) draws ``Bernoulli(image / 255)`` of every image each time it
  passes, training batches and evaluations alike. With ``dynamic_binarization`` (the ``cpu``
  and ``paper`` presets) a run does so for every training batch
  (:func:`~gvbench.experiments.images.binarized_batch` as its ``batch_transform``, from its
  own generator), and scores on one binarization of the valid and test images fixed by its
  seed (an unbiased estimate of the same expectation over draws, without the draw's noise
  between evaluations). Without it, every image is binarized once per seed
  (``binarize="static"``), as the VAE experiment of Paulus et al. does. The centring mean and
  the pixel bias are the training split's mean: of the grey levels under dynamic
  binarization (the expectation of the launchers' one-epoch mean of drawn batches,
  ``get_mean_from_iterator``), of the seed's draws otherwise;
- evaluation: the 100-sample importance-weighted bound on the test set (``evaluate`` with
  ``num_eval_samples`` = 100), mean ± SE over seeds, at each run's best checkpoint: the one,
  among the evaluations every ``eval_every`` steps, with the lowest single-sample validation
  negative ELBO (``selection`` = ``valid_negative_elbo``). Only the leaderboard's random
  search picks its trials on the validation bound (``valid_iw_nll``, ``valid_iw_samples``
  samples, at each trial's best checkpoint).

The authors' estimators differentiate the ELBO with the encoder's direct dependence of
:math:`\\log q` dropped (its expectation is zero); gvbench's estimators keep it. Both are
unbiased.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench import provenance
from gvbench.experiment import Experiment, Splits, TaskOptions
from gvbench.experiments.binary_vae import leaderboard as columns
from gvbench.experiments.binary_vae.config import BinaryVAEConfig, preset_config
from gvbench.experiments.binary_vae.model import (
    BinaryLatentModel,
    ELBOTerms,
    importance_weighted_nll,
    negative_elbo,
)
from gvbench.experiments.binary_vae.presets import PRESETS, Preset
from gvbench.experiments.images import (
    Binarization,
    ImageSplits,
    batch_binarization,
    load_images,
)
from gvbench.harness.store import write_atomic
from gvbench.leaderboard.column import Column
from gvbench.study import PresetRun
from gvbench.tasks.module import ModuleTask
from gvbench.training import SGD, Adam, Optimizer, train_grid
from gvbench.training.runs import BatchTransform

CURVES = ["gradient_variance", "gradient_variance_se", "valid_negative_elbo"]
# The authors' ε for torch's Adam (torch's default: 1e-8). Their Keras Adam adds its ε̂ to the
# uncorrected sqrt(v), torch adds ε after the bias correction: the same ε, a different update.
KERAS_EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class BinaryVAEOptions(TaskOptions):
    """The binary VAE task: the gradient of the negative ELBO w.r.t. the encoder's weights (the
    parameters the estimators differ in; DisARM's Figure 5 reports their variance). Without a
    checkpoint, a model is trained ``train_steps`` steps by DisARM (by RLOO with K = 2 for a
    sigmoid belief net, whose sequential choices DisARM here does not take)."""

    model: str = "linear"
    layers: int = 1
    dataset: str = "mnist"
    data_dir: str | None = None
    train_steps: int = 500
    batch_pool: int = 50


class BinaryVAE(Experiment[BinaryVAEConfig]):
    """DisARM's binary VAE (linear, nonlinear) and sigmoid belief nets."""

    name = "binary_vae"
    title = "the binary VAE and sigmoid belief nets (DisARM protocol)"
    Config = BinaryVAEConfig
    Options = BinaryVAEOptions
    presets = PRESETS
    order = 40
    selection = "valid_negative_elbo"
    selection_units = "nats"
    higher_is_better = False
    relaxed_inputs = True
    max_draws_per_pass = 64
    reference_reps = 4000

    def data(self, config: BinaryVAEConfig) -> tuple[Splits, str]:
        """The seed's binarization of every split; with ``dynamic_binarization``, the
        training split's intensities instead, binarized afresh at every batch."""
        images = _images(config)
        splits = {"train": images.train, "valid": images.valid, "test": images.test}
        source = images.source
        if config.dynamic_binarization:
            splits["train"] = _images(config, "dynamic").train
            source = f"{source}, valid and test only; train: a fresh binarization every batch"
        return {name: (x.flatten(1).float(),) for name, x in splits.items()}, source

    def batch_transform(self, config: BinaryVAEConfig) -> BatchTransform | None:
        return batch_binarization(config.dynamic_binarization)

    def model(self, config: BinaryVAEConfig) -> nn.Module:
        images = _images(config, "dynamic" if config.dynamic_binarization else "static")
        mean = images.mean.flatten().float()
        return BinaryLatentModel(config.model, config.layers, mean, seed=config.seed)

    def loss(self, output: ELBOTerms, x: Tensor) -> Tensor:
        return negative_elbo(output)

    def score(self, output: ELBOTerms, x: Tensor) -> Tensor:
        return negative_elbo(output)

    def arity(self, config: BinaryVAEConfig) -> int:
        return 2

    def optimizer(self, config: BinaryVAEConfig) -> Optimizer:
        """DisARM's: plain SGD for the prior's logits, Adam for the rest, no clipping."""
        return Optimizer(
            (
                ("prior", SGD(config.prior_lr, config.momentum)),
                ("", Adam(config.lr, eps=KERAS_EPSILON)),
            ),
            max_norm=None,
        )

    def measured_parameters(self) -> Callable[[str, Tensor], bool]:
        return _encoder

    def module_task(
        self,
        model: nn.Module,
        inputs: Any,
        run_config: BinaryVAEConfig,
        *,
        batched: bool | str = True,
        **options: Any,
    ) -> ModuleTask:
        """The encoder's gradient, during training as at a checkpoint; a sigmoid belief net's
        choices are sequential (a layer's logits depend on the samples below)."""
        defaults = {"sequential_choices": run_config.layers > 1, "parameters": _encoder}
        return super().module_task(
            model, inputs, run_config, batched=batched, **(defaults | options)
        )

    def brief_run(self, options: Mapping[str, Any]) -> BinaryVAEConfig:
        """DisARM's own training, for ``train_steps`` steps (RLOO, K = 2, where DisARM does
        not apply); the checkpoint's test bounds are never read, so they take one sample."""
        config = super().brief_run(options)
        sequential = config.layers > 1
        return dataclasses.replace(
            config,
            estimator="rloo" if sequential else "disarm",
            k=2 if sequential else 1,
            iw_samples=1,
            valid_iw_samples=1,
        )

    def test_figures(
        self, model: nn.Module, splits: Splits, config: BinaryVAEConfig
    ) -> dict[str, Any]:
        (test,), (valid,) = splits["test"], splits["valid"]
        generator = torch.Generator(device=test.device).manual_seed(config.seed)
        sample = self.evaluation_sampler(generator)
        with torch.no_grad():
            elbo = sum(
                float(negative_elbo(model(x, sample=sample)).double().sum())
                for x in test.split(1000)
            )
        test_bound = importance_weighted_nll(model, test, config.iw_samples, generator)  # type: ignore[arg-type]
        valid_bound = importance_weighted_nll(model, valid, config.valid_iw_samples, generator)  # type: ignore[arg-type]
        return {
            "test_negative_elbo": elbo / len(test),
            "test_iw_nll": float(test_bound.mean()),
            "valid_iw_nll": float(valid_bound.mean()),
            "iw_samples": config.iw_samples,
        }

    def run_preset(
        self, name: str, out_dir: str | Path = "results/binary_vae", run: PresetRun | None = None
    ) -> xr.Dataset:
        """Train every (model, estimator, seed) of preset ``name`` at DisARM's settings and
        write one summary, ``out_dir/NAME.nc``: the test bound and the encoder-gradient
        variance along training, over ``(model, run, seed)``. ``run.seed`` offsets the seeds;
        ``run.data_dir`` is the dataset's folder."""
        preset = self.preset(name)
        out_dir, run = Path(out_dir), run or PresetRun()
        trained = train_grid(
            self.train,
            preset_configs(preset, range(run.seed, run.seed + preset.seeds), run),
            ("model", "run", "seed"),
            {
                "test_iw_nll": (
                    f"test −log p(x), importance-weighted bound ({preset.iw_samples} samples)",
                    "nats",
                ),
                "test_negative_elbo": ("test negative ELBO, one sample", "nats"),
                "valid_iw_nll": (
                    f"validation bound ({preset.valid_iw_samples} samples)",
                    "nats",
                ),
                "best_valid_negative_elbo": ("best validation negative ELBO", "nats"),
                "initial_valid_negative_elbo": ("validation negative ELBO before training", "nats"),
            },
            out_dir / "runs",
            run.executor,
            curves=CURVES,
            progress=run.progress,
            desc=f"binary VAE {name} runs",
        )
        trained.attrs.update(
            experiment=self.name,
            preset=name,
            config=json.dumps(dataclasses.asdict(preset)),
            data=self.data(_first_config(preset, run))[1],
            **provenance.stamp(),
        )
        write_atomic(trained, out_dir / f"{name}.nc")
        return trained

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """The test bound and the last measured encoder-gradient variance, mean ± SE over seeds.

        A diverged seed (NaN) is left out of its cell: the mean, the SD and the count n of the
        SE = SD / sqrt(n) are all over the cell's finite seeds."""
        seeds = summary.sizes["seed"]
        tables = {}
        for variable, title in (
            ("test_iw_nll", "test −log p(x) bound, nats"),
            ("gradient_variance", "encoder-gradient variance at the last measurement"),
        ):
            values = summary[variable]
            if "step" in values.dims:  # measured at the last step of every run
                values = values.isel(step=-1)
            mean = values.mean("seed").to_pandas()
            finite = values.count("seed")
            se = (values.std("seed", ddof=1) / np.sqrt(finite)).to_pandas() if seeds > 1 else None
            shown = (
                mean.T
                if se is None
                else mean.T.map(lambda v: f"{v:.4g}") + " ± " + se.T.map(lambda v: f"{v:.2g}")
            )
            tables[f"{title} (mean ± SE over {seeds} seeds)"] = shown
        return tables

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """A column per model of ``preset`` (:mod:`~gvbench.experiments.binary_vae.leaderboard`);
        none at a preset it does not have."""
        return columns.columns(self, self.presets[preset]) if preset in self.presets else ()


BINARY_VAE = BinaryVAE()


def _encoder(name: str, parameter: Tensor) -> bool:
    return name.startswith("encoder.")


def _images(config: BinaryVAEConfig, binarize: Binarization = "static") -> ImageSplits:
    """The seed's binarization of the images (``"static"``), or their intensities in [0, 1]
    (``"dynamic"``), split alike for the same seed."""
    return load_images(config.dataset, config.data_dir, binarize=binarize, seed=config.seed)


def preset_configs(
    preset: Preset, seeds: range, run: PresetRun
) -> dict[tuple[str, str, int], BinaryVAEConfig]:
    """Every run of ``preset``, keyed ``(model label, run label, seed)``; an estimator that does
    not apply to a model (ARM and DisARM on a sigmoid belief net) is left out of its runs, and
    the layer-wise ones train on the multi-layer models only."""
    configs = {}
    for model_label, variant, layers in preset.models:
        runs = preset.runs + (preset.layerwise_runs if layers > 1 else ())
        for label, estimator, k in runs:
            if layers > 1 and not E.info(estimator).sequential:
                continue
            for seed in seeds:
                configs[model_label, label, seed] = preset_config(
                    preset, variant, layers, estimator, k, seed=seed, data_dir=run.data_dir,
                    device=run.device,
                )  # fmt: skip
    return configs


def _first_config(preset: Preset, run: PresetRun) -> BinaryVAEConfig:
    _, variant, layers = preset.models[0]
    _, estimator, k = preset.runs[0]
    return preset_config(
        preset, variant, layers, estimator, k, seed=run.seed, data_dir=run.data_dir
    )
