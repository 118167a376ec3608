"""Reference gradients: exact by enumeration, or a high-sample unbiased (RLOO) estimate."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import torch
from tqdm.auto import tqdm

import gvbench.estimators as E
from gvbench.atomic_files import write_bytes
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
    progress: bool = False,
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
    bar = tqdm(
        total=reps, disable=not progress, unit="draw", desc=f"{task.name} reference B={batch_size}"
    )
    for chunk in gradient_chunks(task, E.get("rloo", k=k), reps, batch_size, generator):
        bar.update(chunk.shape[0])
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
    bar.close()
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


def save(reference: Reference, path: str | os.PathLike[str], identity: str) -> None:
    """Keep ``reference`` on disk (atomically), tagged with what it is the reference of."""
    buffer = io.BytesIO()
    arrays = {"gradient": np.asarray(reference.gradient, float)}
    if reference.coordinate_variance is not None:
        arrays["coordinate_variance"] = np.asarray(reference.coordinate_variance, float)
    meta = {"variance": reference.variance, "count": reference.count, "kind": reference.kind}
    np.savez(buffer, identity=np.array(identity), meta=np.array(json.dumps(meta)), **arrays)
    write_bytes(buffer.getvalue(), path)


def load(path: str | os.PathLike[str], identity: str) -> Reference | None:
    """The reference saved at ``path`` for ``identity``, or None (absent, other, unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["identity"]) != identity:
                return None
            meta = json.loads(str(saved["meta"]))
            variance = saved["coordinate_variance"] if "coordinate_variance" in saved else None
            reference = Reference(
                saved["gradient"], meta["variance"], meta["count"], meta["kind"], variance
            )
    except (OSError, ValueError, KeyError):
        return None
    if not np.isfinite(reference.gradient).all() or not math.isfinite(reference.variance):
        return None
    return reference
