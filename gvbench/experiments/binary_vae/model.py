r"""Bernoulli latent-variable models of DisARM's VAE experiments (Dong, Mnih & Tucker 2020;
google-research ``disarm/binary/networks.py`` and the two experiment launchers).

One module covers the three variants, each with stochastic layers of 200 Bernoulli units
:math:`z_1, …, z_L` and a Bernoulli prior :math:`p(z_L) = \mathrm{Bern}(\sigma(\lambda))` with
learned logits :math:`\lambda`:

- ``linear``: :math:`L = 1`, encoder 784 → 200, decoder 200 → 784, both affine;
- ``nonlinear``: :math:`L = 1`, encoder 784 → 200 → 200 → 200 with LeakyReLU(0.3) between,
  the decoder mirrored (200 → 200 → 200 → 784);
- ``sbn`` (sigmoid belief net): :math:`L \ge 2` layers, each conditional affine:
  :math:`q(z_l \mid z_{l-1})` and :math:`p(z_{l-1} \mid z_l)` with :math:`z_0 = x`
  (the authors' launcher has :math:`L = 4`).

As in the authors' code with ``demean_input`` and ``initialize_with_bias`` on: the encoder reads
:math:`x - \bar x` (:math:`\bar x` the training mean); the decoder that outputs pixels reads
:math:`2z_1 - 1`; the pixel logits' bias starts at
:math:`\operatorname{logit}(\operatorname{clip}(\bar x, 0.001, 0.999))`; the other layers read
their binary input as it is. Weights start Glorot-uniform, biases at zero (Keras' ``Dense``).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import gvbench.estimators as E
from gvbench.estimators import Sampler

PIXELS = 784
LATENT = 200
LEAKY_SLOPE = 0.3
VARIANTS = ("linear", "nonlinear", "sbn")


class ELBOTerms(NamedTuple):
    r"""One joint sample's parts of the ELBO, each per example ``(B,)``:
    :math:`\log p(x, z_1, …, z_{L-1} \mid z_L)`, :math:`\log p(z_L)` and
    :math:`\log q(z_1, …, z_L \mid x)`."""

    log_likelihood: Tensor
    log_prior: Tensor
    log_posterior: Tensor


def bernoulli_log_prob(logits: Tensor, value: Tensor) -> Tensor:
    r""":math:`\sum_i [v_i \log\sigma(\ell_i) + (1 - v_i)\log\sigma(-\ell_i)]
    = \sum_i [v_i \ell_i - \operatorname{softplus}(\ell_i)]` over the last axis.

    Linear in ``value``, so a relaxed sample in [0, 1] gets the same formula."""
    return (value * logits - F.softplus(logits)).sum(-1)


def negative_elbo(terms: ELBOTerms) -> Tensor:
    r"""The single-sample negative ELBO per example (nats):
    :math:`-\log p(x, z) + \log q(z \mid x)` at the drawn :math:`z` (no analytic KL, as the
    authors' ``DiscreteVAE.call`` computes it)."""
    return terms.log_posterior - terms.log_likelihood - terms.log_prior


class BinaryLatentModel(nn.Module):
    """``model(x, sample=…) -> ELBOTerms``; every latent is drawn as a 2-category choice.

    Args:
        variant: ``"linear"``, ``"nonlinear"`` or ``"sbn"``.
        layers: stochastic layers (1 for ``linear`` and ``nonlinear``, at least 2 for
            ``sbn``).
        mean: the training images' mean pixel values ``(784,)``.
        seed: seeds the initial weights alone.

    A latent with Bernoulli logit :math:`a` is drawn as the categorical choice of logits
    :math:`(0, a)` and read as its second one-hot coordinate, so that category 1 has
    probability :math:`\\sigma(a)`: the form ARM and DisARM read (their :math:`\\varphi` is
    :math:`\\theta_1 - \\theta_0`), and every categorical estimator applies.
    """

    def __init__(self, variant: str, layers: int, mean: Tensor, seed: int = 0) -> None:
        super().__init__()
        check_architecture(variant, layers)
        if mean.shape != (PIXELS,):
            raise ValueError(f"mean must have shape ({PIXELS},), got {tuple(mean.shape)}")
        self.variant, self.layers = variant, layers
        generator = torch.Generator().manual_seed(seed)
        if variant == "nonlinear":
            widths = (PIXELS, LATENT, LATENT, LATENT)
            self.encoder = nn.ModuleList([_network(widths, generator)])
            self.decoder = nn.ModuleList([_network(widths[::-1], generator)])
        else:
            ins = (PIXELS, *[LATENT] * (layers - 1))
            self.encoder = nn.ModuleList([_network((n, LATENT), generator) for n in ins])
            self.decoder = nn.ModuleList([_network((LATENT, n), generator) for n in ins])
        self.prior = nn.Parameter(torch.zeros(LATENT))
        self.register_buffer("mean", mean.detach().clone().float())
        with torch.no_grad():
            pixels = self.decoder[0][-1]
            pixels.bias.copy_(torch.logit(self.mean.clamp(0.001, 0.999)))

    def forward(self, x: Tensor, sample: Sampler) -> ELBOTerms:
        below, log_posterior, latents = x - self.mean, 0, []
        for encoder in self.encoder:
            logits = encoder(below)
            choice = sample(torch.stack([torch.zeros_like(logits), logits], -1))
            below = choice[..., 1]
            log_posterior = log_posterior + bernoulli_log_prob(logits, below)
            latents.append(below)
        top = latents[-1]
        log_prior = bernoulli_log_prob(self.prior.expand_as(top), top)
        log_likelihood = bernoulli_log_prob(self.decoder[0](2 * latents[0] - 1), x)
        for decoder, z, target in zip(self.decoder[1:], latents[1:], latents[:-1], strict=True):
            log_likelihood = log_likelihood + bernoulli_log_prob(decoder(z), target)
        return ELBOTerms(log_likelihood, log_prior, log_posterior)


def check_architecture(variant: str, layers: int) -> None:
    """A ValueError naming the option where ``variant`` or ``layers`` is out of range."""
    if variant not in VARIANTS:
        raise ValueError(f"model must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "sbn" and layers < 2:
        raise ValueError(f"a sigmoid belief net (model sbn) has layers >= 2, got {layers}")
    if variant != "sbn" and layers != 1:
        raise ValueError(
            f"model {variant} has one stochastic layer (layers 1), got {layers}: use model sbn"
        )


def _network(widths: tuple[int, ...], generator: torch.Generator) -> nn.Sequential:
    """Affine maps through ``widths`` with LeakyReLU(0.3) between them, Glorot-uniform weights
    and zero biases (Keras' ``Dense`` defaults) from ``generator``."""
    modules: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layer = nn.Linear(fan_in, fan_out)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            layer.weight.copy_((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound)
            layer.bias.zero_()
        modules += [layer, nn.LeakyReLU(LEAKY_SLOPE)]
    return nn.Sequential(*modules[:-1])


def importance_weighted_nll(
    model: BinaryLatentModel,
    x: Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    chunk: int = 50,
) -> Tensor:
    r"""The S-sample bound on :math:`-\log p(x)` per example ``(B,)`` (Burda et al. 2016; the
    authors' ``evaluate`` with ``num_eval_samples`` = S):
    :math:`-\log \frac1S \sum_s p(x, z_s) / q(z_s \mid x)`, :math:`z_s \sim q(\cdot \mid x)`
    jointly over the layers. Examples go ``chunk`` at a time (S · chunk rows per pass)."""
    sampler = _hard_sampler(generator)
    bounds = []
    with torch.no_grad():
        for part in x.split(chunk):
            elbo = -negative_elbo(model(part.repeat(samples, 1), sample=sampler))
            per_sample = elbo.view(samples, len(part)).double()
            bounds.append(math.log(samples) - torch.logsumexp(per_sample, 0))
    return torch.cat(bounds)


def _hard_sampler(generator: torch.Generator | None) -> Sampler:
    return lambda logits, *, dim=-1: E.categorical_one_hot(logits, dim, generator)
