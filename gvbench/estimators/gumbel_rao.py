r"""Gumbel-Rao: Rao-Blackwellised straight-through Gumbel-Softmax (Paulus, Maddison & Krause 2021).

The estimator averages the ST-GS backward over K Gumbel draws conditioned on the observed
argmax. A plain autograd implementation keeps K softmax graphs alive; here a custom
``autograd.Function`` computes the K conditional softmaxes in bounded chunks under
``no_grad`` and keeps only what the vector-Jacobian product needs:

.. math::
    J^\top v = \tfrac1\tau\big(\bar s\odot v - M v\big),\qquad
    \bar s = \tfrac1K\textstyle\sum_k s_k,\quad M = \tfrac1K\textstyle\sum_k s_k s_k^\top,

storing either the K softmaxes (when K <= n) or the n×n second moment M (when K > n), so
memory is O(min(K, n)·n) per distribution instead of K autograd graphs.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import (
    categorical_one_hot,
    conditional_gumbel,
    replace_gradient,
)
from gvbench.estimators.validation import check_count, check_logits, check_tau

# Elements of one chunk of conditional draws (k_chunk × logits.numel()). On the CPU the draws
# are compute-bound, so small chunks (256 KiB per float32 temporary) cost no time and keep the
# working set flat in K; on an accelerator kernel launches dominate, so chunks are larger.
CHUNK_ELEMENTS = 1 << 16
ACCELERATOR_CHUNK_ELEMENTS = 1 << 22


class _ConditionalSoftmaxMean(torch.autograd.Function):
    """s̄ = mean_k softmax((θ + sg(Gᵏ))/τ), Gᵏ ~ G | argmax(θ + G) = D; categories last."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        index: Tensor,
        tau: float,
        k: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        n = logits.shape[-1]
        budget = CHUNK_ELEMENTS if logits.device.type == "cpu" else ACCELERATOR_CHUNK_ELEMENTS
        chunk = max(1, min(k, budget // max(1, logits.numel())))
        keep_samples = k <= n
        mean = torch.zeros_like(logits)
        stored = []
        moment = None if keep_samples else logits.new_zeros((*logits.shape, n))
        done = 0
        while done < k:
            size = min(chunk, k - done)
            z = conditional_gumbel(logits, index, size, dim=-1, generator=generator)
            # softmax(θ + (z − θ)) would equal softmax(z) but for rounding at |θ| ~ 1e4;
            # the value of θ + sg(G) is z itself.
            s = torch.softmax(z / tau, dim=-1)
            mean += s.sum(0)
            if keep_samples:
                stored.append(s)
            else:
                moment.add_(torch.einsum("k...i,k...j->...ij", s, s))
            done += size
        mean /= k
        if keep_samples:
            ctx.save_for_backward(mean, torch.cat(stored))
        else:
            ctx.save_for_backward(mean, moment.div_(k))
        ctx.keep_samples = keep_samples
        ctx.tau = tau
        return mean

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        mean, second = ctx.saved_tensors
        if ctx.keep_samples:
            projected = (second * (second * grad).sum(-1, keepdim=True)).mean(0)
        else:
            projected = (second @ grad.unsqueeze(-1)).squeeze(-1)
        return (mean * grad - projected) / ctx.tau, None, None, None, None


@register(unbiased=False, label="GR-MCK")
def gumbel_rao(
    logits: Tensor,
    tau: float = 1.0,
    *,
    k: int = 1,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gumbel-Rao Monte Carlo estimator GR-MCK (Paulus, Maddison & Krause, ICLR 2021).

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`,
    by :math:`\mathbb{E}[\hat g_{\text{ST-GS}} \mid D]` (Rao-Blackwellisation of ST-GS).
    With: forward :math:`D = \mathrm{onehot}(\arg\max(\theta + G))`; backward through

    .. math::
        \bar s = \frac1K\sum_{k=1}^K \mathrm{softmax}\big((\theta + \mathrm{sg}(G^k))/\tau\big),
        \qquad G^k \sim G \mid \arg\max(\theta + G) = D,

    the :math:`G^k` drawn by :func:`conditional_gumbel` and treated as constants.
    Properties: same mean (bias) as ST-GS for every K; variance non-increasing in K and at most
    ST-GS's; GR-MC1 has ST-GS's distribution. Memory does not grow with K beyond
    :math:`O(\min(K, n)\,n)` per distribution (see the module docstring). Not twice
    differentiable.
    Requires: :math:`f` differentiable at one-hot inputs. Biased (as ST-GS).
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau)
    k = check_count(k, "k", 1)
    theta = logits.movedim(dim, -1)
    sample = categorical_one_hot(theta, -1, generator)
    mean = _ConditionalSoftmaxMean.apply(theta, sample.argmax(-1), tau, k, generator)
    return replace_gradient(sample, mean).movedim(-1, dim)
