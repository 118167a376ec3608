"""N independent gradient draws of an estimator on a task, R per backward pass.

R is bounded by memory (examples per pass, gradient elements per pass) and by the task
(a module's estimator that vmap cannot run takes one draw per pass). R is part of the draws'
numbers: the draws of a pass take their noise as rows of one block per request, whether a
draw axis, a vmap or a loop of plain passes makes them
(:class:`~gvbench.estimators.streams.DrawAxis`): a cell must get the same R wherever it runs.
Draws stay on the task's device and in its dtype; the reduction widens precision where it
sums (:mod:`gvbench.harness.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from gvbench.estimators import Choices, Estimator
from gvbench.estimators.subset_law import check_subset_size
from gvbench.tasks import Task

# Examples × samples per backward pass (draws × batch size × the estimator's K when it
# re-runs the objective K times): bounds the autograd graph whatever R, B and K are.
PASS_BUDGET = 1 << 20
# Gradient elements of one pass (draws × parameters): 2^24 float32 values are 64 MiB, so a
# model of 10^6 parameters is measured 16 draws at a time when it is batched.
DRAW_ELEMENTS = 1 << 24


# Draws of one adaptation step of a stateful estimator (one update of its state).
ADAPTATION_DRAWS = 16


def parameter_count(task: Task) -> int:
    """P, the number of measured gradient coordinates."""
    return sum(value.numel() for value in task.parameters().values())


def parameter_columns(task: Task) -> dict[str, np.ndarray]:
    """The gradient columns of each of the task's parameter groups (none: empty)."""
    groups = task.parameter_groups()
    if not groups:
        return {}
    start, spans = 0, {}
    for name, value in task.parameters().items():
        spans[name] = np.arange(start, start + value.numel())
        start += value.numel()
    return {group: np.concatenate([spans[n] for n in names]) for group, names in groups.items()}


def draws_per_pass(task: Task, estimator: Estimator, reps: int, batch_size: int) -> int:
    """How many draws one backward pass computes (a deterministic function of the cell)."""
    repeats = estimator.options.get("k", 1) if estimator.info.needs_value else 1
    repeats *= estimator.info.memory_factor(estimator.options)
    size = max(1, PASS_BUDGET // (batch_size * repeats))
    size = min(size, max(1, DRAW_ELEMENTS // parameter_count(task)))
    limit = task.pass_limit(estimator, batch_size)
    if limit is not None:
        size = min(size, limit)
    return min(size, reps)


def one_pass(
    task: Task,
    estimator: Estimator,
    draws: int,
    batch_size: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``draws`` gradient draws of the mean loss over ``batch_size`` examples, (draws, P)."""
    grads = task.gradients(estimator, draws, batch_size, generator).detach()
    if grads.shape[0] != draws:
        raise ValueError(
            f"task {task.name!r} returned {grads.shape[0]} gradient draws; expected {draws}"
        )
    return grads


def gradient_chunks(
    task: Task,
    estimator: Estimator,
    reps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    most: int | None = None,
) -> Iterator[Tensor]:
    """``reps`` iid draws of the estimator's gradient of the task's mean loss, as (R, P) chunks.

    Draws are computed R at a time in one backward pass (R independent copies of the
    parameters, each with its own samples; at most ``most``) and stay on the task's device.
    The draws are i.i.d. when the estimator does not change during a call (a frozen one, see
    :func:`adapt`). The same estimator state and generator state give the same chunks.
    """
    size = draws_per_pass(task, estimator, reps, batch_size)
    if most is not None:
        size = min(size, most)
    done = 0
    while done < reps:
        count = min(size, reps - done)
        yield one_pass(task, estimator, count, batch_size, generator)
        done += count


def adapt(
    task: Task,
    estimator: Estimator,
    steps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Estimator:
    """The estimator after ``steps`` calls of its own update rule at the task's fixed
    parameters (REINFORCE's running mean, REBAR's η and λ, RELAX's network: one update per
    call), each call on :data:`ADAPTATION_DRAWS` draws (fewer where the task takes fewer per
    pass), then frozen there. The adaptation draws are never measured: the frozen estimator's
    draws are i.i.d. An estimator without state is returned as it is.
    """
    if estimator.info.state is None:
        return estimator
    size = min(ADAPTATION_DRAWS, draws_per_pass(task, estimator, ADAPTATION_DRAWS, batch_size))
    for _ in range(steps):
        one_pass(task, estimator, size, batch_size, generator)
    return estimator.freeze()


def gradient_draws(
    task: Task,
    estimator: Estimator,
    reps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """All ``reps`` draws in memory, (reps, P) on the CPU in the task's dtype (for small
    problems and tests)."""
    return torch.cat(
        [chunk.cpu() for chunk in gradient_chunks(task, estimator, reps, batch_size, generator)]
    )


def choices(task: Task, batch_size: int) -> Choices:
    """The discrete choices of one example of ``task`` at ``batch_size``: one probing run of
    its loss (no gradient), recording every sampler call's variables and arity (a k-subset
    call's: its C(n, k) subsets).

    What an estimator's evaluations per draw may depend on (see the registry's
    ``evaluations``); the harness counts nothing per estimator itself.
    """
    calls: list[tuple[int, int]] = []
    params = {name: value.detach()[None] for name, value in task.parameters().items()}

    def probe(logits: Tensor, size: int | None = None, *, dim: int = -1) -> Tensor:
        moved = logits.detach().movedim(dim, -1)
        if size is not None:
            size = check_subset_size(size, moved.shape[-1])
        arity = moved.shape[-1] if size is None else math.comb(moved.shape[-1], size)
        calls.append((math.prod(moved.shape[2:-1]), arity))  # (R, B, *variables, n)
        index = moved.argmax(-1, keepdim=True) if size is None else moved.topk(size).indices
        return torch.zeros_like(moved).scatter_(-1, index, 1.0).movedim(-1, dim)

    with torch.no_grad():
        task.loss(params, probe, batch_size)
    return Choices(tuple(calls))
