r"""Gumbel top-k: k-subsets by perturbed keys, relaxed by successive softmaxes (Xie & Ermon 2019).

The keys :math:`s = \theta + G`, :math:`G` iid standard Gumbel, and their k largest entries
are a sample of k items *without replacement* (Vieira 2014; Kool et al. 2019): item after
item with probability proportional to :math:`e^{\theta_i}` among those left (the
Plackett-Luce law of the first k, unordered). For k = 1 that is
:math:`\mathrm{softmax}\,\theta`, but for k ≥ 2 it is **not** the exponential-family k-subset
law :math:`p_\theta(z) \propto e^{\theta^\top z}` of :mod:`gvbench.estimators.subset_law`
(and of SIMPLE): both estimators here differentiate another law's expectation, so they are
biased against the k-subset reference, as SIMPLE's paper (Ahmed et al. 2023) treats them.

The relaxation (Xie & Ermon 2019, "Reparameterizable subset sampling via continuous
relaxations", the authors' ``continuous_topk``): :math:`\alpha^{(1)} = s`, and for
:math:`j = 1 \dots k`

.. math::
    a^{(j)} = \mathrm{softmax}(\alpha^{(j)}/\tau),\qquad
    \alpha^{(j+1)} = \alpha^{(j)} + \log\max(1 - a^{(j)}, \epsilon),\qquad
    \tilde z = \textstyle\sum_j a^{(j)},

a relaxed k-hot (entries in [0, 1] up to rounding, summing to k) that tends to the top-k
k-hot of :math:`s` as :math:`\tau \to 0`; :math:`\epsilon` is float32's smallest normal
number, as in the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import gumbel_like, replace_gradient, tempered_softmax
from gvbench.estimators.subset_law import check_subset, top_k_hot
from gvbench.estimators.validation import check_tau

# The authors' floor on 1 − a before its log (np.finfo(np.float32).tiny), in every dtype.
MASK_FLOOR = torch.finfo(torch.float32).tiny


def continuous_top_k(keys: Tensor, size: int, tau: float) -> Tensor:
    r"""The successive-softmax relaxation :math:`\tilde z` of the top-``size`` k-hot of
    ``keys`` along the last dimension (see the module's docstring); differentiable."""
    relaxed = torch.zeros_like(keys)
    step = torch.zeros_like(keys)
    for _ in range(size):
        keys = keys + (1.0 - step).clamp_min(MASK_FLOOR).log()
        step = tempered_softmax(keys, tau, -1)
        relaxed = relaxed + step
    return relaxed


@register(unbiased=False, relaxed=True, label="Relaxed top-k", variable="subset")
def relaxed_top_k(
    logits: Tensor,
    size: int,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Relaxed Gumbel top-k (Xie & Ermon 2019): a relaxed k-hot, reparameterised.

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(z)]` for :math:`z` the top-``size``
    items of :math:`\theta + G`, by :math:`\nabla_\theta f(\tilde z)`, :math:`\tilde z` the
    successive-softmax relaxation of those keys (module docstring).
    Requires: :math:`f` defined on relaxed k-hots. Biased twice: against its own
    (without-replacement) law by the relaxation, and against the exponential-family k-subset
    law, which Gumbel top-k does not sample for ``size`` ≥ 2.
    """
    dim, size = check_subset(logits, size, dim)
    tau = check_tau(tau, logits.dtype)
    keys = (logits + gumbel_like(logits, generator)).movedim(dim, -1)
    return continuous_top_k(keys, size, tau).movedim(-1, dim)


@register(unbiased=False, label="ST Gumbel top-k", variable="subset")
def st_gumbel_top_k(
    logits: Tensor,
    size: int,
    tau: float = 1.0,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Straight-through Gumbel top-k: forward the hard top-k, backward the relaxation.

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(z)]` with forward
    :math:`z = \text{k-hot}(\mathrm{top}_k(\theta + G))`, a sample of ``size`` items without
    replacement, and backward :math:`\partial \tilde z/\partial\theta\,\partial f/\partial z`,
    :math:`\tilde z` the relaxation of the same keys (:func:`relaxed_top_k`).
    Requires: :math:`f` differentiable at k-hot inputs. Biased; its forward law is
    the exponential-family k-subset law only at ``size`` = 1 (then it is ST-GS).
    """
    dim, size = check_subset(logits, size, dim)
    tau = check_tau(tau, logits.dtype)
    keys = (logits + gumbel_like(logits, generator)).movedim(dim, -1)
    hard = top_k_hot(keys, size)
    return replace_gradient(hard, continuous_top_k(keys, size, tau)).movedim(-1, dim)
