r"""A VAE with m categorical latents of arity a (m·a fixed), MLP encoder and decoder.

Written as pure functions of parameter dicts with a leading draw axis R, like the ListOps
model. Negative ELBO per example:

.. math::
    -\mathcal{L}(x) = -\log p_\phi(x \mid z) + \mathrm{KL}(q_\theta(z\mid x)\,\|\,\mathrm{Unif}),\quad
    \mathrm{KL} = \sum_{v=1}^m \sum_{j=1}^a q_{vj}\log q_{vj} + m\log a,

:math:`z \sim q_\theta` drawn by the sampler under test (one-hot, or relaxed for GS), the
KL analytic, the likelihood Bernoulli over 784 pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from gvbench.estimators import Sampler

Parameters = dict[str, Tensor]
PIXELS = 784


def init_parameters(
    arity: int, latent_dim: int = 64, hidden: int = 256, seed: int = 0
) -> tuple[Parameters, Parameters]:
    """(encoder, decoder) parameters without a draw axis; ``latent_dim`` = m·a must divide by a."""
    if arity < 2 or latent_dim % arity:
        raise ValueError(
            f"latent_dim ({latent_dim}) must be a multiple of arity a >= 2, got a = {arity}"
        )
    generator = torch.Generator().manual_seed(seed)

    def weight(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) / math.sqrt(shape[0])

    encoder = {
        "w1": weight(PIXELS, hidden),
        "b1": torch.zeros(hidden),
        "w2": weight(hidden, latent_dim),
        "b2": torch.zeros(latent_dim),
    }
    decoder = {
        "w1": weight(latent_dim, hidden),
        "b1": torch.zeros(hidden),
        "w2": weight(hidden, PIXELS),
        "b2": torch.zeros(PIXELS),
    }
    return encoder, decoder


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x (R, B, i) @ w (R, i, o) + b (R, o); a weight without a draw axis is shared."""
    if w.dim() == 2:
        return x @ w + b
    return torch.baddbmm(b[:, None], x, w)


def encode(encoder: Parameters, x: Tensor, arity: int) -> Tensor:
    """Posterior logits, shape (R, B, m, a), for images x (B, 784)."""
    r = encoder["w1"].shape[0]
    h = torch.tanh(_linear(x.expand(r, *x.shape), encoder["w1"], encoder["b1"]))
    logits = _linear(h, encoder["w2"], encoder["b2"])
    return logits.reshape(r, x.shape[0], -1, arity)


def decode(decoder: Parameters, z: Tensor) -> Tensor:
    """Pixel logits (R, B, 784) from latent samples (R, B, m, a)."""
    h = torch.tanh(_linear(z.flatten(2), decoder["w1"], decoder["b1"]))
    return _linear(h, decoder["w2"], decoder["b2"])


def kl_uniform(logits: Tensor) -> Tensor:
    """KL(q ‖ uniform) summed over the latents: Σ q log q + m log a, shape (R, B)."""
    log_q = torch.log_softmax(logits, -1)
    m, a = logits.shape[-2:]
    return (log_q.exp() * log_q).sum((-1, -2)) + m * math.log(a)


def reconstruction(decoder: Parameters, x: Tensor, z: Tensor) -> Tensor:
    """−log p(x | z) under the Bernoulli decoder, shape (R, B)."""
    pixel_logits = decode(decoder, z)
    return F.binary_cross_entropy_with_logits(
        pixel_logits, x.expand_as(pixel_logits), reduction="none"
    ).sum(-1)


def negative_elbo(
    encoder: Parameters, decoder: Parameters, x: Tensor, arity: int, sample: Sampler
) -> Tensor:
    """Per-example negative ELBO (nats), shape (R, B), with z drawn by ``sample``."""
    logits = encode(encoder, x, arity)
    return reconstruction(decoder, x, sample(logits)) + kl_uniform(logits)


def importance_weighted_nll(
    encoder: Parameters,
    decoder: Parameters,
    x: Tensor,
    arity: int,
    samples: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""−log p(x) estimated with S posterior samples (the IWAE bound, an upper bound on −log p(x)).

    :math:`-\log \frac1S\sum_s p(x\mid z_s)p(z_s)/q(z_s\mid x)`, z_s ~ q. Parameters without a draw axis.
    """
    from gvbench.estimators import categorical_one_hot

    with torch.no_grad():
        enc = {k: v[None] for k, v in encoder.items()}
        logits = encode(enc, x, arity)[0]  # (B, m, a)
        m = logits.shape[1]
        expanded = logits.expand(samples, *logits.shape)
        z = categorical_one_hot(expanded, -1, generator)  # (S, B, m, a)
        log_q = (torch.log_softmax(expanded, -1) * z).sum((-1, -2))
        log_prior = -m * math.log(arity)
        log_likelihood = -reconstruction(decoder, x, z)  # decoder without draw axis: shared
        log_w = log_likelihood + log_prior - log_q
        return -(torch.logsumexp(log_w, 0) - math.log(samples))
