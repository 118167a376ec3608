r"""ARMS and CARMS: K jointly antithetic samples through a copula, importance-weighted.

K uniforms coupled by the Dirichlet copula (Dimitriev & Zhou 2021),

.. math::
    d \sim \mathrm{Dirichlet}(1, \dots, 1),\qquad u_k = (1 - d_k)^{K-1},

are each U(0, 1) but negatively dependent: two of them rarely fall close together, so K
samples drawn through them repeat less often than independent ones. Its bivariate CDF is
:math:`C(x, y) = \max(x^{1/(K-1)} + y^{1/(K-1)} - 1,\ 0)^{K-1}`. The leave-one-out score
function stays unbiased when each pair's term is weighted by
:math:`q(z_i)\,q(z_j) / P(z_i, z_j)`, the independent law over the coupled one; with
independent samples the weights are 1 and the estimators are RLOO.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import threading
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.replay import check_binary, joint_runs, logit_surrogate
from gvbench.estimators.sampling import randint, uniform_like
from gvbench.estimators.validation import check_objective

# The largest K of ARMS and CARMS: K copies of every choice per call, K runs of the objective.
COPULA_MAX_K = 1 << 10


def dirichlet_copula(
    k: int, shape: torch.Size, like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    r"""K uniforms per element, coupled by the Dirichlet copula: ``(k, *shape)``, float64.

    :math:`E_k = -\log(1 - U_k)`, :math:`d = E / \sum_k E`, :math:`u_k = (1 - d_k)^{K-1}`.
    """
    e = uniform_like((k, *shape), like, generator).neg_().log1p_().neg_()
    d = e / e.sum(0, keepdim=True)
    return torch.exp((k - 1) * torch.log1p(-d))


def dirichlet_copula_cdf(x: Tensor, y: Tensor, k: int) -> Tensor:
    r""":math:`C(x, y) = P(u_i \le x, u_j \le y)` for two of the K coupled uniforms."""
    power = 1.0 / (k - 1)
    return (x.pow(power) + y.pow(power) - 1).clamp_min(0).pow(k - 1)


def _arms_samples(phi: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """ARMS's K Bernoulli draws per logit: the copula turned so that the rarer outcome's
    draws are the antithetic ones."""
    u = dirichlet_copula(k, phi.shape, phi, generator)
    p = torch.sigmoid(phi.to(torch.float64))
    u = torch.where(p < 0.5, u, 1 - u)
    return (u < p).long()


def _arms_weight(phi: Tensor, k: int) -> Tensor:
    r"""ARMS's debiasing weight :math:`p(1-p)/P(b_i = 1, b_j = 0)`, with
    :math:`P(1, 0) = q - C(q, q)` and :math:`q = \min(p, 1 - p)`, written
    :math:`(1 - q)/(1 - C(q, q)/q)`: finite for any logit (1 where q underflows to 0)."""
    q = torch.sigmoid(-phi.to(torch.float64).abs())
    tiny = torch.finfo(q.dtype).tiny
    return (1 - q) / (1 - dirichlet_copula_cdf(q, q, k) / q.clamp_min(tiny))


@register(
    unbiased=True,
    binary_only=True,
    sequential=False,
    label="ARMS",
    min_k=2,
    max_k=COPULA_MAX_K,
    evaluations=lambda o, c: o["k"],
)
def arms(objective: Objective, *, k: int = 2, generator: torch.Generator | None = None) -> Tensor:
    r"""ARMS, antithetic REINFORCE multi-sample (Dimitriev & Zhou 2021, ICML), Bernoulli variables.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{b\sim\mathrm{Bern}(\sigma(\varphi))}[f(b)]`, unbiased.
    With: K Bernoulli draws per variable through the Dirichlet copula (turned,
    :math:`u \to 1 - u`, where :math:`p \ge \frac12`), and

    .. math::
        \hat g = \frac{1}{K-1}\sum_k \big(f(b_k) - \bar f\big)\,(b_k - p)\,
        \frac{p(1-p)}{P(b_i = 1, b_j = 0)},

    RLOO with one weight per variable for its coupling (the authors' estimator; their code
    adds 1e-6 to the denominator, which this computes exactly instead). K = 2 is
    antithetic sampling. Runs the objective K times; every choice's logits must be fixed in
    advance. Returns per-example surrogates (value: the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(arms, k)
    stacked, first, draws, _ = joint_runs(
        objective, k, "ARMS", lambda theta: _arms_samples(check_binary(theta, "ARMS"), k, generator)
    )
    example_ndim = stacked.dim() - 1
    gradients = []
    for theta, b in zip(first.thetas, draws, strict=True):
        phi = check_binary(theta.detach(), "ARMS")
        p = torch.sigmoid(phi.to(torch.float64))
        f = stacked.detach().to(torch.float64)
        f = f.reshape(*f.shape, *[1] * (b.dim() - 1 - example_ndim))
        g = ((f - f.mean(0)) * (b - p)).sum(0) / (k - 1) * _arms_weight(phi, k)
        gradients.append(torch.stack([-g, g], -1))
    return stacked.mean(0) + logit_surrogate(first.thetas, gradients, stacked.shape[1:])


def carms_orders(n: int) -> Tensor:
    """The authors' category orders for n categories: n(n − 1)/2 of them, one for each pair of
    categories, which lie at the two ends (where antithetic uniforms fall), ``(P, n)``."""
    orders = []
    for i, j in itertools.product(range(n), range(n - 1)):
        order = [(r - i) % n for r in range(n)]
        rest = order[1:]
        order = [order[0], *rest[-j:], *rest[:-j]] if j else order
        if order[0] < order[-1]:
            orders.append(order)
    return torch.tensor(orders, dtype=torch.long)


def _boundaries(p: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """Each category's interval [L, R) of [0, 1] when the categories are laid out in ``order``
    (the last boundary exactly 1), indexed by category."""
    right = p.gather(-1, order).cumsum(-1)
    right = right / right[..., -1:]
    left = torch.cat([torch.zeros_like(right[..., :1]), right[..., :-1]], -1)
    position = torch.empty_like(order).scatter(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    return left.gather(-1, position), right.gather(-1, position)


def _carms_samples(p: Tensor, orders: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """K coupled draws per variable: one random order per variable, K copula uniforms placed
    on its intervals. Category indices, ``(k, *p.shape[:-1])``."""
    pick = randint(orders.shape[0], p.shape[:-1], p.device, generator)
    order = orders.to(p.device)[pick]
    right = p.gather(-1, order).cumsum(-1)
    right = right / right[..., -1:]
    u = dirichlet_copula(k, p.shape[:-1], p, generator)
    position = (right.unsqueeze(0) < u.unsqueeze(-1)).sum(-1)  # right[-1] = 1 > u
    return order.unsqueeze(0).expand(k, *order.shape).gather(-1, position.unsqueeze(-1)).squeeze(-1)


def carms_joint(p: Tensor, k: int) -> Tensor:
    r""":math:`P(z_i = a, z_j = b)` for two of the K coupled draws (i ≠ j), for every pair of
    categories, ``(…, n, n)``, averaged over the random order: for each order,
    :math:`C(R_a, R_b) - C(L_a, R_b) - C(R_a, L_b) + C(L_a, L_b)` (``p`` (…, n), float64)."""
    orders = carms_orders(p.shape[-1]).to(p.device)
    total = p.new_zeros((*p.shape, p.shape[-1]))
    for order in orders:
        left, right = _boundaries(p, order.expand_as(p))
        la, ra = left.unsqueeze(-1), right.unsqueeze(-1)
        lb, rb = left.unsqueeze(-2), right.unsqueeze(-2)
        total = total + (
            dirichlet_copula_cdf(ra, rb, k)
            - dirichlet_copula_cdf(la, rb, k)
            - dirichlet_copula_cdf(ra, lb, k)
            + dirichlet_copula_cdf(la, lb, k)
        )
    return total / orders.shape[0]


# A sweep cell draws at fixed parameters, so each of its draws asks for the weights of the
# same probabilities, which cost far more than the draw's K runs (n(n − 1)/2 orders of n²
# pairs per variable). The last few are kept, by content, shape and thread count (torch may
# round a pow's last bit differently where threads split the work): a kept tensor is bit for
# bit what a new computation would return. Tensors inside torch.func transforms (batched
# draws) cannot be read, so they are not kept.
KEPT_WEIGHTS = 4
_kept: collections.OrderedDict[tuple[Any, ...], Tensor] = collections.OrderedDict()
_kept_lock = threading.Lock()


def _kept_weights(p: Tensor, k: int) -> Tensor:
    """:func:`carms_weights` of ``p``, computed once for the last :data:`KEPT_WEIGHTS`
    probabilities seen."""
    if torch._C._functorch.is_functorch_wrapped_tensor(p):
        return carms_weights(p, k)
    content = hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).digest()
    key = (k, p.dtype, p.device, tuple(p.shape), torch.get_num_threads(), content)
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    weights = carms_weights(p, k)
    with _kept_lock:
        _kept[key] = weights
        while len(_kept) > KEPT_WEIGHTS:
            _kept.popitem(last=False)
    return weights


def carms_weights(p: Tensor, k: int) -> Tensor:
    r"""The importance weight :math:`p_a p_b / P(z_i = a, z_j = b)` of every pair of categories,
    ``(…, n, n)``; 0 where the coupling never draws the pair (it then never weighs anything)."""
    joint = carms_joint(p, k)
    independent = p.unsqueeze(-1) * p.unsqueeze(-2)
    possible = joint > torch.finfo(p.dtype).tiny
    return torch.where(possible, independent / torch.where(possible, joint, 1.0), 0.0)


@register(
    unbiased=True,
    sequential=False,
    label="CARMS",
    min_k=2,
    max_k=COPULA_MAX_K,
    evaluations=lambda o, c: o["k"],
)
def carms(objective: Objective, *, k: int = 2, generator: torch.Generator | None = None) -> Tensor:
    r"""CARMS, categorical antithetic REINFORCE multi-sample (Dimitriev & Zhou 2021, NeurIPS).

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z\sim\mathrm{Cat}(\mathrm{softmax}\,\theta)}[f(z)]`, unbiased.
    With: per variable a random order of the categories and K Dirichlet-copula uniforms placed
    on its intervals (the authors' CARMS-I: every pair of categories lies at the two ends in
    one of the n(n − 1)/2 orders), and

    .. math::
        \hat g = \frac1K\sum_i (e_{z_i} - p)\,\frac{1}{K-1}\sum_{j\ne i}
        \frac{p_{z_i} p_{z_j}}{P(z_i, z_j)}\,\big(f(z_i) - f(z_j)\big),

    :math:`P` the coupled pair's probability averaged over the orders, computed exactly. The
    authors' code smooths and clips the weight,
    :math:`\mathrm{clip}((p_a p_b + 10^{-3})/(P + 10^{-3}), 0.01, 10)`, which is biased where
    pairs are rare; this does not. Independent samples would give weights 1, i.e. RLOO; two
    categories give ARMS up to the copula's orientation and the weight of pairs that agree.
    Runs the objective K times; every choice's logits must be fixed in advance. Returns
    per-example surrogates (value: the mean of the K losses).
    """
    check_objective(objective)
    k = checked_k(carms, k)

    def draw(theta: Tensor) -> Tensor:
        p = torch.softmax(theta.to(torch.float64), -1)
        return _carms_samples(p, carms_orders(p.shape[-1]), k, generator)

    stacked, first, draws, _ = joint_runs(objective, k, "CARMS", draw)
    example_ndim = stacked.dim() - 1
    gradients = []
    for theta, z in zip(first.thetas, draws, strict=True):
        p = torch.softmax(theta.detach().to(torch.float64), -1)
        n = p.shape[-1]
        categories = torch.arange(n, device=p.device)
        weights = _kept_weights(p, k)  # (…, n, n), by pair of categories
        f = stacked.detach().to(torch.float64)
        f = f.reshape(*f.shape, *[1] * (z.dim() - 1 - example_ndim))
        drawn = (z.unsqueeze(-1) == categories).to(p.dtype)  # (K, …, n)
        # Σ_{j≠i} w(z_i, z_j)(f_i − f_j) by category, in O(K n) per variable rather than K²:
        # the other draws' counts and loss sums per category. Counted without draw i (not
        # subtracted after), so that a pair that never occurs, whose weight may be rounding
        # noise over rounding noise, meets an exact zero.
        others = drawn.sum(0) - drawn  # (K, …, n)
        others_total = (drawn * f.unsqueeze(-1)).sum(0) - drawn * f.unsqueeze(-1)
        index = z[..., None, None].expand(*z.shape, 1, n)
        row = weights.expand(k, *weights.shape).gather(-2, index).squeeze(-2)  # w(z_i, ·)
        pairs = (row * others).sum(-1)
        weighted = (row * others_total).sum(-1)
        signal = (f * pairs - weighted) / (k - 1)  # (K, …)
        gradients.append((signal.unsqueeze(-1) * (drawn - p)).mean(0))
    return stacked.mean(0) + logit_surrogate(first.thetas, gradients, stacked.shape[1:])
