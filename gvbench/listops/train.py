"""Training the Gumbel Tree-LSTM on ListOps with any estimator: SGD, validation-based model
selection, test accuracy, learning curves (with gradient variance) as xarray, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import torch
import xarray as xr
from torch import Tensor

import gvbench.estimators as E
from gvbench.estimators import Sampler
from gvbench.harness.draws import gradient_draws
from gvbench.harness.metrics import trace_variance
from gvbench.listops.data import Split, generate_splits
from gvbench.listops.model import Parameters, classify, greedy, init_parameters, per_example_loss
from gvbench.listops.task import ListOpsTask
from gvbench.training import RunConfig, epoch_batches, finish_run, fit, pinned_threads_per_run


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One ListOps run. ``batch_size`` 0 means the maximum length L, as in the paper."""

    max_length: int = 10
    d_hidden: int = 32
    batch_size: int = 0
    lr: float = 0.02
    sizes: tuple[int, int, int] = (5000, 500, 500)

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "max_length": 4,
        "d_hidden": 1,
        "batch_size": 0,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if E.info(self.estimator).relaxed:
            raise ValueError(f"{self.estimator} feeds relaxed samples; ListOps needs hard merges")

    @property
    def batch(self) -> int:
        return self.batch_size or self.max_length

    def prefix(self) -> str:
        return f"L{self.max_length}"


def accuracy(params: Parameters, split: Split, chunk: int = 500) -> float:
    """Accuracy with greedy (argmax) merges, the deterministic tree used at evaluation."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(split), chunk):
            part = split.subset(slice(start, start + chunk))
            logits = classify(
                {k: v[None] for k, v in params.items()}, part.tokens, part.lengths, greedy
            )
            correct += int((logits[0].argmax(-1) == part.labels).sum())
    return correct / len(split)


@pinned_threads_per_run
def train(
    config: TrainConfig,
    out_dir: str | Path = "results/listops",
    progress: bool = True,
    final_checkpoint: str | Path | None = None,
) -> xr.Dataset:
    """Train, select on validation accuracy, report test accuracy; resume from ``out_dir``.

    Writes ``out_dir/NAME/{checkpoint.pt, curves.nc}``; a rerun with the same configuration
    continues from the last checkpoint (same numbers as an uninterrupted run).
    """
    run_dir = Path(out_dir) / config.name()
    splits = generate_splits(config.max_length, config.sizes, seed=config.seed)
    train_split, valid, test = splits["train"], splits["valid"], splits["test"]
    estimator = E.get(config.estimator, **config.estimator_options())
    params = {
        k: v.requires_grad_() for k, v in init_parameters(config.d_hidden, seed=config.seed).items()
    }
    next_indices = epoch_batches(len(train_split), config.batch)

    def loss(with_axis: Parameters, batch: Split, sample: Sampler) -> Tensor:
        return per_example_loss(with_axis, batch.tokens, batch.lengths, batch.labels, sample)

    def variance(params: Parameters, generator: torch.Generator) -> tuple[float, float]:
        task = ListOpsTask(params, valid.subset(slice(0, config.batch)), {"task": "listops"})
        return trace_variance(
            gradient_draws(
                task, estimator.freeze(), config.variance_reps, config.batch, generator
            ).numpy()
        )

    result = fit(
        run_dir,
        config.as_dict(),
        params,
        estimator,
        loss,
        lambda state, generator: train_split.subset(next_indices(state, generator)),
        lambda params: {"valid_accuracy": (score := accuracy(params, valid)), "selection": score},
        steps=config.steps,
        lr=config.lr,
        momentum=config.momentum,
        seed=config.seed,
        eval_every=config.eval_every,
        variance=variance,
        variance_every=config.variance_every,
        progress=progress,
    )
    return finish_run(
        run_dir,
        config,
        result,
        f"ListOps training curves: {config.name()}",
        {
            "best_valid_accuracy": result["best_score"],
            "test_accuracy": accuracy(result["best"]["params"], test),
            "test_majority_accuracy": float(torch.bincount(test.labels, minlength=10).max())
            / len(test),
        },
        {"valid_accuracy": "1", "gradient_variance": "1", "gradient_variance_se": "1"},
        final_checkpoint,
    )
