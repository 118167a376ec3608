"""N independent gradient draws of an estimator on a task, in batched backward passes."""

from __future__ import annotations

import torch
from torch import Tensor

from gvbench.estimators import Estimator
from gvbench.tasks import Task

# Examples × samples per backward pass (draws × batch size × the estimator's K when it
# re-runs the objective K times): bounds the autograd graph whatever R, B and K are.
PASS_BUDGET = 1 << 20


def draws_per_pass(task: Task, estimator: Estimator, reps: int, batch_size: int) -> int:
    """How many draws one backward pass computes (a deterministic function of the cell)."""
    repeats = estimator.options.get("k", 1) if estimator.info.needs_value else 1
    size = max(1, PASS_BUDGET // (batch_size * repeats))
    if task.max_draws_per_pass is not None:
        size = min(size, task.max_draws_per_pass)
    return min(size, reps)


def flatten_gradients(params: dict[str, Tensor], rows: int) -> Tensor:
    """Concatenate the gradients of draw-axis parameters into an (R, P) matrix (float64)."""
    columns = []
    for value in params.values():
        grad = value.grad if value.grad is not None else torch.zeros_like(value)
        columns.append(grad.reshape(rows, -1).to(torch.float64))
    return torch.cat(columns, 1)


def one_pass(
    task: Task,
    estimator: Estimator,
    draws: int,
    batch_size: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``draws`` gradient draws of the mean loss over ``batch_size`` examples, (draws, P)."""
    params = {
        name: value.detach().expand(draws, *value.shape).clone().requires_grad_()
        for name, value in task.parameters().items()
    }
    surrogate = estimator(lambda sample: task.loss(params, sample, batch_size), generator=generator)
    if surrogate.shape != (draws, batch_size):
        raise ValueError(
            f"task {task.name!r} returned losses of shape {tuple(surrogate.shape)}; "
            f"expected (draws, batch_size) = ({draws}, {batch_size})"
        )
    surrogate.mean(1).sum().backward()
    return flatten_gradients(params, draws)


def gradient_draws(
    task: Task,
    estimator: Estimator,
    reps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``reps`` iid draws of the estimator's gradient of the task's mean loss, (reps, P) float64.

    Draws are computed R at a time in one backward pass (R independent copies of the
    parameters, each with its own samples). An estimator with state (a running-mean baseline)
    first runs one discarded pass, so every kept draw uses a baseline built from earlier,
    independent samples.
    """
    size = draws_per_pass(task, estimator, reps, batch_size)
    if estimator.info.state is not None:
        one_pass(task, estimator, size, batch_size, generator)
    chunks = []
    done = 0
    while done < reps:
        count = min(size, reps - done)
        chunks.append(one_pass(task, estimator, count, batch_size, generator).cpu())
        done += count
    return torch.cat(chunks)
