r"""The unordered set estimator: K samples without replacement (Kool, van Hoof & Welling 2020).

Each example's discrete choices, taken together, are one categorical variable :math:`x` over
the product of their categories. K distinct configurations :math:`S` are drawn without
replacement by Gumbel-top-k over that product, which stochastic beam search (Kool et al.
2019) does variable by variable without enumerating it. The estimator weighs each member
:math:`s \in S` by

.. math::
    R(S, s) = \frac{P^{D\setminus s}(S\setminus s)}{P(S)},

where :math:`P(S)` is the probability of drawing the unordered set :math:`S` and
:math:`P^{D\setminus s}` that of drawing from the domain without :math:`s`. Those set
probabilities depend only on the members' probabilities; they are computed exactly, in log
space, by a dynamic programme over the :math:`2^K` subsets of :math:`S`: with
:math:`Q(\emptyset) = 1`,

.. math::
    Q(A) = \sum_{s\in A} Q(A\setminus s)\,\frac{p_s}{1 - r - p(A\setminus s)},
    \qquad P(S) = Q(S),

where :math:`r` is the mass taken out of the domain (:math:`p_s` for :math:`D\setminus s`).
Every denominator is a sum of positive masses (the mass outside :math:`S` plus the members
still undrawn), so nothing cancels.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.sampling import gumbel_like
from gvbench.estimators.surrogates import log_prob, sum_to_examples
from gvbench.estimators.validation import (
    check_logits,
    check_losses,
    check_objective,
    refuse_subset_size,
)


class _Probe:
    """A sampler that records every call's logits and answers with their argmax."""

    def __init__(self) -> None:
        self.calls: list[tuple[Tensor, int]] = []

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        dim = check_logits(logits, dim)
        self.calls.append((logits.detach(), dim))
        index = logits.detach().argmax(dim, keepdim=True)
        return torch.zeros_like(logits.detach()).scatter(dim, index, 1.0)


class _Member:
    """A sampler that replays member ``j`` of the set and records :math:`\\log q` with its graph."""

    def __init__(self, probe: _Probe, choices: list[Tensor], j: int) -> None:
        self.probe, self.choices, self.j = probe, choices, j
        self.log_probs: list[Tensor] = []

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        dim = check_logits(logits, dim)
        call = len(self.log_probs)
        if call >= len(self.probe.calls) or not torch.equal(
            self.probe.calls[call][0], logits.detach()
        ):
            raise ValueError(
                "the unordered set estimator needs every choice's logits to be the same in all "
                "of its evaluations: choices whose logits depend on earlier samples are not "
                "supported"
            )
        index = self.choices[call][..., self.j]  # (*example, *variables) in moved-dim layout
        moved = logits.movedim(dim, -1)
        sample = torch.zeros_like(moved.detach()).scatter(-1, index.unsqueeze(-1), 1.0)
        sample = sample.movedim(-1, dim)
        self.log_probs.append(log_prob(logits, sample, dim))
        return sample


def _log1mexp(x: Tensor) -> Tensor:
    """:math:`\\log(1 - e^x)` for :math:`x \\le 0`, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _conditional_children(
    parent: Tensor, log_p: Tensor, generator: torch.Generator | None
) -> Tensor:
    r"""Gumbels of the children, located at ``log_p``, conditioned on their maximum being ``parent``.

    With :math:`\tilde G_c \sim \mathrm{Gumbel}(\log p_c)` and :math:`Z = \max_c \tilde G_c`,
    :math:`G_c = -\log(e^{-T} - e^{-Z} + e^{-\tilde G_c})` (Kool et al. 2019), written as
    :math:`T - \mathrm{softplus}(T - \tilde G_c + \log(1 - e^{\tilde G_c - Z}))` so that it
    neither overflows nor cancels; the arg-max child gets exactly :math:`T`.
    """
    perturbed = log_p + gumbel_like(log_p, generator)
    top = perturbed.amax(-1, keepdim=True)
    gap = (perturbed - top).clamp_max(0.0)
    return parent - torch.nn.functional.softplus(parent - perturbed + _log1mexp(gap))


def _top_k_configurations(
    variables: list[Tensor], k: int, generator: torch.Generator | None
) -> tuple[list[Tensor], Tensor]:
    """Gumbel-top-k over the product of ``variables`` (each ``(E, n)`` log-probabilities).

    Returns each variable's chosen category per member, ``(E, k)`` each, and the members'
    joint log-probabilities ``(E, k)``.
    """
    examples = variables[0].shape[0]
    like = variables[0]
    log_p = like.new_zeros(examples, 1)
    gumbel = like.new_zeros(examples, 1)
    history = like.new_zeros(examples, 1, 0, dtype=torch.long)
    for logits in variables:
        n = logits.shape[-1]
        child_log_p = log_p.unsqueeze(-1) + logits.unsqueeze(1)  # (E, beams, n)
        child_gumbel = _conditional_children(gumbel.unsqueeze(-1), child_log_p, generator)
        width = min(k, child_log_p.shape[1] * n)
        gumbel, flat = child_gumbel.flatten(1).topk(width, -1)
        parent, category = flat // n, flat % n
        log_p = child_log_p.flatten(1).gather(1, flat)
        history = torch.cat(
            [
                history.gather(1, parent.unsqueeze(-1).expand(-1, -1, history.shape[-1])),
                category.unsqueeze(-1),
            ],
            -1,
        )
    if log_p.shape[1] < k or not torch.isfinite(log_p).all():
        raise ValueError(
            f"k = {k} exceeds the number of possible configurations of an example's discrete "
            "choices; sampling without replacement needs at least k of them"
        )
    return list(history.unbind(-1)), log_p


@functools.cache
def _subset_layers(m: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per subset size c = 1..m of m members: the bit masks of that size ``(M_c,)``, each
    mask less one of its members ``(M_c, c)``, and that member ``(M_c, c)``."""
    layers = []
    for size in range(1, m + 1):
        subsets = [sum(1 << s for s in c) for c in itertools.combinations(range(m), size)]
        bits = [[s for s in range(m) if a >> s & 1] for a in subsets]
        layers.append(
            (
                torch.tensor(subsets),
                torch.tensor(
                    [[a ^ (1 << s) for s in b] for a, b in zip(subsets, bits, strict=True)]
                ),
                torch.tensor(bits),
            )
        )
    return layers


def _log_set_probability(log_weight: Tensor, log_outside: Tensor) -> Tensor:
    """log P(``log_weight``'s m members are the first m drawn), ``log_weight`` ``(N, m)``
    and the mass ``log_outside`` ``(N,)`` of the rest of the domain, on one common scale."""
    n, m = log_weight.shape
    if m == 0:
        return log_weight.new_zeros(n)
    # log_mass[a]: the members in bit mask a, a log-sum of positive terms built member by
    # member; log_remaining[a]: the mass still undrawn after a (row a of the flip is
    # full - a). Log space throughout: members may lie hundreds of nats below each other.
    # Subsets lead every table so that the programme gathers whole rows.
    log_mass = log_weight.new_full((1 << m, n), -math.inf)
    for s in range(m):
        log_mass[1 << s : 1 << (s + 1)] = torch.logaddexp(log_mass[: 1 << s], log_weight[:, s])
    log_remaining = torch.logaddexp(log_outside, log_mass.flip(0))
    log_weight = log_weight.T
    # h[a] = log Q(a) - log remaining(a), so that log Q(a) = logsumexp_s(h[a - s] + log w_s).
    h = log_remaining.new_full((1 << m, n), -math.inf)
    h[0] = -log_remaining[0]
    for subset, before, member in _subset_layers(m):
        subset, before, member = (t.to(log_weight.device) for t in (subset, before, member))
        terms = h.index_select(0, before.reshape(-1)) + log_weight.index_select(
            0, member.reshape(-1)
        )
        log_q = terms.view(len(subset), before.shape[-1], n).logsumexp(1)
        h.index_copy_(0, subset, log_q - log_remaining.index_select(0, subset))
    # The last layer is the full set, whose remaining mass may be 0: read log Q, not h.
    return log_q[0]


# Examples per pass: the leave-two-out programme's temporaries hold about
# examples × K(K-1)/2 × (K-2) 2^(K-3) elements; this bounds them to 2^24 (128 MiB).
DP_ELEMENTS = 1 << 24


def _set_log_ratios(log_p: Tensor) -> tuple[Tensor, Tensor]:
    r"""First- and second-order log ratios of the unordered set of members with ``log_p`` ``(E, k)``.

    Returns :math:`\log R(S, s) = \log P^{D\setminus s}(S\setminus s) - \log P(S)` ``(E, k)``
    and :math:`\log R_2(s, s') = \log P^{D\setminus\{s,s'\}}(S\setminus\{s,s'\}) -
    \log P^{D\setminus s}(S\setminus s)` ``(E, k, k)``, 0 on the diagonal. Drawing from
    :math:`D\setminus s` is drawing from :math:`D` with :math:`s` out of the running, so every
    leave-out set is the same programme on fewer members with the same mass outside S.
    """
    examples, k = log_p.shape
    chunk = max(1, DP_ELEMENTS // (k * k * (1 << k)))
    if examples > chunk:
        parts = [_set_log_ratios(part) for part in log_p.split(chunk)]
        return torch.cat([r for r, _ in parts]), torch.cat([r2 for _, r2 in parts])
    # 1 - p(S) in float64: where the members hold all but ~1e-16 of the mass, the ratios of
    # members lighter than that are approximate (and so are their contributions, below 1e-16).
    log_outside = _log1mexp(log_p.logsumexp(-1).clamp_max(0.0))
    members = torch.arange(k, device=log_p.device)
    pairs = list(itertools.combinations(range(k), 2))
    keep_one = torch.stack([members[members != s] for s in range(k)])  # (k, k-1)
    keep_two = torch.stack([members[(members != s) & (members != t)] for s, t in pairs])
    whole = _log_set_probability(log_p, log_outside)
    single = _log_set_probability(
        log_p[:, keep_one].reshape(examples * k, k - 1), log_outside.repeat_interleave(k)
    ).view(examples, k)
    double = _log_set_probability(
        log_p[:, keep_two].reshape(examples * len(pairs), k - 2),
        log_outside.repeat_interleave(len(pairs)),
    ).view(examples, len(pairs))
    log_r = single - whole.unsqueeze(-1)
    log_r2 = torch.zeros(examples, k, k, dtype=log_p.dtype, device=log_p.device)
    for index, (s, t) in enumerate(pairs):
        log_r2[:, s, t] = double[:, index] - single[:, s]
        log_r2[:, t, s] = double[:, index] - single[:, t]
    return log_r, log_r2


@register(
    unbiased=True,
    label="US-BL",
    min_k=2,
    max_k=10,  # the dynamic programme costs O(K^3 2^K) per example (ms at K = 10)
    sequential=False,
    without_replacement=True,
    evaluations=lambda o, c: o["k"] + 1,  # one run finds the choices' logits
)
def unordered_set(
    objective: Objective, *, k: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    r"""The unordered set estimator with its built-in baseline (Kool, van Hoof & Welling 2020, ICLR).

    Approximates: :math:`\nabla_\theta \mathbb{E}_{x\sim p_\theta}[f(x)]`, unbiased, from K
    distinct configurations :math:`S` drawn without replacement (Gumbel-top-k):

    .. math::
        \hat g = \sum_{s\in S} p(s) R(S, s)\,\Big[\nabla f(s) + \nabla\log p(s)\,
        \Big(f(s) - \sum_{s'\in S} p(s') R_2(s, s') f(s')\Big)\Big],

    with :math:`R(S,s) = P^{D\setminus s}(S\setminus s)/P(S)`,
    :math:`R_2(s,s') = P^{D\setminus\{s,s'\}}(S\setminus\{s,s'\})/P^{D\setminus s}(S\setminus s)`
    and :math:`R_2(s,s) = 1`: the baseline of member s is the unordered set estimate of
    :math:`\mathbb{E}f` from the other members, so its expectation is the same for every s and
    it adds no bias. Without replacement, duplicate samples never waste evaluations: at low
    entropy the estimate tends to the exact sum over the likely configurations.
    An example's discrete choices (any number of variables and sampler calls) form one joint
    variable, and a choice shared by the examples (logits with a size-1 example axis) joins
    all of theirs into one; their logits must not depend on earlier samples. Runs the
    objective K + 1 times (one run finds the logits). 2 ≤ K ≤ 10: the set probabilities are
    computed exactly in :math:`O(K^3 2^K)` per example. Returns per-example surrogates whose
    value is the unbiased estimate :math:`\sum_s p(s)R(S,s) f(s)` of :math:`\mathbb{E}f`.
    """
    check_objective(objective)
    k = checked_k(unordered_set, k)
    probe = _Probe()
    example_shape = check_losses(objective(probe)).shape
    if not probe.calls:
        raise ValueError("the objective made no discrete choice (it never called the sampler)")
    moved = [logits.movedim(dim, -1) for logits, dim in probe.calls]
    ndim = len(example_shape)
    for theta in moved:
        if theta.shape[:ndim] != example_shape:  # raises, naming the shapes, unless shared
            sum_to_examples(theta[..., 0], example_shape, "the logits")
    # A choice shared by the examples along an axis (size 1 there) couples them: from the first
    # such axis on, the set is drawn over the joint choices of all those examples.
    independent = next(
        (i for i in range(ndim) if any(t.shape[i] != example_shape[i] for t in moved)), ndim
    )
    rows = example_shape[:independent]
    layout = (*rows, *[1] * (ndim - independent))
    variables = []
    for theta in moved:
        flat = torch.log_softmax(theta.to(torch.float64), -1)
        variables.extend(flat.reshape(math.prod(rows), -1, theta.shape[-1]).unbind(1))
    choices, member_log_p = _top_k_configurations(variables, k, generator)
    # Each call's choices back in its own layout: (*example, *variables, k).
    per_call, start = [], 0
    for theta in moved:
        count = math.prod(theta.shape[independent:-1])
        block = torch.stack(choices[start : start + count], 1)
        per_call.append(block.reshape(*theta.shape[:-1], k))
        start += count
    losses, log_qs = [], []
    for j in range(k):
        member = _Member(probe, per_call, j)
        loss = check_losses(objective(member))
        if loss.shape != example_shape or len(member.log_probs) != len(probe.calls):
            raise ValueError("the objective made different choices in its evaluations")
        losses.append(loss)
        if independent == ndim:
            log_qs.append(sum(sum_to_examples(lp, example_shape) for lp in member.log_probs))
        else:  # the member's log q: every choice it couples
            joint = sum(lp.reshape(*rows, -1).sum(-1) for lp in member.log_probs)
            log_qs.append(joint.reshape(layout).expand(example_shape))
    f = torch.stack(losses, -1)  # (*example, k)
    log_q = torch.stack(log_qs, -1)
    log_r, log_r2 = _set_log_ratios(member_log_p)
    dtype = f.dtype
    weight = (member_log_p + log_r).exp().reshape(*layout, k).to(dtype)
    # Baseline of member s: Σ_s' p(s') R₂(s, s') f(s'), an estimate of E f from the others.
    cross = (member_log_p.unsqueeze(1) + log_r2).exp().reshape(*layout, k, k).to(dtype)
    baseline = (cross * f.detach().unsqueeze(-2)).sum(-1)
    advantage = (f - baseline).detach()
    surrogate = weight * f + weight * advantage * (log_q - log_q.detach())
    return surrogate.sum(-1)
