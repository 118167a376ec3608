"""Reference gradients: exact by enumeration, or a high-sample unbiased (RLOO) estimate.

A sampled reference has noise of its own, :math:`V_{ref}/N_{ref}` (its expected squared
error), which bias² subtracts and every cell stores as ``reference_variance``. Sized
``"auto"``, it is drawn until that noise is at most :data:`NOISE_FRACTION` of the smallest
bias² any cell of the sweep can resolve, :math:`2\\,\\mathrm{SE}_0 = 2\\sqrt{2\\,\\mathrm{tr}\\,\\Sigma^2}/N`
(the standard error of bias² at zero bias, Σ the cell's covariance, estimated from a short
pilot of each cell), or until a cap.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from gvbench.harness.metrics import GradientMoments, Reference
from gvbench.tasks import Task

REFERENCE_K = 8
# "auto": the reference's noise is at most this share of the smallest resolvable bias².
NOISE_FRACTION = 0.1
# Draws of an auto reference's first stage (and most per pass): later stages double it.
FIRST_STAGE = 256
# Pilot draws per cell for its resolution (pair differences: tr Σ² from all their pairs).
PILOT_DRAWS = 16
# The longest automatic reference drawn without being asked (a fixed size or a time budget
# says how long the user allows).
LONG_REFERENCE_SECONDS = 600.0


def exact_reference(task: Task, batch_size: int) -> Reference:
    """The task's exact gradient (:meth:`~gvbench.tasks.Task.exact_gradient`), no noise."""
    gradient = task.exact_gradient(batch_size).detach().to(torch.float64).cpu().numpy()
    return Reference(gradient, kind="exact")


class _Accumulator:
    """Per-coordinate mean and variance of a stream of draws: sums of the draws centred at
    the first one, kept in their dtype between flushes into float64 (no cancellation: the
    centre is within a standard deviation of the mean)."""

    def __init__(self) -> None:
        self.count = 0
        self.centre: torch.Tensor | None = None

    def add(self, chunk: torch.Tensor) -> None:
        if self.centre is None:
            self.centre = chunk[0].clone()
            self.sum = torch.zeros_like(chunk[0], dtype=torch.float64)
            self.squares = torch.zeros_like(self.sum)
        centred = chunk - self.centre
        self.sum += centred.sum(0).to(torch.float64)
        self.squares += centred.square().sum(0).to(torch.float64)
        self.count += chunk.shape[0]

    def mean(self) -> torch.Tensor:
        return self.centre.to(torch.float64) + self.sum / self.count

    def coordinate_variance(self) -> torch.Tensor:
        return (self.squares - self.sum.square() / self.count) / (self.count - 1)


def reference_gradient(
    task: Task,
    batch_size: int,
    *,
    reps: int | None = None,
    k: int = REFERENCE_K,
    generator: torch.Generator | None = None,
    progress: bool = False,
    noise_target: float | None = None,
    cap: int | None = None,
) -> Reference:
    """The gradient every bias is measured against, for ``task`` at ``batch_size``.

    Exact (autograd of the enumerated expectation) when the task can enumerate; otherwise the
    mean of RLOO draws with ``k`` samples (over k-subsets where the task samples them),
    unbiased, whose per-coordinate variance and count are kept so that bias² can subtract
    the reference's own noise. ``reps`` draws (default: ``cap``, else the task's
    ``reference_reps``), or with ``noise_target``, as many as make :math:`V_{ref}/N_{ref}` at
    most that, doubling from a first stage, up to that many.
    """
    if task.exact(batch_size):
        return exact_reference(task, batch_size)
    target = reps if reps is not None else cap or task.reference_reps
    estimator = E.get("rloo" if task.variable == "categorical" else "subset_rloo", k=k)
    accumulator = _Accumulator()
    moments: GradientMoments | None = None  # the spread of the draws, for bias²'s SE
    bar = tqdm(
        total=target,
        disable=not progress,
        unit="draw",
        desc=f"{task.name} reference B={batch_size}",
    )
    staged = noise_target is not None
    stage = min(target, FIRST_STAGE) if staged else target
    # One stream of draws, read in stages of whole passes: a longer reference extends a
    # shorter one.
    chunks = gradient_chunks(
        task, estimator, target, batch_size, generator, FIRST_STAGE if staged else None
    )
    with bar:
        while True:
            while accumulator.count < stage:
                chunk = next(chunks)
                accumulator.add(chunk)
                bar.update(chunk.shape[0])
                if moments is None:
                    moments = GradientMoments(Reference(np.zeros(chunk.shape[1])))
                moments.add(chunk)  # last: it centres the chunk in place
            noise = float(accumulator.coordinate_variance().sum()) / accumulator.count
            if accumulator.count >= target or noise_target is None or noise <= noise_target:
                break
            needed = math.ceil(accumulator.count * noise / noise_target)
            stage = min(target, max(2 * accumulator.count, needed))
    chunks.close()
    coordinate_variance = accumulator.coordinate_variance().cpu().numpy()
    mean = accumulator.mean().cpu().numpy()
    variance = float(coordinate_variance.sum())
    count = accumulator.count
    if not np.isfinite(mean).all() or not math.isfinite(variance):
        raise ValueError(f"the RLOO reference of the {task.name} task is not finite")
    spread = moments.metrics()["variance_se"] if count >= 4 else math.nan
    return Reference(
        mean,
        variance=variance,
        count=count,
        kind=f"rloo(k={k}, reps={count})",
        coordinate_variance=coordinate_variance,
        covariance_square=moments.covariance_square() if count >= 4 else math.nan,
        variance_se=spread,
    )


def resolution(
    task: Task,
    estimator: E.Estimator,
    batch_size: int,
    reps: int,
    generator: torch.Generator | None,
) -> float:
    """The smallest bias² a cell of ``reps`` draws of ``estimator`` resolves (from zero, at two
    standard errors): :math:`2\\sqrt{2\\,\\mathrm{tr}\\,\\Sigma^2}/N`, tr Σ² from the pairwise
    products of the pair differences of a few pilot draws (discarded)."""
    draws = torch.cat(list(gradient_chunks(task, estimator, PILOT_DRAWS, batch_size, generator)))
    differences = (draws[0::2] - draws[1::2]).to(torch.float64) / math.sqrt(2)
    gram = differences @ differences.T
    off_diagonal = gram[~torch.eye(len(gram), dtype=torch.bool)]
    trace_sq = float(off_diagonal.square().mean())
    return 2 * math.sqrt(2 * trace_sq) / reps


def expected_draws(variance: float, target: float, cap: int) -> int:
    """About how many draws an ``auto`` reference of per-draw variance ``variance`` takes to
    reach the noise ``target``: the first stage, or as many as ``variance / target`` (at
    least twice the first stage, as the stages grow), at most ``cap``."""
    first = min(cap, FIRST_STAGE)
    needed = math.ceil(variance / target) if target > 0 else cap
    return first if needed <= first else min(cap, max(2 * first, needed))


@dataclasses.dataclass(frozen=True)
class Sizing:
    """Why an ``auto`` reference has the size it has (printed by the sweep)."""

    resolution: float  # the smallest bias² a cell resolves
    finest: str  # the cell that resolves it
    draws: int
    noise: float
    cap: int
    budget: float | None = None  # the time budget that set the cap, if one did

    def describe(self, batch_size: int) -> str:
        limited = ""
        if self.noise > NOISE_FRACTION * self.resolution:
            bound = f"{self.noise / NOISE_FRACTION:.3g}"
            limited = (
                f"; capped at {self.cap}: cells resolving bias² below {bound} are limited by "
                "the reference (raise --reference-reps)"
                if self.budget is None
                else f"; capped at {self.cap} by time_budget={self.budget:g} s: its noise is "
                f"{self.noise / self.resolution:.2g} × the smallest bias² a cell resolves, so "
                f"cells resolving bias² below {bound} are limited by the reference (raise "
                "time_budget)"
            )
        return (
            f"reference at B={batch_size}: {self.draws} RLOO draws, noise V_ref/N_ref = "
            f"{self.noise:.3g} (target: {NOISE_FRACTION:g} × {self.resolution:.3g}, the smallest "
            f"bias² a cell resolves, {self.finest}){limited}"
        )


def _digest(reference: Reference) -> str:
    arrays = [np.asarray(reference.gradient, float)]
    if reference.coordinate_variance is not None:
        arrays.append(np.asarray(reference.coordinate_variance, float))
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([reference.variance, reference.count, reference.kind]).encode())
    spread = _spread(reference)
    if spread:  # a reference saved before its spread was measured keeps its digest
        digest.update(json.dumps(spread, sort_keys=True).encode())
    return digest.hexdigest()


def _spread(reference: Reference) -> dict[str, float]:
    """The reference's measured spread (what bias²'s SE reads), where it is known."""
    values = {
        "covariance_square": reference.covariance_square,
        "variance_se": reference.variance_se,
    }
    return {name: value for name, value in values.items() if math.isfinite(value)}


def save(reference: Reference, path: str | os.PathLike[str], identity: str) -> None:
    """Keep ``reference`` on disk (atomically), tagged with what it is the reference of and
    with a digest of its values."""
    buffer = io.BytesIO()
    arrays = {"gradient": np.asarray(reference.gradient, float)}
    if reference.coordinate_variance is not None:
        arrays["coordinate_variance"] = np.asarray(reference.coordinate_variance, float)
    meta = {
        "variance": reference.variance,
        "count": reference.count,
        "kind": reference.kind,
        **_spread(reference),
        "digest": _digest(reference),
    }
    np.savez(buffer, identity=np.array(identity), meta=np.array(json.dumps(meta)), **arrays)
    write_bytes(buffer.getvalue(), path)


def load(path: str | os.PathLike[str], identity: str) -> tuple[Reference | None, str | None]:
    """The reference saved at ``path`` for ``identity``, or ``(None, why)``: absent (no
    reason), of another experiment, damaged or changed since it was saved (a reason to say).
    """
    if not os.path.exists(path):
        return None, None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["identity"]) != identity:
                return None, f"{path} is the reference of another experiment; it is recomputed"
            meta = json.loads(str(saved["meta"]))
            variance = saved["coordinate_variance"] if "coordinate_variance" in saved else None
            reference = Reference(
                saved["gradient"],
                meta["variance"],
                meta["count"],
                meta["kind"],
                variance,
                covariance_square=float(meta.get("covariance_square", math.nan)),
                variance_se=float(meta.get("variance_se", math.nan)),
            )
            stored = meta.get("digest")
    except Exception:  # a damaged file raises whatever its first broken byte makes it raise
        return None, f"{path} is damaged (not a readable reference); it is recomputed"
    if stored != _digest(reference):
        return (
            None,
            f"{path} does not match its digest (changed since it was saved); it is recomputed",
        )
    if not np.isfinite(reference.gradient).all() or not math.isfinite(reference.variance):
        return None, f"{path} holds non-finite values; it is recomputed"
    return reference, None


__all__ = [
    "LONG_REFERENCE_SECONDS",
    "NOISE_FRACTION",
    "REFERENCE_K",
    "Sizing",
    "exact_reference",
    "expected_draws",
    "load",
    "reference_gradient",
    "resolution",
    "save",
]
