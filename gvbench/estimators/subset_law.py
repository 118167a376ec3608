r"""The k-subset law: choose ``size`` of n items, with the exponential-family weights of SIMPLE.

.. math::
    p_\theta(z) = \frac{\exp(\theta^\top z)}{Z_k(\theta)},\qquad
    z \in \{0, 1\}^n,\ \textstyle\sum_i z_i = k,\qquad
    Z_k(\theta) = e_k(e^{\theta_1}, \dots, e^{\theta_n}),

the law of independent :math:`\mathrm{Bernoulli}(\sigma(\theta_i))` conditioned on exactly
:math:`k` successes (Ahmed et al. 2023, SIMPLE's "k-subset distribution"). The partition
function :math:`Z_k` is the elementary symmetric polynomial of degree :math:`k` in
:math:`e^\theta`, computed by the recursion
:math:`e_j(x_{1..i}) = e_j(x_{1..i-1}) + x_i\, e_{j-1}(x_{1..i-1})` in log space
(:math:`O(nk)`). Its gradient is the vector of marginals :math:`\mathbb{E}[z]`, and the same
tables, run from the other end, give exact samples one item at a time.

Every function works on the last dimension (the items) and is batched over the leading ones.
Logits must be finite (a ``-inf`` item would shrink the support below ``size``); ``size`` is
an integer in :math:`[1, n-1]` (``0`` and ``n`` leave a single subset, nothing to learn).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers

import torch
from torch import Tensor

from gvbench.estimators.sampling import uniform
from gvbench.estimators.streams import NoiseStream
from gvbench.estimators.validation import check_logits, validate_args

__all__ = [
    "check_subset",
    "check_subset_size",
    "enumerate_subsets",
    "subset_log_partition",
    "subset_log_prob",
    "subset_marginals",
    "subset_sample",
    "top_k_hot",
]


def check_subset_size(size: object, items: int) -> int:
    """``size`` as an integer in ``[1, items − 1]``; a one-line error naming it otherwise."""
    if isinstance(size, Tensor) and size.numel() == 1 and not size.is_floating_point():
        size = size.item()
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(
            f"size (items chosen) must be an integer in [1, n - 1], got {size!r} "
            f"({type(size).__name__})"
        )
    size = int(size)
    if not 1 <= size <= items - 1:
        raise ValueError(
            f"size (items chosen) must be an integer in [1, n - 1] = [1, {items - 1}] for "
            f"n = {items} items, got {size}"
        )
    return size


def check_subset(logits: Tensor, size: object, dim: int = -1) -> tuple[int, int]:
    """Check a k-subset's logits (items along ``dim``, all finite) and its size; returns
    ``(dim, size)``, ``dim`` non-negative. Errors name the argument and its range."""
    dim = check_logits(logits, dim)
    if validate_args() and logits.numel() and not bool(torch.isfinite(logits.detach()).all()):
        raise ValueError(
            "logits of a k-subset must be finite: every item must be possible (no -inf, NaN "
            "or +inf)"
        )
    return dim, check_subset_size(size, logits.shape[dim])


def _checked(logits: Tensor, size: object) -> int:
    return check_subset(logits, size)[1]


def _prefix_table(theta: Tensor, size: int) -> Tensor:
    r"""``T[..., i, j] = log e_j(exp θ_1, …, exp θ_i)`` for ``i = 0 … n``, ``j = 0 … size``.

    Only the reachable entries (``j ≤ i``) are computed; the others are the constant
    ``-inf``, outside the graph, so that neither the gradient nor the second derivative
    meets an ``-inf − (-inf)``.
    """
    leading, n = theta.shape[:-1], theta.shape[-1]
    unreachable = theta.new_full((*leading, size + 1), -math.inf)
    row = theta.new_zeros((*leading, 1))  # log e_0 = 0
    rows = [torch.cat([row, unreachable[..., 1:]], -1)]
    for i in range(n):
        item = theta[..., i : i + 1]
        parts = [row[..., :1], torch.logaddexp(row[..., 1:], row[..., :-1] + item)]
        if row.shape[-1] <= size:
            parts.append(row[..., -1:] + item)
        row = torch.cat(parts, -1)
        rows.append(torch.cat([row, unreachable[..., row.shape[-1] :]], -1))
    return torch.stack(rows, -2)


def _suffix_table(theta: Tensor, size: int) -> Tensor:
    """``T[..., i, j] = log e_j(exp θ_{i+1}, …, exp θ_n)``: the items from ``i`` on."""
    return _prefix_table(theta.flip(-1), size).flip(-2)


def subset_log_partition(logits: Tensor, size: int) -> Tensor:
    r""":math:`\log Z_k(\theta) = \log \sum_{|z| = k} \exp(\theta^\top z)`, differentiable.

    Args:
        logits: :math:`\theta`, shape ``(..., n)``, finite.
        size: :math:`k`, an integer in ``[1, n − 1]``.

    Returns:
        Tensor of shape ``logits.shape[:-1]``; its gradient is :func:`subset_marginals`.
    """
    size = _checked(logits, size)
    return _prefix_table(logits, size)[..., -1, size]


def subset_marginals(logits: Tensor, size: int) -> Tensor:
    r"""The marginals :math:`\mu_i = p_\theta(z_i = 1) = \partial \log Z_k / \partial\theta_i`.

    :math:`\mu_i = \exp(\theta_i + \log e_{k-1}(\theta_{-i}) - \log Z_k)`, with
    :math:`e_{k-1}(\theta_{-i})` assembled from the prefix and suffix tables
    (:math:`\log\sum_j e_j(\theta_{<i})\,e_{k-1-j}(\theta_{>i})`). An explicit formula, not
    a call to autograd: it is differentiable (second derivatives, the Hessian of
    :math:`\log Z_k`, by autograd of it) and works under ``torch.func`` transforms.

    Returns:
        Tensor of ``logits``' shape and dtype; each row sums to ``size``.
    """
    size = _checked(logits, size)
    prefix = _prefix_table(logits, size)
    suffix = _suffix_table(logits, size)
    # j items among those before i, k − 1 − j among those after it
    before = prefix[..., :-1, :size]
    after = suffix[..., 1:, :size].flip(-1)
    without = torch.logsumexp(before + after, -1)
    return torch.exp(logits + without - prefix[..., -1:, size])


def subset_sample(
    logits: Tensor,
    size: int,
    *,
    generator: torch.Generator | NoiseStream | None = None,
) -> Tensor:
    r"""An exact sample :math:`z \sim p_\theta` (k-hot along the last dimension), no gradient.

    Item by item, with :math:`r` items still to choose among items :math:`i..n`:
    :math:`P(z_i = 1) = \exp(\theta_i + \log e_{r-1}(\theta_{>i}) - \log e_r(\theta_{\ge i}))`,
    one uniform per item; an item is taken whenever the rest must all be taken, so every row
    has exactly ``size`` ones. The tables are computed in float64 from the detached logits.

    Args:
        logits: :math:`\theta`, shape ``(..., n)``, finite.
        size: :math:`k`, an integer in ``[1, n − 1]``.
        generator: a ``torch.Generator`` or a noise stream; ``n`` uniforms per row.

    Returns:
        Tensor of ``logits``' shape and dtype, entries 0 or 1, ``size`` ones per row.
    """
    size = _checked(logits, size)
    theta = logits.detach().to(torch.float64)
    n = theta.shape[-1]
    suffix = _suffix_table(theta, size)
    u = uniform(theta.shape, torch.float64, theta.device, generator)
    remaining = torch.full(theta.shape[:-1], size, dtype=torch.long, device=theta.device)
    chosen = []
    for i in range(n):
        below = suffix[..., i + 1, :].gather(-1, (remaining - 1).clamp_min(0).unsqueeze(-1))
        here = suffix[..., i, :].gather(-1, remaining.unsqueeze(-1))
        p = torch.exp(theta[..., i] + below.squeeze(-1) - here.squeeze(-1))
        take = (remaining >= n - i) | ((remaining > 0) & (u[..., i] < p))
        chosen.append(take)
        remaining = remaining - take.long()
    return torch.stack(chosen, -1).to(logits.dtype)


def subset_log_prob(logits: Tensor, sample: Tensor, size: int | None = None) -> Tensor:
    r""":math:`\log p_\theta(z) = \theta^\top z - \log Z_k(\theta)` of a k-hot ``sample``.

    Args:
        logits: :math:`\theta`, shape ``(..., n)``, finite.
        sample: k-hot, broadcastable to ``logits``' shape, the same number of ones per row.
        size: :math:`k` where the caller knows it (then the sample's values are not read to
            find it, as under ``torch.func`` transforms); ``None`` reads it from the sample.

    Returns:
        Tensor of the broadcast shape less the last dimension; differentiable in ``logits``.
    """
    if not isinstance(sample, Tensor):
        raise TypeError(f"sample must be a torch.Tensor, got {type(sample).__name__}")
    if sample.shape[-1:] != logits.shape[-1:]:
        raise ValueError(
            f"sample must be k-hot over the logits' {logits.shape[-1]} items (last "
            f"dimension), got shape {tuple(sample.shape)}"
        )
    if size is None:
        counts = sample.detach().sum(-1).reshape(-1)
        size = int(counts[0]) if counts.numel() else 1
    size = _checked(logits, size)
    if validate_args() and sample.numel():
        values = sample.detach()
        if not bool(((values == 0) | (values == 1)).all() and (values.sum(-1) == size).all()):
            raise ValueError(f"sample must be k-hot: entries 0 or 1, {size} ones in every row")
    return (logits * sample).sum(-1) - subset_log_partition(logits, size)


def enumerate_subsets(
    n: int,
    size: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Every k-subset of ``n`` items as k-hot rows, shape ``(C(n, size), n)``, in
    lexicographic order of the chosen items."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"n (items) must be an integer >= 2, got {n!r}")
    size = check_subset_size(size, int(n))
    return _subset_rows(int(n), size).to(dtype=dtype or torch.get_default_dtype(), device=device)


@functools.lru_cache(maxsize=16)
def _subset_rows(n: int, size: int) -> Tensor:
    # Kept: exact enumeration asks for the table at every sampler call of every outcome.
    chosen = torch.tensor(list(itertools.combinations(range(n), size)))
    return torch.zeros(len(chosen), n, dtype=torch.bool).scatter_(1, chosen, True)


def top_k_hot(keys: Tensor, size: int) -> Tensor:
    """The k-hot of the ``size`` largest ``keys`` along the last dimension, no gradient: the
    MAP state of the k-subset law of logits ``keys``."""
    index = keys.detach().topk(size, -1).indices
    return torch.zeros_like(keys, memory_format=torch.contiguous_format).scatter(-1, index, 1.0)
