r"""The categorical VAE of both protocols (:mod:`.protocols`): m categorical latents of a
categories each, MLP encoder and decoder, an ordinary ``nn.Module`` whose code is drawn by any
sampler.

Negative ELBO per example, with :math:`z` the one-hot code (relaxed for GS):

.. math::
    -\mathcal{L}(x) = -\log p_\phi(x \mid z) + K(x, z),\qquad
    K = \begin{cases}
        \mathrm{KL}(q_\theta(\cdot\mid x)\,\|\,p) & \text{closed form (ReinMax)},\\
        \log q_\theta(z \mid x) - \log p(z) & \text{one sample (coupled estimators)},
    \end{cases}

:math:`\log p_\phi(x \mid z)` Bernoulli over 784 pixels (intensities in [0, 1] as targets
where the protocol does not binarize). The likelihood and the uniform prior's KL are
:mod:`gvbench.vae.model`'s.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench.estimators import Sampler
from gvbench.experiments.categorical_vae.protocols import LEAKY_SLOPE, Protocol
from gvbench.vae.model import bernoulli_nll, kl_uniform

PIXELS = 784


class ELBOTerms(NamedTuple):
    """One draw's parts of the ELBO per example ``(B,)``: :math:`\\log p(x \\mid z)` and the
    KL term (closed form, or its one-sample estimate :math:`\\log q(z\\mid x) - \\log p(z)`)."""

    log_likelihood: Tensor
    kl: Tensor


def negative_elbo(terms: ELBOTerms) -> Tensor:
    """The per-example negative ELBO (nats) of one draw."""
    return terms.kl - terms.log_likelihood


def reconstruction_loss(terms: ELBOTerms) -> Tensor:
    """The per-example reconstruction term :math:`-\\log p(x \\mid z)` (nats) of one draw:
    ReinMax's BCE, the part of its loss whose gradient its analysis compares."""
    return -terms.log_likelihood


class CategoricalMLPVAE(nn.Module):
    """``model(x, sample=…) -> ELBOTerms``.

    Args:
        protocol: the protocol's architecture, prior and ELBO form (:mod:`.protocols`).
        latents: m, the categorical latent variables.
        categories: a, the categories of each.
        hidden: the encoder's two hidden widths (the decoder's, reversed).
        mean: the training images' mean pixel values ``(784,)`` (read where the protocol
            centres its inputs).
        seed: seeds the initial weights alone.
    """

    def __init__(
        self,
        protocol: Protocol,
        latents: int,
        categories: int,
        hidden: tuple[int, int],
        mean: Tensor,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mean.shape != (PIXELS,):
            raise ValueError(f"mean must have shape ({PIXELS},), got {tuple(mean.shape)}")
        self.protocol = protocol
        self.latents, self.arity = latents, categories
        generator = torch.Generator().manual_seed(seed)
        code = latents * categories
        self.encoder = _network((PIXELS, *hidden, code), protocol, generator)
        self.decoder = _network((code, *hidden[::-1], PIXELS), protocol, generator)
        if protocol.learned_prior:
            self.prior = nn.Parameter(torch.zeros(latents, categories))
        self.register_buffer("mean", mean.detach().clone().float())
        if protocol.centred:
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(self.mean.clamp(0.001, 0.999)))

    def posterior_logits(self, x: Tensor) -> Tensor:
        """The encoder's logits θ of q(z | x), ``(B, m, a)``."""
        inputs = x - self.mean if self.protocol.centred else x
        return self.encoder(inputs).view(*x.shape[:-1], self.latents, self.arity)

    def pixel_logits(self, z: Tensor) -> Tensor:
        """The decoder's Bernoulli logits ``(…, 784)`` of codes ``z`` ``(…, m, a)``."""
        inputs = 2 * z - 1 if self.protocol.centred else z
        return self.decoder(inputs.flatten(-2))

    def log_prior(self, z: Tensor) -> Tensor:
        """:math:`\\log p(z)` of codes ``z`` ``(…, m, a)``, shape ``(…)``."""
        if self.protocol.learned_prior:
            return (z * torch.log_softmax(self.prior, -1)).sum((-1, -2))
        return torch.full(z.shape[:-2], -self.latents * math.log(self.arity)).to(z)

    def kl(self, logits: Tensor) -> Tensor:
        """KL(q(· | x) ‖ p) in closed form, ``(B,)``."""
        if not self.protocol.learned_prior:
            return kl_uniform(logits)
        log_q = torch.log_softmax(logits, -1)
        return (log_q.exp() * (log_q - torch.log_softmax(self.prior, -1))).sum((-1, -2))

    def forward(self, x: Tensor, sample: Sampler) -> ELBOTerms:
        logits = self.posterior_logits(x)
        z = sample(logits)
        log_likelihood = -bernoulli_nll(self.pixel_logits(z), x)
        if self.protocol.analytic_kl:
            return ELBOTerms(log_likelihood, self.kl(logits))
        log_q = (z * torch.log_softmax(logits, -1)).sum((-1, -2))
        return ELBOTerms(log_likelihood, log_q - self.log_prior(z))


def _network(widths: tuple[int, ...], protocol: Protocol, generator: torch.Generator) -> nn.Module:
    """Affine maps through ``widths`` with the protocol's activation between them, initialised
    from ``generator`` as the protocol's framework initialises a dense layer."""
    modules: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layer = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            if protocol.glorot:  # Keras' Dense: Glorot-uniform weights, zero biases
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                layer.weight.copy_(
                    (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
                )
                layer.bias.zero_()
            else:  # torch's nn.Linear: U(±1/√fan-in) for the weights and the biases
                bound = 1 / math.sqrt(fan_in)
                layer.weight.copy_(
                    (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
                )
                layer.bias.copy_((torch.rand(fan_out, generator=generator) * 2 - 1) * bound)
        activation = nn.LeakyReLU(LEAKY_SLOPE) if protocol.activation == "leaky_relu" else nn.ReLU()
        modules += [layer, activation]
    return nn.Sequential(*modules[:-1])


def importance_weighted_nll(
    model: CategoricalMLPVAE,
    x: Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    chunk: int = 100,
) -> Tensor:
    r"""The S-sample bound on :math:`-\log p(x)` per example ``(B,)`` (Burda et al. 2016; the
    coupled estimators' ``evaluate`` with ``num_eval_samples`` = S):
    :math:`-\log \frac1S \sum_s p(x \mid z_s)\,p(z_s) / q(z_s \mid x)`, :math:`z_s \sim q`.
    Examples go ``chunk`` at a time (S · chunk codes per pass)."""
    bounds = []
    with torch.no_grad():
        for part in x.split(chunk):
            logits = model.posterior_logits(part)
            expanded = logits.expand(samples, *logits.shape)
            z = E.categorical_one_hot(expanded, -1, generator)  # (S, B, m, a)
            log_q = (torch.log_softmax(expanded, -1) * z).sum((-1, -2))
            log_likelihood = -bernoulli_nll(model.pixel_logits(z), part)
            log_w = (log_likelihood + model.log_prior(z) - log_q).double()
            bounds.append(math.log(samples) - torch.logsumexp(log_w, 0))
    return torch.cat(bounds)
