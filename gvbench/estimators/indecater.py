r"""IndeCateR: REINFORCE Rao-Blackwellised over each categorical variable in turn.

For independent categoricals :math:`x = (x_1, \dots, x_D)`, :math:`x_d \sim p_d(\theta_d)`,

.. math::
    \nabla_\theta \mathbb{E}[f(x)] = \sum_d \mathbb{E}_{x_{-d}}\Big[\sum_{j} f(x_{-d}, x_d = j)\,
    \nabla_\theta p_d(j)\Big],

the score function with the d-th variable summed out exactly (De Smet, Sansone & Zuidberg Dos
Martires 2023, NeurIPS). Two published forms estimate the outer expectations:

- :func:`indecater` (the paper's IndeCateR; ``icr`` in the authors' repository
  ML-KULeuven/catlog): one sample of :math:`x` serves every d;
- :func:`indecater_d` (IndeCateR-D; ``advanced_icr`` there): every d gets samples of its own,
  so the D terms are independent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators.registry import Objective, checked_k, register
from gvbench.estimators.replay import Replay, logit_surrogate, run
from gvbench.estimators.sampling import categorical_index
from gvbench.estimators.validation import check_objective


def _sampler(name: str, generator: torch.Generator | None, first: Replay | None = None) -> Replay:
    """A run at a fresh sample of every choice (checked against ``first``'s logits)."""
    return Replay(lambda call, theta: categorical_index(theta, -1, generator), name, first=first)


def _variables(base: Replay, call: int, example_ndim: int) -> int:
    """The number of variables of one example in ``call``."""
    return base.indices[call].shape[example_ndim:].numel()


def _moved_row(objective: Objective, base: Replay, loss: Tensor, call: int, v: int) -> Tensor:
    r"""``F[..., j]``: the loss with call ``call``'s variable ``v`` set to category j, less
    :math:`f(x)` at ``base``'s sample (the constant cancels: :math:`\sum_j \nabla p_j = 0`),
    so the sum stays as precise as the differences. Built out of place, so that
    torch.func.vmap can batch it. ``(*loss.shape, n)``."""
    example_ndim = loss.dim()
    n = base.thetas[call].shape[-1]
    index = base.indices[call]
    flat_index = index.reshape(*index.shape[:example_ndim], _variables(base, call, example_ndim))
    # A choice shared by the examples (a size-1 example axis) fills every example's row.
    rows_index = flat_index.expand(*loss.shape, flat_index.shape[-1])
    row = loss.detach().new_zeros((*loss.shape, n))
    for shift in range(1, n):
        moved = flat_index.clone()
        moved[..., v] = (moved[..., v] + shift) % n
        played = moved.reshape(index.shape)

        def play(c: int, t: Tensor, played: Tensor = played) -> Tensor:
            return played if c == call else base.indices[c]

        changed = run(objective, Replay(play, base.name, first=base)).detach()
        row = row.scatter(
            -1,
            (rows_index[..., v : v + 1] + shift) % n,
            (changed - loss.detach()).unsqueeze(-1),
        )
    return row


def _logit_gradients(thetas: list[Tensor], tables: list[Tensor]) -> list[Tensor]:
    r""":math:`\nabla_{\theta_d} \sum_j F_{dj}\,p_d(j) = p_d \odot (F_d - \langle p_d, F_d\rangle)`
    per call, the tables shaped as the logits (categories last)."""
    gradients = []
    for theta, table in zip(thetas, tables, strict=True):
        p = torch.softmax(theta.detach().to(table.dtype), -1)
        table = torch.where(p > 0, table, torch.zeros_like(table))  # masked: never played
        gradients.append(p * (table - (p * table).sum(-1, keepdim=True)))
    return gradients


def _one_sample(objective: Objective, generator: torch.Generator | None) -> Tensor:
    base = _sampler("IndeCateR", generator)
    loss = run(objective, base)
    tables = []
    for call, theta in enumerate(base.thetas):
        rows = [
            _moved_row(objective, base, loss, call, v)
            for v in range(_variables(base, call, loss.dim()))
        ]
        tables.append(torch.stack(rows, -2).reshape(*loss.shape, *theta.shape[loss.dim() :]))
    return loss + logit_surrogate(base.thetas, _logit_gradients(base.thetas, tables), loss.shape)


def _one_sample_per_variable(objective: Objective, generator: torch.Generator | None) -> Tensor:
    first = _sampler("IndeCateR-D", generator)
    losses = [run(objective, first)]
    example_ndim = losses[0].dim()
    tables = []
    for call, theta in enumerate(first.thetas):
        rows = []
        for v in range(_variables(first, call, example_ndim)):
            base = first
            if call or v:  # the first run's sample is variable 0's own
                base = _sampler("IndeCateR-D", generator, first=first)
                losses.append(run(objective, base))
            rows.append(_moved_row(objective, base, losses[-1], call, v))
        examples = losses[0].shape
        tables.append(torch.stack(rows, -2).reshape(*examples, *theta.shape[example_ndim:]))
    loss = torch.stack(losses).mean(0)
    return loss + logit_surrogate(first.thetas, _logit_gradients(first.thetas, tables), loss.shape)


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


@register(
    unbiased=True,
    label="IndeCateR-D",
    sequential=False,
    max_k=1 << 10,  # each sample runs the objective once per variable and category
    evaluations=lambda o, c: o["k"] * c.categories,
)
def indecater_d(
    objective: Objective, *, k: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    r"""IndeCateR-D: IndeCateR with samples of its own for every variable, unbiased.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{x}[f(x)]` for independent categorical choices.
    With: for every variable d, K samples :math:`x^{(d,k)}` of all D variables (:math:`D K`
    in all, independent), and

    .. math::
        \hat g = \frac{1}{DK}\sum_{d,k} \nabla f(x^{(d,k)})
            + \sum_d \frac{1}{K}\sum_k \sum_j f(x^{(d,k)}_{-d}, x_d = j)\,\nabla_\theta p_d(j).

    The d-th term is the one of :func:`indecater`, at samples no other term uses: the terms
    are independent, so the estimate's covariance is the sum of theirs, with none of the
    cross-variable covariance that a shared sample carries (where variables share
    parameters, as the digits of MNIST addition share one classifier). Each term is a
    Rao-Blackwellisation of variable d's score function, so the variance of every logit's
    gradient is at most REINFORCE's with K samples, as the paper proves for IndeCateR.

    Source: De Smet, Sansone & Zuidberg Dos Martires (2023) name it IndeCateR-D for their
    MNIST-addition experiment; ML-KULeuven/catlog, ``ADDITION/README.md`` ("'advanced_icr'
    … IndeCateR-D … draw 10 samples for each variable"), ``ADDITION/network.py``
    (``advanced_indecater_grads``) and ``DVAE/dave.py`` (``advanced_indecater``): N·D samples,
    reshaped to N per variable; the value is the mean loss of all of them.

    Cost: :math:`\sum_d n_d` runs of the objective per K: for each variable, its sample and
    its :math:`n_d - 1` moves (the paper's :math:`D \cdot n`). Requires: choices whose logits
    do not depend on earlier samples. Returns per-example surrogates (value: the mean loss of
    the :math:`D K` samples).
    """
    check_objective(objective)
    k = checked_k(indecater_d, k)
    draws = [_one_sample_per_variable(objective, generator) for _ in range(k)]
    return torch.stack(draws).mean(0)
