"""The discrete VAE as a harness task: gradient of the negative ELBO w.r.t. the encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.tasks.base import Task
from gvbench.training import read_parameters
from gvbench.vae.model import Parameters, negative_elbo

CHECKPOINTS = Path("results/vae/checkpoints")


class VAETask(Task):
    """Negative ELBO of a fixed batch of images; the encoder's weights are the parameters.

    The decoder reads the samples as given, so relaxed samples (GS) apply. The reference is
    the harness's high-sample RLOO estimate (a^m joint outcomes are too many to enumerate).
    """

    name = "vae"
    relaxed_inputs = True
    max_draws_per_pass = 64
    reference_reps = 4000
    dtype = torch.float32

    def __init__(
        self,
        encoder: Parameters,
        decoder: Parameters,
        images: Tensor,
        arity: int,
        config: dict[str, Any],
    ) -> None:
        self.encoder = {k: v.detach().clone() for k, v in encoder.items()}
        self.decoder = {k: v.detach().clone() for k, v in decoder.items()}
        self.images = images
        self._arity = arity
        self._config = config

    @property
    def arity(self) -> int:
        return self._arity

    def parameters(self) -> dict[str, Tensor]:
        return self.encoder

    def loss(self, params: dict[str, Tensor], sample: Sampler, batch_size: int) -> Tensor:
        if batch_size > len(self.images):
            raise ValueError(
                f"batch_size must be <= {len(self.images)} for this task, got {batch_size}"
            )
        return negative_elbo(params, self.decoder, self.images[:batch_size], self._arity, sample)

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def vae(
    arity: int = 4,
    latent_dim: int = 64,
    hidden: int = 256,
    train_steps: int = 500,
    seed: int = 0,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    batch_pool: int = 200,
    checkpoint_dir: str = str(CHECKPOINTS),
) -> VAETask:
    """The VAE task at a briefly trained checkpoint (trained once with ST-GS, then cached).

    Gradients are measured on the first B of ``batch_pool`` validation images.
    """
    from gvbench.training import cached_checkpoint
    from gvbench.vae.data import load
    from gvbench.vae.train import TrainConfig, train

    config = {
        "task": "vae",
        "arity": arity,
        "latent_dim": latent_dim,
        "hidden": hidden,
        "train_steps": train_steps,
        "seed": seed,
        "data_dir": data_dir,
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
            arity=arity,
            latent_dim=latent_dim,
            hidden=hidden,
            steps=train_steps,
            seed=seed,
            data_dir=data_dir,
            eval_every=train_steps,
            variance_every=0,
        )
        checkpoint = cached_checkpoint(train, run, checkpoint_dir)
    state = read_parameters(checkpoint)
    splits, source = load(state["config"]["data_dir"], state["config"]["seed"])
    config["data"] = source
    encoder = {
        k.removeprefix("encoder."): v
        for k, v in state["params"].items()
        if k.startswith("encoder.")
    }
    decoder = {
        k.removeprefix("decoder."): v
        for k, v in state["params"].items()
        if k.startswith("decoder.")
    }
    return VAETask(encoder, decoder, splits["valid"][:batch_pool], state["config"]["arity"], config)
