r"""ARSM: Augment-REINFORCE-Swap-Merge for categorical variables (Yin, Yue & Zhou 2019, ICML).

**Augment.** A categorical over C categories is an exponential race:
:math:`z = \arg\min_i (\log\pi_i - \varphi_i)`, :math:`\pi \sim \mathrm{Dir}(\mathbf 1_C)`
(:math:`\pi_i = E_i/\sum E`, :math:`E_i \sim \mathrm{Exp}(1)`: Gumbel-max in other clothes).
REINFORCE on :math:`\pi` gives the AR estimator
:math:`\nabla_{\varphi_c}\mathbb E[f(z)] = \mathbb E_\pi[f(z)(1 - C\pi_c)]`.

**Swap.** Exchanging entries c and j of :math:`\pi` leaves :math:`\mathrm{Dir}(\mathbf 1)`
unchanged, so with the *pseudo action* :math:`z^{c\rightleftharpoons j} = \arg\min_i
(\log\pi^{c\rightleftharpoons j}_i - \varphi_i)`,
:math:`\mathbb E[f(z)(1 - C\pi_c)] = \mathbb E[f(z^{c\rightleftharpoons j})(1 - C\pi_j)]` for
every j; averaging over j spreads one draw of :math:`\pi` over C coupled evaluations.

**Merge.** Subtracting :math:`\tfrac1C\sum_m f(z^{m\rightleftharpoons j})` (the average of
the C swap estimators, whose expectation is :math:`\tfrac1C\sum_m \nabla_{\varphi_m}
\mathbb E f = 0`) gives ARSM. With several variables, one swap is applied to every variable
at once (the paper's multivariate form), so a draw costs the true run plus one run per pair
:math:`c < j`, whatever the number of variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.registry import Choices, Objective, register
from gvbench.estimators.replay import Play, Replay, logit_surrogate, run
from gvbench.estimators.sampling import exponential_like
from gvbench.estimators.validation import check_objective


def swap_pairs(arity: int) -> list[tuple[int, int]]:
    r"""The swaps :math:`c \rightleftharpoons j`, :math:`c < j < C`: one run each."""
    return [(c, j) for j in range(arity) for c in range(j)]


def _evaluations(options: Mapping[str, Any], choices: Choices) -> int:
    """The true run and one run per swap of the largest arity (every swap is run, see
    :func:`arsm`)."""
    return 1 + len(swap_pairs(max((arity for _, arity in choices.calls), default=1)))


class _Race:
    r"""Draws every choice's :math:`\pi \sim \mathrm{Dir}(\mathbf 1)` at the true run and
    plays the pseudo actions of a swap at the others."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.pis: list[Tensor] = []  # per call, π in float64, shaped as its logits

    def play(self, swap: tuple[int, int] | None) -> Play:
        def choose(call: int, theta: Tensor) -> Tensor:
            theta = theta.to(torch.float64)
            if swap is None:
                e = exponential_like(theta.shape, theta, self.generator)
                self.pis.append(e / e.sum(-1, keepdim=True))
            pi = _swapped(self.pis[call], swap)
            return (pi.log() - theta).argmin(-1)  # a masked logit (−∞) never wins the race

        return choose


def _swapped(pi: Tensor, swap: tuple[int, int] | None) -> Tensor:
    """``pi`` with entries c and j exchanged along its last axis; unchanged where a choice has
    no category j (a smaller arity than the swap's)."""
    if swap is None or swap[1] >= pi.shape[-1]:
        return pi
    order = torch.arange(pi.shape[-1], device=pi.device)
    order[swap[0]], order[swap[1]] = swap[1], swap[0]
    return pi.index_select(-1, order)


@register(unbiased=True, label="ARSM", sequential=False, evaluations=_evaluations)
def arsm(objective: Objective, *, generator: torch.Generator | None = None) -> Tensor:
    r"""ARSM (Yin, Yue & Zhou 2019, ICML), unbiased.

    Approximates: :math:`\nabla_\varphi \mathbb{E}_{z}[f(z)]` for independent categorical
    choices, :math:`z_v \sim \mathrm{Cat}(\mathrm{softmax}\,\varphi_v)`.
    With: one :math:`\pi_v \sim \mathrm{Dir}(\mathbf 1)` per variable, the true sample
    :math:`z_v = \arg\min_i(\log\pi_{vi} - \varphi_{vi})`, the symmetric table
    :math:`F_{cj} = f(z^{c\rightleftharpoons j})` (the swap applied to every variable at once;
    :math:`F_{cc} = f(z)`) and, per variable of arity C,

    .. math::
        \hat g_{vc} = \sum_{j=1}^{C} \Big(F_{cj} - \frac1C\sum_{m=1}^{C} F_{mj}\Big)
        \Big(\frac1C - \pi_{vj}\Big),

    plus the pathwise gradient of :math:`f(z)` (parameters the loss uses directly).

    Cost: the objective runs once at :math:`z` and once per swap :math:`c < j`,
    :math:`1 + C(C - 1)/2` times per draw (C counts masked categories). The paper evaluates only the *distinct* pseudo
    actions (many swaps leave :math:`z` unchanged), a number that varies from draw to draw
    and from example to example; every example of a batch plays the same swap in the same
    run here, so every swap is run and the static count is what comparisons at equal
    evaluations use. Choices of different arities share the swaps of the largest, C: a swap
    with :math:`j \ge C_v` leaves variable v's :math:`\pi_v` as it is (still a
    measure-preserving map of the joint :math:`\pi`, so the estimator stays unbiased), and
    variable v merges over its own :math:`C_v \times C_v` corner of F.
    At two categories it is ARM (Yin & Zhou 2019) with :math:`u = \pi_{v0}`.
    Requires: choices whose logits do not depend on earlier samples. Returns per-example
    surrogates (value: :math:`f(z)`, the loss at the true sample).
    """
    check_objective(objective)
    race = _Race(generator)
    first = Replay(race.play(None), "ARSM")
    loss = run(objective, first)
    arity = max(theta.shape[-1] for theta in first.thetas)
    played = {
        swap: run(objective, Replay(race.play(swap), "ARSM", first=first)).detach()
        for swap in swap_pairs(arity)
    }
    true = loss.detach()
    rows = [
        [true if c == j else played[min(c, j), max(c, j)] for j in range(arity)]
        for c in range(arity)
    ]
    table = torch.stack([torch.stack(row, -1) for row in rows], -2).to(torch.float64)
    gradients = []
    for theta, pi in zip(first.thetas, race.pis, strict=True):
        n = theta.shape[-1]
        corner = table[..., :n, :n]
        merged = corner - corner.mean(-2, keepdim=True)  # F_cj − (1/C) Σ_m F_mj
        weights = 1 / n - pi  # (*examples, *variables, C)
        flat = weights.reshape(*weights.shape[: loss.dim()], -1, n)
        gradient = flat @ merged.transpose(-1, -2)  # [v, c] = Σ_j weights[v, j] merged[c, j]
        gradients.append(
            gradient.reshape(*gradient.shape[: loss.dim()], *theta.shape[loss.dim() :])
        )
    return loss + logit_surrogate(first.thetas, gradients, loss.shape)
