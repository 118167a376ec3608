"""A cell of a sweep: one estimator at one τ, K, batch size and seed, and its measurement.

A cell seeds itself from the master seed and its own coordinates (not its position in the
grid), so its numbers are the same whatever the executor, the order, or the grid it was first
computed in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

import gvbench.estimators as E
from gvbench.harness import store
from gvbench.harness.draws import adapt, choices, gradient_chunks, parameter_columns
from gvbench.harness.metrics import GradientMoments, NonFiniteDraws, Reference
from gvbench.harness.quantities import at_equal_cost
from gvbench.tasks import Task
from gvbench.threads import pinned_threads


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work; ``tau``/``k`` are None for an estimator that does not take them."""

    estimator: str
    tau: float | None
    k: int | None
    batch_size: int
    seed: int

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.tau is not None:
            options["tau"] = self.tau
        if self.k is not None:
            options["k"] = self.k
        return options

    def seed_sequence(self) -> np.random.SeedSequence:
        key = (zlib.crc32(self.estimator.encode()), zlib.crc32(repr(self.tau).encode()))
        return np.random.SeedSequence(self.seed, spawn_key=(*key, self.k or 0, self.batch_size))

    def generator(self, device: torch.device, stream: int = 0) -> torch.Generator:
        """The cell's generator (``stream`` 1: its pilot's, independent of its draws)."""
        sequence = self.seed_sequence()
        if stream:
            sequence = np.random.SeedSequence(
                sequence.entropy, spawn_key=(*sequence.spawn_key, stream)
            )
        state = int(sequence.generate_state(1, np.uint64)[0])
        return torch.Generator(device=device).manual_seed(state)

    @contextlib.contextmanager
    def seeded(self, device: torch.device) -> Iterator[None]:
        """Torch's global generator (dropout, a module's own randomness) seeded from the cell
        for the block, and restored after: nothing depends on the executor or on what ran
        before."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(self.seed_sequence().generate_state(2, np.uint64)[1] >> 1))
            yield


def plan_cells(
    estimators: Sequence[str],
    taus: Sequence[float],
    ks: Sequence[int],
    batch_sizes: Sequence[int],
    seeds: Sequence[int],
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> dict[Cell, list[store.CellKey]]:
    """Each cell with the grid points it fills: its own, and for an estimator that takes no
    τ (or K), every τ (or K) of ``grid`` (default: the values asked for). A resumed file's
    grid may hold more values than a sweep asks for; an estimator without τ is one cell at
    all of them."""
    filled_taus = list(grid["tau"]) if grid is not None else list(taus)
    filled_ks = list(grid["k"]) if grid is not None else list(ks)
    plan: dict[Cell, list[store.CellKey]] = {}
    for name in estimators:
        hyper = E.info(name).hyper
        for batch_size in batch_sizes:
            for seed in seeds:
                for tau in taus if "tau" in hyper else [None]:
                    for k in ks if "k" in hyper else [None]:
                        cell = Cell(name, tau, k, batch_size, seed)
                        plan[cell] = [
                            (name, t, kk, batch_size, seed)
                            for t in (filled_taus if tau is None else [tau])
                            for kk in (filled_ks if k is None else [k])
                        ]
    return plan


def inapplicable(task: Task, cells: Iterable[Cell]) -> str | None:
    """Why none of ``cells`` can run on ``task``, in one line (each estimator's reason), or
    None where one can: a sweep of them would compute nothing."""
    reasons: dict[str, str] = {}
    for cell in cells:
        reason = not_applicable(task, cell)
        if reason is None:
            return None
        label = E.info(cell.estimator).label
        reasons.setdefault(label, reason if label in reason else f"{label}: {reason}")
    if not reasons:
        return None
    return f"no estimator applies to the {task.name} task: {'; '.join(reasons.values())}"


def check_applicable(
    task: Task,
    estimators: Sequence[str] | None,
    taus: Sequence[float],
    ks: Sequence[int],
    batch_sizes: Sequence[int],
) -> None:
    """Refuse, before any work, a sweep of which no cell applies (``estimators`` None: the
    registry's default set), in one line naming each estimator's reason.

    Raises:
        ValueError: no cell applies.
    """
    if estimators is None:
        estimators = [
            name
            for name, entry in E.available().items()
            if entry.default and entry.variable == task.variable
        ]
    reason = inapplicable(task, plan_cells(estimators, taus, ks, batch_sizes, [0]))
    if reason is not None:
        raise ValueError(reason)


def not_applicable(task: Task, cell: Cell) -> str | None:
    """Why ``cell`` cannot run on ``task``, or None."""
    info = E.info(cell.estimator)
    reason = task.applicable(info)
    if reason is None and cell.k is not None and not info.min_k <= cell.k <= info.max_k:
        reason = f"{info.label} needs {info.min_k} <= k <= {info.max_k}"
    outcomes = task.outcomes
    if reason is None and info.without_replacement and outcomes is not None and cell.k > outcomes:
        reason = f"{info.label} draws k distinct samples; an example has {outcomes} outcomes"
    return reason


def run_cell(
    task: Task, cell: Cell, reps: int, reference: Reference, threads: int, warmup: int
) -> dict[str, Any]:
    """Draw ``reps`` gradients for ``cell`` and reduce them to metrics (a picklable record)."""
    reason = not_applicable(task, cell)
    if reason is not None:
        return {"status": f"not applicable: {reason}"}
    if not np.isfinite(reference.gradient).all() or not np.isfinite(reference.variance):
        return {"status": f"failed: the reference gradient ({reference.kind}) is not finite"}
    start = time.perf_counter()
    try:
        with pinned_threads(threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record, evaluations, draw_seconds = _measure(task, cell, reps, reference, warmup)
        g_star = np.asarray(reference.gradient, float)
        record.update(
            at_equal_cost(record, {"evaluations": evaluations, "draw_seconds": draw_seconds})
        )
        record.update(
            draw_seconds=draw_seconds,
            evaluations=float(evaluations),
            parameters=float(g_star.size),
            reference_norm2=float(g_star @ g_star),
            reference_draws=float(reference.count),
        )
    except NonFiniteDraws as error:
        return {
            "status": f"failed: gradient draws are not finite ({error}; the task's loss or the "
            "estimator overflowed)"
        }
    except Exception as error:  # recorded, reported, and retried on resume
        return {"status": f"failed: {type(error).__name__}: {error}"}
    bad = store.non_finite(record)
    if bad:
        return {"status": f"failed: non-finite {', '.join(bad)}"}
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    return {
        **record,
        "status": store.DONE,
        "seconds": time.perf_counter() - start,
        **({"notes": notes} if notes else {}),
    }


def _measure(
    task: Task, cell: Cell, reps: int, reference: Reference, warmup: int
) -> tuple[dict[str, Any], float, float]:
    """The cell's metrics, adapted state and per-group metrics; the objective evaluations
    per draw, and the seconds per draw."""
    groups = parameter_columns(task)
    moments = GradientMoments(reference, groups)
    estimator = E.get(cell.estimator, **cell.options())
    generator = cell.generator(task.device)
    with cell.seeded(task.device):
        # Stateful estimators are measured at their adapted state, frozen: the adaptation
        # draws are spent first and never measured.
        estimator = adapt(task, estimator, warmup, cell.batch_size, generator)
        first = time.perf_counter()
        for chunk in gradient_chunks(task, estimator, reps, cell.batch_size, generator):
            moments.add(chunk)
        draw_seconds = (time.perf_counter() - first) / reps
    record = moments.metrics()
    record.update(
        warmup=float(warmup if estimator.info.state is not None else 0),
        **{f"adapted_{name}": value for name, value in estimator.summary().items()},
    )
    if groups:
        record["groups"] = {
            group: {
                **moments.group_metrics(group),
                "parameters": float(len(columns)),
                "reference_norm2": float(np.square(reference.gradient.reshape(-1)[columns]).sum()),
            }
            for group, columns in groups.items()
        }
    evaluations = E.info(cell.estimator).evaluations_per_draw(
        estimator.options, choices(task, cell.batch_size)
    )
    return record, evaluations, draw_seconds
