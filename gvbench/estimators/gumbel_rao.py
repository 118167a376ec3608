r"""Gumbel-Rao: Rao-Blackwellised straight-through Gumbel-Softmax (Paulus, Maddison & Krause 2021).

The estimator averages the ST-GS backward over K Gumbel draws conditioned on the observed
argmax. Its forward value is the sample :math:`D` alone, so every K-draw computation waits for
the backward pass, where the upstream gradient :math:`u` is known and the vector-Jacobian
product can be accumulated draw by draw without forming any :math:`n\times n` moment:

.. math::
    \hat g = \frac{1}{\tau K}\sum_{k=1}^K s_k\odot\big(u - \langle s_k, u\rangle\big),\qquad
    s_k = \mathrm{softmax}\big((\theta + G^k)/\tau\big).

**The race without logarithms of the logits.** With :math:`p = \mathrm{softmax}\,\theta` and the
exponential race of :func:`~gvbench.estimators.conditional_gumbel`
(:math:`z_d = \log Z - \log E_d`, :math:`z_j = -\log(e^{-z_d} + E_j e^{-\theta_j})`),

.. math::
    z_j - z_d = -\log\Big(1 + \frac{E_j}{E_d\,p_j}\Big)
    \quad\Rightarrow\quad
    s_{k,j} \propto \Big(1 + \frac{E_j}{E_d\,p_j}\Big)^{-1/\tau},\qquad s_{k,d} \propto 1.

Only :math:`p` enters, never :math:`\theta` itself, so the estimator is exactly shift-invariant
in floating point (:math:`\theta - \max\theta` is exact), and :math:`|\theta|` in the thousands
costs no precision. The form is stable wherever :math:`p_j` is representable: a category
whose :math:`p_j` underflows (more than ~87 nats below :math:`\log Z` in float32) is treated
as impossible, which is exact to working precision when :math:`\tau \le 1`; float32 logits at
:math:`\tau > 1` are therefore computed in float64. Masked categories (:math:`\theta_j = -\infty`)
get :math:`1/p_j = \infty` and :math:`s_j = 0`.

**Through the noise (the paper's wording, not the default).** Paulus et al. write that the
derivative of :math:`\mathrm{softmax}_\tau(\theta + G^k)` is taken "through both θ and
:math:`G^k`"; ``through_noise=True`` does so, through the race above. With
:math:`r_j = z_j - z_d = -\log(1 + t_j)`, :math:`t_j = E_j/(E_d\,p_j)`, the softmax depends on θ
only through :math:`\log p = \mathrm{log\_softmax}\,\theta`, with
:math:`\partial r_j/\partial \log p_j = t_j/(1 + t_j) =: \sigma_j` (:math:`\sigma_d = 0`), so

.. math::
    w = \frac{1}{\tau K}\sum_k (s_k\odot\sigma_k)\odot\big(u - \langle s_k, u\rangle\big),
    \qquad \hat g = w - p\,\textstyle\sum_j w_j,

accumulated chunk by chunk from the same uniforms as the default. Its mean is not ST-GS's
(``docs/guide/estimators.md``, "The Gumbel-Rao dispute", has the measurement), which is why
the noise is held constant by default, as the spec and nshepperd/gumbel-rao-pytorch do.

**Cost.** Per draw and element: one uniform, one ``log1p``, one ``pow`` and a few products;
category sums are products with a ones vector (a reduction over a short last dimension is
slow on the CPU). Uniforms are drawn in the working dtype (float32 for float32 logits), in
chunks of bounded size, so memory does not grow with K.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from gvbench.estimators.registry import checked_k, register
from gvbench.estimators.sampling import categorical_index, uniform
from gvbench.estimators.validation import check_logits, check_tau

# Elements of one chunk of conditional draws (k_chunk × logits.numel()). On the CPU a chunk
# that stays in the L2 cache (512 KiB of float32) is fastest and keeps memory flat in K; on an
# accelerator kernel launches dominate, so chunks are larger.
CHUNK_ELEMENTS = 1 << 17
ACCELERATOR_CHUNK_ELEMENTS = 1 << 22
# Conditional draws (K × logits.numel()) one call may make: about a minute of work at best.
MAX_CONDITIONAL_DRAWS = 1 << 36


def working_dtype(dtype: torch.dtype, tau: float | Tensor) -> torch.dtype:
    """float64 for float64 logits, and for float32 at τ > 1 (see the module docstring); else
    float32. A τ given as a tensor (one per run under ``vmap``) cannot be compared there: its
    dtype is the precision asked for (:mod:`gvbench.training` makes it float64 at τ > 1)."""
    if isinstance(tau, Tensor):
        above_one = tau.dtype == torch.float64
    else:
        above_one = tau > 1.0
    if dtype == torch.float64 or above_one:
        return torch.float64
    return torch.float32


def conditional_softmax_vjp(
    logits: Tensor,
    index: Tensor,
    grad: Tensor,
    tau: float | Tensor,
    k: int,
    generator: torch.Generator | None,
    through_noise: bool = False,
) -> Tensor:
    r"""GR-MCK's vector-Jacobian product :math:`\frac{1}{\tau K}\sum_k s_k\odot(u - \langle s_k, u\rangle)`.

    ``logits`` (M, n), ``index`` (M,) the sampled categories, ``grad`` = :math:`u` (M, n).
    The K conditional draws use the same uniforms, in the same order, as
    ``conditional_gumbel(logits, index, k)`` (:math:`E = -\log(1 - U)`), so the two agree to
    rounding for the same generator state.

    ``through_noise``: the total derivative, through the race's :math:`G^k(\theta)` as well
    (the module docstring), from the same uniforms.
    """
    dtype = working_dtype(logits.dtype, tau)
    m, n = logits.shape
    p = torch.softmax(logits.to(dtype), -1)
    others = torch.ones_like(p).scatter(-1, index[:, None], 0.0)
    inverse = others / p  # 1/p_j, 0 at the sample, ∞ at a masked category
    u = grad.to(dtype)
    ones = torch.ones(n, 1, dtype=dtype, device=logits.device)
    sum_s = torch.zeros_like(p)
    sum_s_dot = torch.zeros_like(p)
    race_weight = None
    tiny = torch.finfo(dtype).tiny
    budget = CHUNK_ELEMENTS if logits.device.type == "cpu" else ACCELERATOR_CHUNK_ELEMENTS
    chunk = max(1, min(k, budget // max(1, m * n)))
    gather = index[None, :, None]
    done = 0
    while done < k:
        size = min(chunk, k - done)
        # log(1 − U) = −E < 0; the sign cancels in E_j/E_d. Clamped so that E_d > 0.
        w = uniform((size, m, n), dtype, logits.device, generator)
        w.neg_().log1p_().clamp_max_(-tiny)
        sampled = w.gather(-1, gather.expand(size, m, 1))  # −E_d, before the mask zeroes it
        w.mul_(inverse).div_(sampled)  # E_j/(E_d p_j)
        exponent = -1.0 / tau
        # Unnormalised s: 1 at the sample. Out of place for a per-run τ: vmap has no rule
        # for an in-place power with a tensor exponent.
        w.add_(1.0)
        if through_noise:
            race_weight = w.reciprocal().neg_().add_(1.0)  # ∂r_j/∂log p_j = t_j/(1 + t_j)
        q = w.pow(exponent) if isinstance(tau, Tensor) else w.pow_(exponent)
        scale = (q @ ones).reciprocal_()  # 1/Σ_j q_j, (size, m, 1)
        dot = ((q * u) @ ones).mul_(scale).mul_(scale)  # ⟨s, u⟩/Σ_j q_j
        if race_weight is not None:
            q.mul_(race_weight)
        sum_s += (q * scale).sum(0)
        sum_s_dot += (q * dot).sum(0)
        done += size
    vjp = (u * sum_s - sum_s_dot) / (tau * k)
    if through_noise:
        vjp = vjp - p * (vjp @ ones)  # from ∂/∂log p to ∂/∂θ (log p = log_softmax θ)
    return vjp.to(logits.dtype)


class _GumbelRaoSample(torch.autograd.Function):
    """Forward: the one-hot sample D; backward: GR-MCK's VJP (categories last, rows flattened)."""

    # torch.func.vmap batches forward and backward by running them per draw (a ModuleTask
    # measures R draws of a module at once this way).
    generate_vmap_rule = True

    @staticmethod
    def forward(
        logits: Tensor,
        index: Tensor,
        tau: float | Tensor,
        k: int,
        generator: torch.Generator | None,
        through_noise: bool,
    ) -> Tensor:
        return torch.zeros_like(logits).scatter(-1, index[:, None], 1.0)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Tensor) -> None:
        logits, index, tau, k, generator, through_noise = inputs
        per_run = isinstance(tau, Tensor)  # one τ per run (see working_dtype)
        ctx.save_for_backward(logits, index, *([tau] if per_run else []))
        ctx.tau = None if per_run else tau
        ctx.k, ctx.generator, ctx.through_noise = k, generator, through_noise

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        logits, index, *tau = ctx.saved_tensors
        tau = tau[0] if tau else ctx.tau
        vjp = conditional_softmax_vjp(
            logits, index, grad, tau, ctx.k, ctx.generator, ctx.through_noise
        )
        return vjp, None, None, None, None, None


@register(unbiased=False, label="GR-MCK")
def gumbel_rao(
    logits: Tensor,
    tau: float = 1.0,
    *,
    k: int = 1,
    through_noise: bool = False,
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

    the :math:`G^k` drawn by the exponential race (as :func:`conditional_gumbel`) and treated
    as constants. Properties: same mean (bias) as ST-GS for every K; variance non-increasing
    in K and at most ST-GS's; GR-MC1 has ST-GS's distribution; exactly invariant to adding a
    constant to the logits. The K draws are made **in the backward pass** (from
    ``generator``, after the forward's draw of D), in chunks, so memory does not grow with K
    and a forward pass alone costs one sample. Not twice differentiable.
    Requires: :math:`f` differentiable at one-hot inputs. Biased (as ST-GS).

    ``through_noise=True`` (a variant, ``"gumbel_rao(through_noise=True)"``, not swept): the
    paper's literal wording, the total derivative through :math:`G^k(\theta)` of the race too
    (the module docstring). Its mean is **not** ST-GS's, at K = 1 either.
    """
    dim = check_logits(logits, dim)
    tau = check_tau(tau, logits.dtype)
    k = checked_k(gumbel_rao, k)
    if not isinstance(through_noise, bool):
        raise TypeError(f"through_noise must be True or False, got {through_noise!r}")
    if k * logits.numel() > MAX_CONDITIONAL_DRAWS:
        raise ValueError(
            f"k × logits.numel() = {k} × {logits.numel()} exceeds {MAX_CONDITIONAL_DRAWS} "
            "conditional draws in one call; lower k or split the logits"
        )
    theta = logits.movedim(dim, -1)
    shape = theta.shape
    flat = theta.reshape(-1, shape[-1])
    index = categorical_index(flat, -1, generator)
    sample = _GumbelRaoSample.apply(flat, index, tau, k, generator, through_noise)
    return sample.reshape(shape).movedim(-1, dim)
