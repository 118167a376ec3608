r"""DisARM for categorical variables through a stick-breaking coupling (Dong, Mnih & Tucker 2021).

A categorical over n categories is a sequence of binary decisions: in some order of the
categories, stop at the i-th with probability :math:`\sigma(\varphi_i)`,
:math:`\varphi_i = \theta_{(i)} - \log\sum_{j>i} e^{\theta_{(j)}}`, i.e. :math:`p_{(i)}` over
the mass not yet passed. Drawing the decisions of two samples from antithetic uniforms
:math:`u` and :math:`1 - u` couples them; the categories are taken in ascending order of
their logits, so that every decision has :math:`\sigma(\varphi_i) \le \tfrac12` and two
samples can pass any node together (the importance weights below are then finite).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, register
from gvbench.estimators.replay import Replay, run
from gvbench.estimators.sampling import uniform_like
from gvbench.estimators.surrogates import sum_to_examples
from gvbench.estimators.validation import check_objective

FORMS = ("stick_breaking", "importance_weighted")


def stick_breaking_logits(theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""The n − 1 decision logits :math:`\varphi` of ``theta`` (categories last) in ascending
    order of the logits, differentiable, and that order.

    Masked categories (:math:`-\infty`) come first and get a logit 10⁴ below the smallest
    finite one: probability 0 in float64 and a finite (zero) gradient.
    """
    theta = _unmasked(theta)
    order = theta.detach().argsort(-1)
    ranked = theta.gather(-1, order)
    tail = torch.logcumsumexp(ranked.flip(-1), -1).flip(-1)  # [i] = log Σ_{j ≥ i} e^θ(j)
    return ranked[..., :-1] - tail[..., 1:], order


def _first_stop(b: Tensor) -> Tensor:
    """The first decision that stops (the last category if none does)."""
    n = b.shape[-1] + 1
    stops = b.any(-1)
    return torch.where(stops, b.long().argmax(-1), torch.full_like(stops, n - 1, dtype=torch.long))


class _Pair:
    """Draws the antithetic pair of every choice at the first run; records what the
    estimate needs."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.sites: list[dict[str, Tensor]] = []

    def play(self, which: int):
        def choose(call: int, theta: Tensor) -> Tensor:
            if which == 0:
                phi, order = stick_breaking_logits(theta)
                sigma = torch.sigmoid(phi.to(torch.float64))
                u = uniform_like(phi.shape, phi, self.generator)
                b1, b2 = u < sigma, 1 - u < sigma
                z1, z2 = _first_stop(b1), _first_stop(b2)
                self.sites.append({"order": order, "b1": b1, "b2": b2, "z1": z1, "z2": z2})
            site = self.sites[call]
            rank = site["z1"] if which == 0 else site["z2"]
            return site["order"].gather(-1, rank.unsqueeze(-1)).squeeze(-1)

        return choose


@register(unbiased=True, sequential=False, label="DisARM (categorical)", evaluations=2)
def categorical_disarm(
    objective: Objective,
    *,
    form: Literal["stick_breaking", "importance_weighted"] = "stick_breaking",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Coupled categorical DisARM (Dong, Mnih & Tucker 2021, NeurIPS), unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z\sim\mathrm{Cat}(\mathrm{softmax}\,\theta)}[f(z)]`.
    With: two samples :math:`z, \tilde z` from antithetic stick-breaking decisions (module
    docstring) and, per variable, one of the paper's two estimators:

    - ``"stick_breaking"`` (the default): binary DisARM on every decision both samples reach,
      :math:`\tfrac12(f(z) - f(\tilde z))(-1)^{\tilde b_i}\mathbb{1}[b_i \ne \tilde b_i]\,\sigma(|\varphi_i|)`;
      on a decision only one reaches, the score term with the other sample as baseline,
      :math:`\tfrac12(f(z) - f(\tilde z))(b_i - \sigma(\varphi_i))` (for :math:`z`'s); none
      on the rest (Rao-Blackwellised: their expectation is zero). Pushed from :math:`\varphi`
      to :math:`\theta` by autograd.
    - ``"importance_weighted"``: the two-sample RLOO
      :math:`\tfrac12(f(z) - f(\tilde z))(\nabla\log q(z) - \nabla\log q(\tilde z))` under the
      coupled law, weighted by :math:`q(z)q(\tilde z)/P(z, \tilde z) = \sigma(|\varphi_m|)
      \prod_{i<m} (1 - \sigma_i)^2/(1 - 2\sigma_i)`, :math:`m = \min(z, \tilde z)` in the
      order (0 when :math:`z = \tilde z`). With independent uniforms the weight would be 1:
      this form's uncoupled counterpart is RLOO with K = 2.

    At two categories both forms are binary DisARM. The authors' code offers other orders
    (none, descending, by magnitude); ascending is the one under which the importance
    weights exist for every pair, so it is used for both forms. Runs the objective twice;
    every choice's logits must be fixed in advance. Returns per-example surrogates (value:
    the mean of the two losses).
    """
    check_objective(objective)
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    pair = _Pair(generator)
    first = Replay(pair.play(0), "categorical DisARM")
    loss = run(objective, first)
    loss_tilde = run(objective, Replay(pair.play(1), "categorical DisARM", first=first))
    difference = (loss - loss_tilde).detach().to(torch.float64)
    correction = 0
    for theta, site in zip(first.thetas, pair.sites, strict=True):
        scaled = difference.reshape(*difference.shape, *[1] * (theta.dim() - 1 - loss.dim()))
        if form == "stick_breaking":
            phi, _ = stick_breaking_logits(theta)
            term = (_stick_breaking_signal(phi.detach(), site, scaled) * (phi - phi.detach())).sum(
                -1
            )
        else:
            term = _importance_weighted_term(theta, site, scaled)
        correction = correction + sum_to_examples(term, loss.shape, "the logits")
    return 0.5 * (loss + loss_tilde) + correction


def _stick_breaking_signal(phi: Tensor, site: dict[str, Tensor], difference: Tensor) -> Tensor:
    sigma = torch.sigmoid(phi.to(torch.float64))
    b1, b2 = site["b1"].to(sigma.dtype), site["b2"].to(sigma.dtype)
    node = torch.arange(phi.shape[-1], device=phi.device)
    reach1 = node <= site["z1"].unsqueeze(-1)
    reach2 = node <= site["z2"].unsqueeze(-1)
    d = difference.unsqueeze(-1)
    both = 0.5 * d * (1 - 2 * b2) * (b1 != b2) * torch.sigmoid(phi.to(sigma.dtype).abs())
    only1 = 0.5 * d * (b1 - sigma)
    only2 = -0.5 * d * (b2 - sigma)
    signal = torch.where(reach1 & reach2, both, torch.where(reach1, only1, only2))
    return torch.where(reach1 | reach2, signal, torch.zeros_like(signal)).to(phi.dtype)


def _importance_weighted_term(theta: Tensor, site: dict[str, Tensor], difference: Tensor) -> Tensor:
    phi, _ = stick_breaking_logits(theta.detach())
    sigma = torch.sigmoid(phi.to(torch.float64))
    both_pass = (1 - sigma) ** 2 / (1 - 2 * sigma)  # q(0)q(0)/P(0, 0) at one decision
    prefix = torch.cat([torch.ones_like(sigma[..., :1]), both_pass.cumprod(-1)], -1)
    m = torch.minimum(site["z1"], site["z2"]).clamp_max(phi.shape[-1] - 1).unsqueeze(-1)
    weight = prefix.gather(-1, m) * torch.sigmoid(phi.to(sigma.dtype).abs()).gather(-1, m)
    apart = (site["z1"] != site["z2"]).unsqueeze(-1)
    signal = torch.where(apart, 0.5 * weight * difference.unsqueeze(-1), torch.zeros_like(weight))
    log_q = torch.log_softmax(_unmasked(theta), -1)
    z1 = site["order"].gather(-1, site["z1"].unsqueeze(-1))
    z2 = site["order"].gather(-1, site["z2"].unsqueeze(-1))
    score = log_q.gather(-1, z1) - log_q.gather(-1, z2)
    return (signal.to(theta.dtype) * (score - score.detach())).squeeze(-1)


def _unmasked(theta: Tensor) -> Tensor:
    """Masked logits (−∞) set 10⁴ below the smallest finite one of their row: probability 0
    in float64, and finite, zero gradients through the log-sum-exps."""
    detached = theta.detach()
    finite = torch.isfinite(detached)
    floor = torch.where(finite, detached, torch.full_like(detached, float("inf")))
    floor = floor.amin(-1, keepdim=True) - 1e4
    return torch.where(finite, theta, floor.expand_as(theta))
