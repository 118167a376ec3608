r"""The discrete VAE (paper §5.3): m categorical latents of arity a (m·a fixed), MLP encoder
and decoder, an ordinary ``nn.Module`` whose latents are drawn by any sampler.

Negative ELBO per example:

.. math::
    -\mathcal{L}(x) = -\log p_\phi(x \mid z) + \mathrm{KL}(q_\theta(z\mid x)\,\|\,\mathrm{Unif}),\quad
    \mathrm{KL} = \sum_{v=1}^m \sum_{j=1}^a q_{vj}\log q_{vj} + m\log a,

:math:`z \sim q_\theta` drawn by the sampler under test (one-hot, or relaxed for GS), the KL
analytic, the likelihood Bernoulli over 784 pixels. Runs are selected on the validation
negative ELBO with hard samples; the test figures add an importance-weighted bound.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import gvbench.estimators as E
from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.experiment import Experiment, Splits
from gvbench.tasks.module import ModuleTask
from gvbench.training import RunConfig
from gvbench.vae.data import load

CHECKPOINTS = Path("results/vae/checkpoints")
PIXELS = 784


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
        if E.info(self.estimator).binary_only and self.arity != 2:
            raise ValueError(
                f"estimator {self.estimator} is for binary latents (arity 2), got arity "
                f"{self.arity}: use --arity 2 or a categorical estimator"
            )
        if self.latent_dim % self.arity:
            raise ValueError(
                f"latent_dim ({self.latent_dim}) must be a multiple of arity a >= 2, got "
                f"a = {self.arity}"
            )
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")

    def prefix(self) -> str:
        return f"a{self.arity}-B{self.batch_size}"


class CategoricalVAE(nn.Module):
    """``model(x, sample=…) -> (pixel logits (B, 784), posterior logits (B, m, a))``."""

    def __init__(self, arity: int, latent_dim: int = 64, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.arity = arity
        self.encoder = nn.Sequential(
            nn.Linear(PIXELS, hidden), nn.Tanh(), nn.Linear(hidden, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, PIXELS)
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (*self.encoder[::2], *self.decoder[::2]):
                # (out, in), scaled by 1/sqrt(fan-in), from the run's own seed alone.
                fan_in, fan_out = layer.in_features, layer.out_features
                layer.weight.copy_(
                    (torch.randn(fan_in, fan_out, generator=generator) / math.sqrt(fan_in)).T
                )
                layer.bias.zero_()

    def forward(self, x: Tensor, sample: Sampler) -> tuple[Tensor, Tensor]:
        logits = self.encoder(x).view(len(x), -1, self.arity)
        return self.decoder(sample(logits).flatten(1)), logits


def kl_uniform(logits: Tensor) -> Tensor:
    """KL(q ‖ uniform) summed over the latents: Σ q log q + m log a, shape (B,)."""
    log_q = torch.log_softmax(logits, -1)
    m, a = logits.shape[-2:]
    return (log_q.exp() * log_q).sum((-1, -2)) + m * math.log(a)


def bernoulli_nll(pixel_logits: Tensor, x: Tensor) -> Tensor:
    r"""−log p(x | z) of pixels x under Bernoulli(σ(ℓ)), summed over the last axis.

    :math:`-\sum_i [x_i \log\sigma(\ell_i) + (1 - x_i)\log(1 - \sigma(\ell_i))]
    = \sum_i [\operatorname{softplus}(\ell_i) - x_i\ell_i]`.
    """
    # Written with softplus rather than F.binary_cross_entropy_with_logits: that op has no
    # batching rule of its own and under vmap runs its composite one run at a time (a
    # stack of four VAE runs at B = 200: 22.5 ms forward and backward, against 7.8 ms).
    return (F.softplus(pixel_logits) - x * pixel_logits).sum(-1)


def negative_elbo(output: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """Per-example negative ELBO (nats), shape (B,), of the model's output for images x."""
    pixel_logits, logits = output
    return bernoulli_nll(pixel_logits, x) + kl_uniform(logits)


def importance_weighted_nll(
    model: CategoricalVAE, x: Tensor, samples: int, generator: torch.Generator | None = None
) -> Tensor:
    r"""−log p(x) estimated with S posterior samples (the IWAE bound, an upper bound on −log p(x)).

    :math:`-\log \frac1S\sum_s p(x\mid z_s)p(z_s)/q(z_s\mid x)`, :math:`z_s \sim q`.
    """
    with torch.no_grad():
        logits = model.encoder(x).view(len(x), -1, model.arity)  # (B, m, a)
        m = logits.shape[1]
        expanded = logits.expand(samples, *logits.shape)
        z = E.categorical_one_hot(expanded, -1, generator)  # (S, B, m, a)
        log_q = (torch.log_softmax(expanded, -1) * z).sum((-1, -2))
        pixel_logits = model.decoder(z.flatten(2))
        log_likelihood = -bernoulli_nll(pixel_logits, x)
        log_w = log_likelihood - m * math.log(model.arity) - log_q
        return -(torch.logsumexp(log_w, 0) - math.log(samples))


class VAE(Experiment):
    name = "vae"
    Config = TrainConfig
    selection = "valid_negative_elbo"
    selection_units = "nats"
    higher_is_better = False
    relaxed_inputs = True
    max_draws_per_pass = 64
    reference_reps = 4000

    def data(self, config: TrainConfig) -> tuple[Splits, str]:  # type: ignore[override]
        splits, source = load(config.data_dir, config.seed)
        return {name: (images,) for name, images in splits.items()}, source

    def model(self, config: TrainConfig) -> nn.Module:  # type: ignore[override]
        return CategoricalVAE(config.arity, config.latent_dim, config.hidden, seed=config.seed)

    def loss(self, output: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
        return negative_elbo(output, x)

    def score(self, output: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
        return negative_elbo(output, x)

    def arity(self, config: TrainConfig) -> int:  # type: ignore[override]
        return config.arity

    def report(self, model: nn.Module, splits: Splits, config: TrainConfig) -> dict[str, Any]:  # type: ignore[override]
        (test,) = splits["test"]
        device = test.device
        sample = self.evaluation_sampler(torch.Generator(device=device).manual_seed(0))
        with torch.no_grad():
            test_elbo = float(
                sum(
                    float(negative_elbo(model(x, sample=sample), x).double().sum())
                    for x in test.split(1000)
                )
                / len(test)
            )
        generator = torch.Generator(device=device).manual_seed(config.seed)
        nll = importance_weighted_nll(model, test, config.iw_samples, generator)  # type: ignore[arg-type]
        return {
            "test_negative_elbo": test_elbo,
            "test_iw_nll": float(nll.mean()),
            "iw_samples": config.iw_samples,
        }


VAE_EXPERIMENT = VAE()


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
) -> ModuleTask:
    """The VAE task at a briefly trained checkpoint (trained once with ST-GS, then cached).

    The gradient of the negative ELBO w.r.t. the encoder's weights, on the first B of
    ``batch_pool`` validation images. The decoder reads the samples as given, so relaxed
    samples (GS) apply; the reference is the harness's high-sample RLOO estimate (a^m joint
    outcomes are too many to enumerate).
    """
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
    brief = TrainConfig(
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
    return VAE_EXPERIMENT.checkpoint_task(
        checkpoint,
        brief,
        checkpoint_dir,
        batch_pool,
        config,
        parameters=lambda name, _: name.startswith("encoder."),
    )
