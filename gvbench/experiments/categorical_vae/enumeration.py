r"""The exact expected negative ELBO of a small categorical VAE, every code at once.

.. math::
    \mathbb{E}_{q_\theta(z\mid x)}[-\mathcal{L}(x, z)]
    = \sum_{c=1}^{a^m} q_\theta(c \mid x)\,\big(-\log p_\phi(x\mid c) + K(x, c)\big),
    \qquad q_\theta(c \mid x) = \prod_{v=1}^m \operatorname{softmax}(\theta_v)_{c_v},

differentiable in the encoder's, the decoder's and the prior's parameters; autograd of it is
the exact gradient the harness measures bias² against (as ReinMax's ``VAE.exact_bce_loss``
enumerates its 8⁴ codes). The decoder does not read x, so each code is decoded once for the
whole batch: per block of codes one decoder pass and two matrix products, ``(B, 784) ·
(784, C)`` for the likelihoods and ``(B, m·a) · (m·a, C)`` for :math:`\log q`. Blocks of
``chunk`` codes bound the memory a pass holds.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from gvbench.experiments.categorical_vae.model import CategoricalMLPVAE

# The most codes enumerated: 4⁸ = 65,536 and 8⁴ = 4,096 fit with room; 10²⁰ does not.
MAX_CODES = 1 << 20


def code_count(latents: int, categories: int) -> int:
    """The joint outcomes :math:`a^m` of m latents of a categories."""
    return categories**latents


def codes(start: int, stop: int, latents: int, categories: int, like: Tensor) -> Tensor:
    """Codes ``start … stop − 1`` as one-hot rows ``(C, m, a)`` (code c's digits in base a,
    the first latent most significant), in ``like``'s dtype and device."""
    index = torch.arange(start, stop, device=like.device)
    powers = categories ** torch.arange(latents - 1, -1, -1, device=like.device)
    digits = torch.div(index[:, None], powers, rounding_mode="floor") % categories
    return F.one_hot(digits, categories).to(like.dtype)


def expected_negative_elbo(
    model: CategoricalMLPVAE, x: Tensor, chunk: int = 4096, *, reconstruction: bool = False
) -> Tensor:
    """:math:`\\mathbb{E}_q[-\\mathcal{L}(x, z)]` per example ``(B,)``, exact (module docstring);
    with ``reconstruction``, the reconstruction term alone,
    :math:`\\mathbb{E}_q[-\\log p_\\phi(x \\mid z)]` (:func:`.model.reconstruction_loss`).

    A ``ValueError`` where the model has more than :data:`MAX_CODES` codes, or ``chunk`` is
    not a positive number of codes.
    """
    m, a = model.latents, model.arity
    total = code_count(m, a)
    if total > MAX_CODES:
        raise ValueError(
            f"a VAE of {m} latents × {a} categories has {a}^{m} = {total:.3g} codes, more than "
            f"the {MAX_CODES:,} the exact expected loss enumerates; measure it against a "
            "sampled reference instead"
        )
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of codes, got {chunk!r}")
    logits = model.posterior_logits(x)
    log_q = torch.log_softmax(logits, -1).flatten(-2)  # (B, m·a)
    analytic = model.protocol.analytic_kl and not reconstruction
    expected = model.kl(logits) if analytic else 0
    for start in range(0, total, chunk):
        block = codes(start, min(start + chunk, total), m, a, log_q)  # (C, m, a)
        pixel_logits = model.pixel_logits(block)  # (C, 784)
        log_likelihood = x @ pixel_logits.T - F.softplus(pixel_logits).sum(-1)  # (B, C)
        log_q_codes = log_q @ block.flatten(-2).T  # (B, C)
        loss = -log_likelihood
        if not (model.protocol.analytic_kl or reconstruction):
            loss = loss + log_q_codes - model.log_prior(block)
        expected = expected + (log_q_codes.exp() * loss).sum(-1)
    return expected
