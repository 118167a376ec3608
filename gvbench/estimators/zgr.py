r"""ZGR: the zero-temperature Gumbel-Rao estimator (Shekhovtsov 2023, ICML).

GR-MCK at :math:`K \to \infty` is :math:`\mathbb{E}[\tfrac1\tau(\mathrm{diag}\,s - s s^\top) \mid D]`,
:math:`s = \mathrm{softmax}((\theta + G)/\tau)`; its limit as :math:`\tau \to 0` has a closed
form that needs neither K nor τ, and is the average of straight-through and DARN:

.. math::
    \hat g = \tfrac12\Big[\underbrace{(\mathrm{diag}\,p - p p^\top)\,u}_{\text{ST}}
    + \underbrace{(e_D - p)\,\langle e_D - p,\ u\rangle}_{\text{DARN}}\Big]
    = \tfrac12\big[p \odot (u - u_D) - e_D\,\langle p,\ u - u_D\rangle\big],

with :math:`p = \mathrm{softmax}\,\theta` and :math:`u = \partial f/\partial D` at the sample.
The DARN term is the score function :math:`\nabla_\theta \log p_D` times the first-order
Taylor difference :math:`f(e_D) - f(p) \approx \langle e_D - p, u\rangle`. For a Bernoulli
variable it is DARN(½), :math:`\tfrac12\,(\partial f/\partial b)\,(b(1 - p) + (1 - b)p)` on the
logit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import register
from gvbench.estimators.sampling import categorical_index, replace_gradient
from gvbench.estimators.validation import check_logits


@register(unbiased=False, label="ZGR")
def zgr(
    logits: Tensor,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""ZGR, Gumbel-Rao at zero temperature (Shekhovtsov 2023, "Cold Analysis of
    Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient Estimator").

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`,
    by :math:`\lim_{\tau \to 0} \mathbb{E}[\hat g_{\text{ST-GS}} \mid D]` (GR-MC∞ at τ → 0).
    With: forward :math:`D` (Gumbel-max, as :func:`categorical_one_hot`); backward through

    .. math::
        y = D + \delta - \mathrm{sg}(\delta),\qquad
        \delta = \tfrac12\big(p + (D - \mathrm{sg}\,p)\,\log p_D\big),\qquad
        p = \mathrm{softmax}\,\theta,

    so :math:`\hat g = \tfrac12[(\mathrm{diag}\,p - pp^\top)u + (e_D - p)\langle e_D - p, u\rangle]`
    (the module docstring): half straight-through, half DARN. One objective run, no τ, no K;
    θ enters only through :math:`p` and the Gumbel-max sample, so adding a constant to the
    logits changes neither.
    Requires: :math:`f` differentiable at one-hot inputs. Biased in general; **unbiased when**
    :math:`f` **is quadratic** in the one-hot samples (any number of variables).
    """
    dim = check_logits(logits, dim)
    index = categorical_index(logits, dim, generator).unsqueeze(dim)
    sample = torch.zeros_like(logits.detach(), memory_format=torch.contiguous_format)
    sample = sample.scatter(dim, index, 1.0)
    log_p = torch.log_softmax(logits, dim)
    p = log_p.exp()
    # gather, not D · log p: a masked category has log p = -inf and 0 · -inf is NaN.
    log_p_sample = log_p.gather(dim, index)
    half = 0.5 * (p + (sample - p.detach()) * log_p_sample)
    return replace_gradient(sample, half)
