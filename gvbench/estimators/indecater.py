r"""IndeCateR: REINFORCE Rao-Blackwellised over each categorical variable in turn.

For independent categoricals :math:`x = (x_1, \dots, x_D)`, :math:`x_d \sim p_d(\theta_d)`,

.. math::
    \nabla_\theta \mathbb{E}[f(x)] = \sum_d \mathbb{E}_{x_{-d}}\Big[\sum_{j} f(x_{-d}, x_d = j)\,
    \nabla_\theta p_d(j)\Big],

the score function with the d-th variable summed out exactly (De Smet, Sansone & Zuidberg Dos
Martires 2023, NeurIPS). One sample of :math:`x` serves every d.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.replay import Replay, logit_surrogate, run
from gvbench.estimators.sampling import categorical_index
from gvbench.estimators.validation import check_objective


def _one_sample(objective: Objective, generator: torch.Generator | None) -> Tensor:
    base = Replay(lambda call, theta: categorical_index(theta, -1, generator), "IndeCateR")
    loss = run(objective, base)
    example_ndim = loss.dim()
    # F[c][..., v, j]: the loss with call c's variable v set to category j, less f(x) (the
    # constant cancels: Σ_j ∇p_j = 0), so the sum stays as precise as the differences. Built
    # out of place, so that torch.func.vmap can batch it.
    tables = []
    for call, theta in enumerate(base.thetas):
        n = theta.shape[-1]
        index = base.indices[call]
        variables = index.shape[example_ndim:].numel()
        flat_index = index.reshape(*index.shape[:example_ndim], variables)
        # A choice shared by the examples (a size-1 example axis) fills every example's row.
        rows_index = flat_index.expand(*loss.shape, variables)
        rows = []
        for v in range(variables):
            row = loss.detach().new_zeros((*loss.shape, n))
            for shift in range(1, n):
                moved = flat_index.clone()
                moved[..., v] = (moved[..., v] + shift) % n
                played = moved.reshape(index.shape)

                def play(c: int, t: Tensor, call=call, played=played) -> Tensor:
                    return played if c == call else base.indices[c]

                changed = run(objective, Replay(play, "IndeCateR", first=base)).detach()
                row = row.scatter(
                    -1,
                    (rows_index[..., v : v + 1] + shift) % n,
                    (changed - loss.detach()).unsqueeze(-1),
                )
            rows.append(row)
        tables.append(torch.stack(rows, -2).reshape(*loss.shape, *theta.shape[example_ndim:]))
    gradients = []
    for theta, table in zip(base.thetas, tables, strict=True):
        p = torch.softmax(theta.detach().to(table.dtype), -1)
        table = torch.where(p > 0, table, torch.zeros_like(table))  # masked: never played
        # ∇_θ Σ_j F_j p_j = p ⊙ (F − ⟨p, F⟩)
        gradients.append(p * (table - (p * table).sum(-1, keepdim=True)))
    return loss + logit_surrogate(base.thetas, gradients, loss.shape)


@register(
    unbiased=True,
    label="IndeCateR",
    sequential=False,
    max_k=1 << 10,  # each sample runs the objective once per variable and category
    evaluations=lambda o, c: o["k"] * (1 + c.categories - c.variables),
)
def indecater(
    objective: Objective, *, k: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    r"""IndeCateR (De Smet, Sansone & Zuidberg Dos Martires 2023, NeurIPS), unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{x}[f(x)]` for independent categorical choices.
    With: K samples :math:`x^{(k)}` and, per sample,

    .. math::
        \hat g = \nabla f(x) + \sum_d \sum_{j} f(x_{-d}, x_d = j)\,\nabla_\theta p_d(j),

    averaged over the K samples. A baseline would change nothing (:math:`\sum_j \nabla p_d(j)
    = 0`): the estimator is its own control variate.

    Cost: the paper counts :math:`D \cdot n` evaluations per sample; the term :math:`j = x_d`
    is :math:`f(x)` itself for every d, so this runs the objective
    :math:`1 + \sum_d (n_d - 1)` times per sample (the variable moved by
    :math:`m = 1 \dots n_d - 1` places, mod :math:`n_d`, in every example at once). Every
    example of a batch moves the same variable in the same run; examples are independent,
    so each still sees its own sum. Requires: choices whose logits do not depend on earlier
    samples. Returns per-example surrogates (value: the mean loss of the K samples).
    """
    check_objective(objective)
    k = checked_k(indecater, k)
    return torch.stack([_one_sample(objective, generator) for _ in range(k)]).mean(0)
