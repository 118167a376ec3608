"""ListOps as a harness task: gradient statistics of the classification loss at a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.listops.data import Split, generate_splits
from gvbench.listops.model import Parameters, per_example_loss
from gvbench.tasks.base import Task
from gvbench.training import read_parameters

CHECKPOINTS = Path("results/listops/checkpoints")


class ListOpsTask(Task):
    """Cross-entropy of a Gumbel Tree-LSTM on a fixed validation batch, w.r.t. all its weights.

    Every merge is a discrete choice (L − 1 per sequence, each depending on the previous
    ones); relaxed samples do not apply (the tree needs hard merges). No enumeration: the
    reference is the harness's high-sample RLOO estimate.
    """

    name = "listops"
    relaxed_inputs = False
    sequential_choices = True  # each merge's candidates depend on the merges before it
    max_draws_per_pass = 32  # R × B × L × 5d activations per merge step stay small
    reference_reps = 4000
    dtype = torch.float32

    def __init__(self, params: Parameters, batch: Split, config: dict[str, Any]) -> None:
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self.batch = batch
        self._config = config

    def parameters(self) -> dict[str, Tensor]:
        return self.params

    def loss(self, params: dict[str, Tensor], sample: Sampler, batch_size: int) -> Tensor:
        if batch_size > len(self.batch):
            raise ValueError(
                f"batch_size must be <= {len(self.batch)} for this task, got {batch_size}"
            )
        batch = self.batch.subset(slice(0, batch_size))
        return per_example_loss(params, batch.tokens, batch.lengths, batch.labels, sample)

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def listops(
    max_length: int = 10,
    d_hidden: int = 32,
    train_steps: int = 300,
    seed: int = 0,
    checkpoint: str | None = None,
    batch_pool: int = 64,
    checkpoint_dir: str = str(CHECKPOINTS),
) -> ListOpsTask:
    """The ListOps task at a briefly trained checkpoint (trained once, then cached on disk).

    Without ``checkpoint``, a model is trained for ``train_steps`` SGD steps with ST-GS
    (τ = 1) on generated data and saved under ``checkpoint_dir``; the harness
    then measures gradients on the first B of ``batch_pool`` validation expressions.
    """
    from gvbench.listops.train import TrainConfig, train
    from gvbench.training import cached_checkpoint

    config = {
        "task": "listops",
        "max_length": max_length,
        "d_hidden": d_hidden,
        "train_steps": train_steps,
        "seed": seed,
        "checkpoint": checkpoint,
        "batch_pool": batch_pool,
    }
    check_count(train_steps, "train_steps", 1)
    check_count(batch_pool, "batch_pool", 1)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"checkpoint {checkpoint} is not a file")
    if checkpoint is None:
        run = TrainConfig(
            estimator="st_gumbel_softmax",
            tau=1.0,
            max_length=max_length,
            d_hidden=d_hidden,
            steps=train_steps,
            seed=seed,
            eval_every=max(1, train_steps),
            variance_every=0,
        )
        checkpoint = cached_checkpoint(train, run, checkpoint_dir)
    state = read_parameters(checkpoint)
    valid = generate_splits(
        state["config"]["max_length"], state["config"]["sizes"], seed=state["config"]["seed"]
    )["valid"]
    return ListOpsTask(state["params"], valid.subset(slice(0, batch_pool)), config)
