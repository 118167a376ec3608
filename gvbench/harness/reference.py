"""Reference gradients: exact by enumeration, or a high-sample unbiased (RLOO) estimate."""

from __future__ import annotations

import math

import torch

import gvbench.estimators as E
from gvbench.harness.draws import gradient_chunks
from gvbench.harness.metrics import Reference
from gvbench.tasks import Task
from gvbench.tasks.base import flatten_gradients

REFERENCE_K = 8


def reference_gradient(
    task: Task,
    batch_size: int,
    *,
    reps: int | None = None,
    k: int = REFERENCE_K,
    generator: torch.Generator | None = None,
) -> Reference:
    """The gradient every bias is measured against, for ``task`` at ``batch_size``.

    Exact (autograd of the enumerated expectation) when the task can enumerate; otherwise the
    mean of ``reps`` draws (default: the task's ``reference_reps``) of RLOO with ``k`` samples, unbiased, whose trace variance and
    count are kept so that bias² can subtract the reference's own noise.
    """
    if task.enumerable(batch_size):
        params = {
            name: value.detach()[None].clone().requires_grad_()
            for name, value in task.parameters().items()
        }
        expected = E.exact(lambda sample: task.loss(params, sample, batch_size))
        if expected.shape != (1, batch_size):
            raise ValueError(
                f"task {task.name!r} returned losses of shape {tuple(expected.shape)}; "
                f"expected (draws, batch_size) = (1, {batch_size})"
            )
        expected.mean(1).sum().backward()
        return Reference(flatten_gradients(params, 1)[0].cpu().numpy(), kind="exact")
    reps = task.reference_reps if reps is None else reps
    # Streamed: Chan et al.'s pairwise update of (count, mean, Σ(g - mean)²) per coordinate,
    # exact and free of the cancellation of Σg² - N ḡ², in the memory of two P-vectors.
    count, mean, scatter = 0, None, None
    for chunk in gradient_chunks(task, E.get("rloo", k=k), reps, batch_size, generator):
        chunk = chunk.to(torch.float64)
        chunk_mean = chunk.mean(0)
        chunk_scatter = (chunk - chunk_mean).square().sum(0)
        if mean is None:
            count, mean, scatter = chunk.shape[0], chunk_mean, chunk_scatter
            continue
        total = count + chunk.shape[0]
        shift = chunk_mean - mean
        scatter = scatter + chunk_scatter + shift.square() * (count * chunk.shape[0] / total)
        mean = mean + shift * (chunk.shape[0] / total)
        count = total
    coordinate_variance = (scatter / (reps - 1)).cpu().numpy()
    variance = float(coordinate_variance.sum())
    if not torch.isfinite(mean).all() or not math.isfinite(variance):
        raise ValueError(f"the RLOO reference of the {task.name} task is not finite")
    return Reference(
        mean.cpu().numpy(),
        variance=variance,
        count=reps,
        kind=f"rloo(k={k}, reps={reps})",
        coordinate_variance=coordinate_variance,
    )
