r"""The discrete VAE's model (paper §5.3): m categorical latents of arity a (m·a fixed), MLP
encoder and decoder, an ordinary ``nn.Module`` whose latents are drawn by any sampler.

Negative ELBO per example:

.. math::
    -\mathcal{L}(x) = -\log p_\phi(x \mid z) + \mathrm{KL}(q_\theta(z\mid x)\,\|\,\mathrm{Unif}),\quad
    \mathrm{KL} = \sum_{v=1}^m \sum_{j=1}^a q_{vj}\log q_{vj} + m\log a,

:math:`z \sim q_\theta` drawn by the sampler under test (one-hot, or relaxed for GS), the KL
analytic, the likelihood Bernoulli over 784 pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import gvbench.estimators as E
from gvbench.estimators import Sampler

PIXELS = 784


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
    # batching rule of its own and under vmap runs its composite one run at a time (its cost
    # is in the docs' performance notes).
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
