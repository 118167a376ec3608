"""What defines a sweep, checked once, before any work: :class:`SweepSpec`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

import torch

import gvbench.estimators as E
import gvbench.tasks
from gvbench.estimators.validation import check_count, check_tau
from gvbench.harness.metrics import MIN_DRAWS
from gvbench.harness.reference import REFERENCE_K
from gvbench.harness.warmup import DEFAULT_WARMUP, MAX_WARMUP_SECONDS
from gvbench.tasks import Task
from gvbench.tasks.memory import parse_memory

DEFAULT_TAU = (0.01, 0.1, 0.5, 1.0, 2.0, 10.0)
DEFAULT_K = (1, 10, 100, 1000)
# The paper's toy tables use 10⁴ draws per cell; the CLI and the Python API share these.
DEFAULT_REPS = 10_000


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """Everything that defines a sweep's numbers: the arguments of :func:`gvbench.sweep`
    other than where its results go (``path``) and how its cells run (``executor``,
    ``progress``).

    The constructor takes what :func:`~gvbench.sweep` takes (a task or a task's name, a
    scalar or a sequence for each axis, ``None`` for the default estimators, a ``device``
    to move the task to) and keeps it canonical: the task built and moved, estimators in
    their registered spelling and order without repeats, every axis sorted without repeats.
    A value out of range raises a one-line error naming the argument and its range.

    Attributes:
        task: the task measured.
        estimators: registered names, in the order given.
        tau, k, batch_size: the grid's values. An estimator that takes no τ (or K) is
            computed once and its result filled along that axis.
        reps: gradient draws per cell (at least :data:`~gvbench.harness.metrics.MIN_DRAWS`).
        seed: master seeds.
        seed_axis: whether results keep a ``seed`` dimension (default: a sequence of seeds
            was given, not one seed).
        threads_per_cell: torch intra-op threads inside a cell.
        reference_reps: draws of the RLOO reference where the task cannot enumerate, or
            ``"auto"``.
        reference_k: K of the RLOO reference.
        warmup: adaptation steps of an estimator with state before it is measured.
        max_warmup_seconds: the longest all cells' adaptation may take (it changes no number).
        time_budget: seconds the whole sweep may take, or None: the warm-up and an ``"auto"``
            reference are fitted to it from a pilot (see :mod:`gvbench.harness.plan`).
        memory: bytes one pass of a ModuleTask's draws may take (a size like ``"4G"`` or
            ``"512M"``, or a number of bytes), or None: half the memory available where the
            pass runs (see :mod:`gvbench.tasks.memory`).
    """

    task: Task
    estimators: tuple[str, ...] = None  # None: the registry's default set
    tau: tuple[float, ...] = DEFAULT_TAU
    k: tuple[int, ...] = DEFAULT_K
    batch_size: tuple[int, ...] = (1,)
    reps: int = DEFAULT_REPS
    seed: tuple[int, ...] = (0,)
    _: dataclasses.KW_ONLY
    seed_axis: bool = None  # None: whether seed was given as a sequence
    threads_per_cell: int = 1
    reference_reps: int | Literal["auto"] = "auto"
    reference_k: int = REFERENCE_K
    warmup: int = DEFAULT_WARMUP
    max_warmup_seconds: float = MAX_WARMUP_SECONDS
    time_budget: float | None = None
    memory: int | str | None = None
    device: dataclasses.InitVar[str | torch.device | None] = None

    def __post_init__(self, device: str | torch.device | None) -> None:
        task = self.task
        if isinstance(task, str):
            task = gvbench.tasks.get(task)
        if not isinstance(task, Task):
            raise TypeError(
                f"task must be a gvbench.tasks.Task or a task name "
                f"({', '.join(gvbench.tasks.available())}), got {task!r}"
            )
        self._set("task", task if device is None else task.to(device))
        reference_reps = self.reference_reps
        if reference_reps is None or (isinstance(reference_reps, str) and reference_reps == "auto"):
            self._set("reference_reps", "auto")
        else:
            self._set("reference_reps", check_count(reference_reps, "reference_reps", 2))
        self._set("reference_k", check_count(self.reference_k, "reference_k", 2))
        estimators = self.estimators
        if estimators is None:
            # the default set of the variable the task samples (categorical, k-subsets)
            estimators = [
                name
                for name, entry in E.available().items()
                if entry.default and entry.variable == task.variable
            ]
        if self.seed_axis is None:
            self._set("seed_axis", isinstance(self.seed, Iterable))
        seeds = {check_count(s, "seed", 0, 2**63 - 1) for s in _values(self.seed, "seed")}
        self._set("seed", tuple(sorted(seeds)))
        self._check_grid(estimators)
        self._set("threads_per_cell", check_count(self.threads_per_cell, "threads_per_cell", 1))
        self._set("warmup", check_count(self.warmup, "warmup", 0))
        limit = self.max_warmup_seconds
        if not (isinstance(limit, int | float) and limit > 0):
            raise ValueError(f"max_warmup_seconds must be a number > 0, got {limit!r}")
        self._set("max_warmup_seconds", float(limit))
        budget = self.time_budget
        if budget is not None:
            if isinstance(budget, bool) or not (isinstance(budget, int | float) and budget > 0):
                raise ValueError(f"time_budget must be a number of seconds > 0, got {budget!r}")
            self._set("time_budget", float(budget))
        if self.memory is not None:
            self._set("memory", parse_memory(self.memory))

    def _check_grid(self, estimators: Any) -> None:
        """The grid's axes and draws, canonical; errors name the argument and its range."""
        estimators = _values(estimators, "estimators")
        taus, ks = _values(self.tau, "tau"), _values(self.k, "k")
        batch_sizes = _values(self.batch_size, "batch_size")
        # KeyError naming the known estimators; variants written canonically
        names = [E.info(name).name for name in estimators]
        self._set("estimators", tuple(dict.fromkeys(names)))
        self._set("tau", tuple(sorted({check_tau(t) for t in taus})))
        self._set("k", tuple(sorted({check_count(k, "k", 1) for k in ks})))
        batch_sizes = {check_count(b, "batch_size", 1) for b in batch_sizes}
        self._set("batch_size", tuple(sorted(batch_sizes)))
        self._set("reps", check_count(self.reps, "reps", MIN_DRAWS))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: only the constructor writes

    def coords(self) -> dict[str, list[Any]]:
        """The results' coordinates: the grid's axes, all seeds, and the task's groups."""
        return {
            "estimator": list(self.estimators),
            "tau": list(self.tau),
            "k": list(self.k),
            "batch_size": list(self.batch_size),
            "seed": list(self.seed),
            "group": list(self.task.parameter_groups() or {}),
        }


def _values(value: Any, name: str) -> list[Any]:
    """A scalar as one value, a sequence as its values; never none."""
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values
