r"""ReinMax-Rao and ReinMax-CV: ReinMax with Gumbel-Rao Jacobians at its midpoint (Wang & Bui
2026, "Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent Variables",
arXiv 2603.08257; code danielwang0452/ReinMax_ASC, ``reinmax_jacobians.py`` and
``reinmax_v2.py``).

ReinMax (:func:`~gvbench.estimators.reinmax`) at τ = 1 back-propagates through the softmax
Jacobian at its midpoint :math:`\pi_D = \tfrac12(\pi_0 + D)`, :math:`\pi_0 = \mathrm{softmax}\,\theta`.
Both estimators here look at that midpoint through Gumbel noise instead, at the logits
:math:`\theta_D = \log \pi_D`:

- the **Gumbel-Rao Jacobian** :math:`\bar J_K = \frac{1}{\tau K}\sum_k J(s_k)`,
  :math:`s_k = \mathrm{softmax}((\theta_D + G^k)/\tau)`, :math:`G^k \sim G \mid \arg\max(\theta_D + G) = D`
  (:func:`~gvbench.estimators.conditional_gumbel` at :math:`\theta_D`), and
- the **ST-GS Jacobian** :math:`J_{GS} = \frac1\tau J(\mathrm{softmax}((\theta_D + G)/\tau))` at the
  Gumbel :math:`G` that drew :math:`D = \mathrm{onehot}(\arg\max(\theta + G))`,

with :math:`J(s) = \mathrm{diag}\,s - s s^\top`. The K conditional draws are made in the backward
pass by GR-MCK's own sample and vector-Jacobian product
(:func:`gvbench.estimators.gumbel_rao.conditional_softmax_vjp`), fed
:math:`\theta + \mathrm{sg}(\theta_D - \theta)` so that the product reaches θ unchanged, from
``generator`` after the forward's draw of D; memory does not grow with K. The objective runs
once per draw.

**The ST-GS term of ReinMax-CV, as coded and as written.** The authors' code adds the relaxed
sample :math:`y = \mathrm{softmax}((\theta + G)/\tau)` to :math:`\theta_D` where the paper's
equation has the Gumbel :math:`G` (their ``gumbel_softmax`` returns the pair ``(y_soft, G)`` and
the first is saved under the name of the second). Their reported results come from that
code, so it is the default (``noise="relaxed"``); ``noise="gumbel"`` is the equation. Their
code also takes that softmax at temperature 1 while dividing its Jacobian by τ, a term that
grows as 1/τ without bound (not finite at small τ); gvbench takes it at τ, as the
Gumbel-Rao term beside it, so the two agree at τ = 1 and differ elsewhere. The tests port
the authors' computation and measure each difference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# GR-MCK's own sample: forward D, backward the conditional-Gumbel VJP at its first input.
from gvbench.estimators.gumbel_rao import MAX_CONDITIONAL_DRAWS, _GumbelRaoSample
from gvbench.estimators.registry import checked_k, register
from gvbench.estimators.sampling import gumbel_like, replace_gradient, tempered_softmax
from gvbench.estimators.validation import check_logits, check_real, check_tau


def _midpoint_draw(
    logits: Tensor, dim: int, k: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, tuple[int, ...]]:
    r"""The draw both estimators share, on rows ``(M, n)`` with the categories last.

    Returns θ (rows), the Gumbel G of the draw, the index of D (Gumbel-max with the same
    uniforms as :func:`~gvbench.estimators.categorical_index`), the one-hot D, the logits
    :math:`\theta + \mathrm{sg}(\log\pi_D - \theta)` (value :math:`\theta_D`, gradient the
    identity) and the rows' shape before flattening.
    """
    if k * logits.numel() > MAX_CONDITIONAL_DRAWS:
        raise ValueError(
            f"k × logits.numel() = {k} × {logits.numel()} exceeds {MAX_CONDITIONAL_DRAWS} "
            "conditional draws in one call; lower k or split the logits"
        )
    theta = logits.movedim(dim, -1)
    shape = tuple(theta.shape)
    flat = theta.reshape(-1, shape[-1])
    centred = flat.detach().to(torch.float64)
    centred = centred - centred.amax(-1, keepdim=True)
    gumbel = gumbel_like(centred, generator)
    index = (centred + gumbel).argmax(-1)
    sample = torch.zeros_like(flat.detach()).scatter(-1, index[:, None], 1.0)
    midpoint = 0.5 * (torch.softmax(flat.detach(), -1) + sample)
    # A masked category (θ = -inf, π_D = 0) gives -inf - (-inf) = NaN; it must stay at -inf.
    shift = torch.nan_to_num(midpoint.log() - flat.detach(), nan=-torch.inf)
    return flat, gumbel.to(flat.dtype), index, sample, flat + shift, shape


def _unflatten(rows: Tensor, shape: tuple[int, ...], dim: int) -> Tensor:
    return rows.reshape(shape).movedim(-1, dim)


@register(unbiased=False, label="ReinMax-Rao")
def reinmax_rao(
    logits: Tensor,
    tau: float = 1.0,
    *,
    k: int = 100,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""ReinMax-Rao (Wang & Bui 2026, eq. 17): ReinMax's midpoint Jacobian replaced by the
    Gumbel-Rao Jacobian there.

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: forward :math:`D`; backward (module docstring for :math:`\bar J_K`, :math:`\theta_D`)

    .. math::
        \hat g = 2\,\bar J_K(\theta_D, \tau)\,u - \tfrac12 J(\pi_0)\,u,\qquad u = \partial f/\partial D.

    τ is the Gumbel-Rao temperature (ReinMax's own midpoint is taken at τ = 1, as in the
    authors' code); K conditional draws (the authors use 100). It is not ReinMax's
    Rao-Blackwellisation (ReinMax is already a function of D alone): it changes the Jacobian,
    so its mean is not ReinMax's. Not twice differentiable.
    Requires: :math:`f` differentiable at one-hot inputs. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    k = checked_k(reinmax_rao, k)
    flat, _, index, sample, midpoint_logits, shape = _midpoint_draw(logits, dim, k, generator)
    rao = _GumbelRaoSample.apply(midpoint_logits, index, tau, k, generator, False)
    surrogate = 2.0 * rao - 0.5 * torch.softmax(flat, -1)
    return _unflatten(replace_gradient(sample, surrogate), shape, dim)


@register(unbiased=False, label="ReinMax-CV")
def reinmax_cv(
    logits: Tensor,
    tau: float = 1.0,
    *,
    k: int = 100,
    eta: float = 0.7,
    noise: str = "relaxed",
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""ReinMax-CV (Wang & Bui 2026, eq. 18): ReinMax plus η times the difference of the
    Gumbel-Rao and the ST-GS Jacobians at ReinMax's midpoint.

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(D)]`, :math:`D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)`.
    With: forward :math:`D = \mathrm{onehot}(\arg\max(\theta + G))`; backward (module docstring)

    .. math::
        \hat g = 2 J(\pi_D)\,u - \tfrac12 J(\pi_0)\,u
        + \eta\,\big(\bar J_K(\theta_D, \tau) - J_{GS}(\theta_D + G, \tau)\big)\,u.

    The first two terms are ReinMax at τ = 1 (the authors fix its temperature there); τ is
    the control variate's temperature, K its conditional draws, η its weight (0.7, the
    authors' default). ``noise`` says what perturbs :math:`\theta_D` in the ST-GS term:

    - ``"relaxed"`` (default, the authors' code): the relaxed sample
      :math:`y = \mathrm{softmax}((\theta + G)/\tau)`, as
      :math:`\frac1\tau J(\mathrm{softmax}((\theta_D + y)/\tau))` (the module docstring
      says why, and where it departs from their code at τ ≠ 1);
    - ``"gumbel"`` (the paper's equation): D's own Gumbel, :math:`J_{GS}` above.

    Neither term has mean zero given D (:math:`\bar J_K` conditions the noise at
    :math:`\theta_D`, the draw's G is the noise of θ), so the estimator's mean is not
    ReinMax's; ``docs/guide/estimators.md`` has the measurement. Not twice differentiable.
    Requires: :math:`f` differentiable at one-hot inputs; η a finite real. Biased.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    k = checked_k(reinmax_cv, k)
    eta = check_real(eta, "eta")
    if not math.isfinite(eta):
        raise ValueError(f"eta must be a finite number (0 is ReinMax at τ = 1), got {eta!r}")
    if noise not in ("relaxed", "gumbel"):
        raise ValueError(f"noise must be 'relaxed' or 'gumbel', got {noise!r}")
    flat, gumbel, index, sample, midpoint_logits, shape = _midpoint_draw(logits, dim, k, generator)
    rao = _GumbelRaoSample.apply(midpoint_logits, index, tau, k, generator, False)
    midpoint = torch.softmax(midpoint_logits, -1)
    # ST-GS at θ_D; its gradient (1/τ) J(s) u reaches θ through the identity shift.
    if noise == "gumbel":
        straight_through = tempered_softmax(midpoint_logits + gumbel, tau, -1)
    else:
        relaxed = tempered_softmax(flat.detach() + gumbel, tau, -1)
        straight_through = tempered_softmax(midpoint_logits + relaxed, tau, -1)
    surrogate = 2.0 * midpoint - 0.5 * torch.softmax(flat, -1) + eta * (rao - straight_through)
    return _unflatten(replace_gradient(sample, surrogate), shape, dim)
