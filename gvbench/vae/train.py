"""Training the discrete VAE with any estimator: SGD with momentum, selection on validation
negative ELBO, test negative ELBO and an importance-weighted log-likelihood bound, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import torch
import xarray as xr
from torch import Tensor

import gvbench.estimators as E
from gvbench.estimators import Sampler, categorical_one_hot
from gvbench.harness.draws import gradient_draws
from gvbench.harness.metrics import trace_variance
from gvbench.training import RunConfig, epoch_batches, finish_run, fit, pinned_threads_per_run
from gvbench.vae.data import load
from gvbench.vae.model import Parameters, importance_weighted_nll, init_parameters, negative_elbo
from gvbench.vae.task import VAETask


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One VAE run."""

    arity: int = 4
    latent_dim: int = 64
    hidden: int = 256
    batch_size: int = 20
    eval_every: int = 250
    variance_every: int = 1000
    iw_samples: int = 100
    data_dir: str | None = None

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "arity": 2,
        "latent_dim": 2,
        "batch_size": 1,
        "iw_samples": 1,
        "hidden": 1,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        from gvbench.estimators import info

        if info(self.estimator).binary_only and self.arity != 2:
            raise ValueError(
                f"estimator {self.estimator} is for binary latents (arity 2), got arity "
                f"{self.arity}: use --arity 2 or a categorical estimator"
            )
        init_parameters(self.arity, self.latent_dim, 1)  # arity / latent_dim agreement
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")

    def prefix(self) -> str:
        return f"a{self.arity}-B{self.batch_size}"


def split_params(params: Parameters) -> tuple[Parameters, Parameters]:
    encoder = {k.removeprefix("encoder."): v for k, v in params.items() if k.startswith("encoder.")}
    decoder = {k.removeprefix("decoder."): v for k, v in params.items() if k.startswith("decoder.")}
    return encoder, decoder


def mean_negative_elbo(
    params: Parameters, images: Tensor, arity: int, seed: int = 0, chunk: int = 1000
) -> float:
    """Mean negative ELBO with hard posterior samples (a fixed seed: comparable across steps)."""
    encoder, decoder = split_params({k: v[None] for k, v in params.items()})
    generator = torch.Generator().manual_seed(seed)

    def sample(logits: Tensor, *, dim: int = -1) -> Tensor:
        return categorical_one_hot(logits, dim, generator)

    with torch.no_grad():
        total = sum(
            float(negative_elbo(encoder, decoder, images[i : i + chunk], arity, sample).sum())
            for i in range(0, len(images), chunk)
        )
    return total / len(images)


@pinned_threads_per_run
def train(
    config: TrainConfig,
    out_dir: str | Path = "results/vae",
    progress: bool = True,
    final_checkpoint: str | Path | None = None,
) -> xr.Dataset:
    """Train, select on validation negative ELBO, report test figures; resume from ``out_dir``."""
    run_dir = Path(out_dir) / config.name()
    splits, source = load(config.data_dir, config.seed)
    train_images, valid, test = splits["train"], splits["valid"], splits["test"]
    estimator = E.get(config.estimator, **config.estimator_options())
    encoder, decoder = init_parameters(
        config.arity, config.latent_dim, config.hidden, seed=config.seed
    )
    params = {f"encoder.{k}": v.requires_grad_() for k, v in encoder.items()}
    params |= {f"decoder.{k}": v.requires_grad_() for k, v in decoder.items()}
    next_indices = epoch_batches(len(train_images), config.batch_size)
    initial = mean_negative_elbo(params, valid, config.arity)

    def loss(with_axis: Parameters, images: Tensor, sample: Sampler) -> Tensor:
        enc, dec = split_params(with_axis)
        return negative_elbo(enc, dec, images, config.arity, sample)

    def variance(params: Parameters, generator: torch.Generator) -> tuple[float, float]:
        enc, dec = split_params(params)
        task = VAETask(enc, dec, valid[: config.batch_size], config.arity, {"task": "vae"})
        return trace_variance(
            gradient_draws(
                task, estimator.freeze(), config.variance_reps, config.batch_size, generator
            ).numpy()
        )

    result = fit(
        run_dir,
        config.as_dict(),
        params,
        estimator,
        loss,
        lambda state, generator: train_images[next_indices(state, generator)],
        lambda params: {
            "valid_negative_elbo": (score := mean_negative_elbo(params, valid, config.arity)),
            "selection": score,
        },
        steps=config.steps,
        lr=config.lr,
        momentum=config.momentum,
        seed=config.seed,
        eval_every=config.eval_every,
        variance=variance,
        variance_every=config.variance_every,
        higher_is_better=False,
        progress=progress,
    )
    best = result["best"]["params"]
    enc, dec = split_params(best)
    generator = torch.Generator().manual_seed(config.seed)
    test_nll = importance_weighted_nll(enc, dec, test, config.arity, config.iw_samples, generator)
    return finish_run(
        run_dir,
        config,
        result,
        f"VAE training curves: {config.name()}",
        {
            "data": source,
            "best_valid_negative_elbo": result["best_score"],
            "test_negative_elbo": mean_negative_elbo(best, test, config.arity),
            "test_iw_nll": float(test_nll.mean()),
            "iw_samples": config.iw_samples,
            "initial_valid_negative_elbo": initial,
        },
        {"valid_negative_elbo": "nats", "gradient_variance": "1", "gradient_variance_se": "1"},
        final_checkpoint,
    )
