"""Sweeps over estimator × τ × K × batch size (× seed), stored as one xarray Dataset.

Every cell draws ``reps`` gradients at the task's fixed parameters and reduces them to
metrics against a reference computed once per batch size. Cells are independent: each gets
its own ``numpy.random.SeedSequence`` derived from the master seed and the cell's own
coordinates (not its position), so results are identical whatever the executor, the order,
or the grid a cell was first computed in.

What a sweep measures is a :class:`~gvbench.harness.spec.SweepSpec`; a cell and its
measurement are in :mod:`gvbench.harness.cell`, resuming a stored sweep in
:mod:`gvbench.harness.resume`, the adaptation budget in :mod:`gvbench.harness.warmup`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import xarray as xr
from tqdm.auto import tqdm

import gvbench.estimators as E
from gvbench import engine, provenance, version
from gvbench.harness import journal, store
from gvbench.harness.cell import Cell, not_applicable, plan_cells, run_cell
from gvbench.harness.draws import adapt
from gvbench.harness.metrics import Reference
from gvbench.harness.plan import Plan, plan_sweep, resumed_warmup
from gvbench.harness.reference import (
    NOISE_FRACTION,
    REFERENCE_K,
    Sizing,
    reference_gradient,
    resolution,
)
from gvbench.harness.reference import load as load_reference
from gvbench.harness.reference import save as save_reference
from gvbench.harness.resume import IDENTITY, resume
from gvbench.harness.spec import DEFAULT_K, DEFAULT_REPS, DEFAULT_TAU, SweepSpec
from gvbench.harness.warmup import DEFAULT_WARMUP, MAX_WARMUP_SECONDS, check_warmup_time
from gvbench.path_lock import PathLock
from gvbench.tasks import ModuleTask, Task
from gvbench.tasks.memory import MemoryBudgetError
from gvbench.threads import pinned_threads

__all__ = [
    "DEFAULT_K",
    "DEFAULT_REPS",
    "DEFAULT_TAU",
    "DEFAULT_WARMUP",
    "MAX_WARMUP_SECONDS",
    "Cell",
    "SweepSpec",
    "process_pool",
    "sweep",
    "sweep_over",
]


def sweep(
    task: Task | str,
    estimators: Sequence[str] | None = None,
    tau: float | Sequence[float] = DEFAULT_TAU,
    k: int | Sequence[int] = DEFAULT_K,
    batch_size: int | Sequence[int] = 1,
    reps: int = DEFAULT_REPS,
    seed: int | Sequence[int] = 0,
    *,
    path: str | os.PathLike[str] | None = None,
    executor: cf.Executor | None = None,
    progress: bool = True,
    threads_per_cell: int = 1,
    reference_reps: int | Literal["auto"] | None = None,
    reference_k: int = REFERENCE_K,
    device: str | torch.device | None = None,
    warmup: int = DEFAULT_WARMUP,
    max_warmup_seconds: float = MAX_WARMUP_SECONDS,
    time_budget: float | None = None,
    confirm: Callable[[str], bool] | None = None,
    memory: int | str | None = None,
) -> xr.Dataset:
    """Variance, bias², MSE, cosine and SNR of every estimator over a grid of τ, K and B.

    Args:
        task: a :class:`~gvbench.tasks.Task`, or a task name built with its defaults.
        estimators: registered names (default: the registry's default set for the variable
            the task samples — all but the exact reference and the FouST reconstruction).
        tau, k, batch_size: grid values (scalars or sequences). An estimator that takes no τ
            (or K) is computed once and its result filled along that axis.
        reps: gradient draws per cell (>= 2).
        seed: master seed; a sequence adds a ``seed`` dimension.
        path: a netCDF file, locked against a second sweep while this one runs. Written
            atomically with the grid first; each finished cell is then journaled on its own
            beside it and consolidated at the end (also on Ctrl-C, and by every read). If it
            exists, its finished cells are kept and only missing ones computed (resume /
            extend a grid).
        executor: where cells run (see :mod:`gvbench.engine`): ``None`` in-process (the
            default), a ``distributed.Client`` (e.g. from :func:`gvbench.engine.client`; the
            task and references are sent to its workers once, cells lost with a worker
            are rerun), or any ``concurrent.futures.Executor``.
        progress: show a progress bar with an ETA.
        threads_per_cell: torch intra-op threads inside a cell, fixed so that results do not
            depend on the executor.
        reference_reps, reference_k: size of the RLOO reference when the task cannot enumerate:
            a number of draws, or ``"auto"`` (the default), sized from the cells' own
            resolution (see :class:`~gvbench.harness.spec.SweepSpec`).
        device: run the task there (e.g. ``"cuda"``): draws and their reduction stay on the
            device, only metrics come back. Default: where the task is (the CPU).
        warmup: steps an estimator with state (REINFORCE's baseline, REBAR's η and λ,
            RELAX's network) adapts at the fixed parameters before it is frozen and measured.
        max_warmup_seconds: the longest all cells' adaptation may take; a longer plan is
            refused before any work, in one line that gives its time (it changes no number).
        time_budget: seconds the sweep may take: the warm-up and an auto reference fit it.
        confirm: asked before an auto reference of over ten minutes (None: refused, said why).
        memory: what one pass of a ModuleTask's draws may take, e.g. ``"4G"`` (default: half
            the memory available where it runs); a cell whose one draw needs more fails.

    Returns:
        Dataset with dims ``estimator, tau, k, batch_size`` (and ``seed`` for a sequence of
        seeds); data variables ``variance, variance_per_coord, bias2, mse, cosine, snr``, each
        with an ``_se`` companion; per cell its ``status``, cost (``seconds``,
        ``draw_seconds``, ``evaluations`` per draw) and provenance (``parameters`` P,
        ``reference_norm2`` ‖g*‖², ``reference_draws``: 0 for an exact reference). A task
        with parameter groups adds ``group_<metric>`` variables along a ``group`` dimension.
    """
    grid = (task, estimators, tau, k, batch_size, reps, seed)
    spec = SweepSpec(
        *grid,
        threads_per_cell=threads_per_cell,
        reference_reps=reference_reps,
        reference_k=reference_k,
        warmup=warmup,
        max_warmup_seconds=max_warmup_seconds,
        time_budget=time_budget,
        memory=memory,
        device=device,
    )
    return _run(spec, path, executor, progress, confirm)


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool whose workers start fresh (spawn): safe with torch's threads and CUDA."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _attributes(spec: SweepSpec) -> dict[str, Any]:
    """The file's description of the sweep: what defines it, and its provenance."""
    task = spec.task
    return {
        "title": f"gvbench sweep of the {task.name} task",
        "Conventions": "CF-1.8",
        "task": task.name,
        "task_config": json.dumps(task.config(), sort_keys=True),
        "reps": spec.reps,
        "reference": "exact where the task enumerates, else "
        f"rloo(k={spec.reference_k}, reps={spec.reference_reps})",
        "threads_per_cell": spec.threads_per_cell,
        "warmup": spec.warmup,
        "seed": json.dumps(list(spec.seed)) if spec.seed_axis else spec.seed[0],
        "dtype": str(task.dtype).removeprefix("torch."),
        "device": str(task.device),
        "gvbench_version": version.__version__,
        "git_commit": provenance.git_commit(),
        "torch_version": str(torch.__version__),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _run(
    spec: SweepSpec,
    path: str | os.PathLike[str] | None,
    executor: cf.Executor | None,
    progress: bool,
    confirm: Callable[[str], bool] | None = None,
) -> xr.Dataset:
    """The sweep ``spec`` defines, resumed from and saved to ``path`` when given."""
    if path is not None:
        spec = resumed_warmup(spec, path)  # a budget fitted it when the file was started
    attrs = _attributes(spec)
    if path is not None:
        store.check_output_path(path)
    lock = PathLock(path) if path is not None else None
    with lock if lock is not None else contextlib.nullcontext():
        task, coords = spec.task, spec.coords()
        records: dict[store.CellKey, dict[str, Any]] = {}
        if path is not None and Path(path).exists():
            resumed = resume(path, task, attrs, coords)
            records, coords, attrs = resumed.records, resumed.coords, resumed.attrs
        if isinstance(task, ModuleTask):  # its passes hold what fits the budget
            task.memory_budget = spec.memory
        elif spec.memory is not None:
            warnings.warn(
                f"memory= bounds a ModuleTask's passes; the {task.name} task sets its own",
                stacklevel=3,
            )
        if task.draw_mode == "auto":
            # Once per task, in the driver: every cell, on any executor, draws the same way.
            task.calibrate(E.get("st_gumbel_softmax"), max(spec.batch_size))
            if progress:
                for note in getattr(task, "notes", []):
                    print(note, file=sys.stderr)
        attrs["draw_mode"] = task.draw_mode
        attrs["experiment"] = store.experiment_digest({key: attrs[key] for key in IDENTITY})
        dataset = functools.partial(_dataset, records, coords, attrs, spec.seed_axis)
        plan = plan_cells(spec.estimators, spec.tau, spec.k, spec.batch_size, spec.seed, coords)
        todo = {
            cell: keys
            for cell, keys in plan.items()
            if not all(key in records and store.is_finished(records[key]["status"]) for key in keys)
        }
        applicable = [c for c in todo if not_applicable(task, c) is None]
        batch_sizes = {cell.batch_size for cell in todo}
        saved = {b for b in batch_sizes if path is not None and _cache(path, b).exists()}
        outline = plan_sweep(spec, applicable, batch_sizes, saved, bool(records), confirm)
        if todo and progress:
            print(outline.describe(), file=sys.stderr)
        check_warmup_time(outline.pilot, applicable, outline.warmup, spec.max_warmup_seconds)
        if outline.warmup != spec.warmup:  # fitted to the time budget: the file says so
            spec = dataclasses.replace(spec, warmup=outline.warmup)
            attrs["warmup"] = spec.warmup
            attrs["experiment"] = store.experiment_digest({key: attrs[key] for key in IDENTITY})
        references = {}
        for b in sorted(batch_sizes):
            at_b = [c for c in todo if c.batch_size == b]
            references[b] = _reference(spec, outline, b, at_b, path, attrs, progress)
        if not todo and path is not None:  # said with or without progress bars
            print(f"all {len(plan)} cells already in {path}; nothing to compute", file=sys.stderr)
        output = _Output(records, todo, dataset, attrs["experiment"], path, lock)
        bar = tqdm(
            total=len(todo),
            disable=not progress or not todo,
            unit="cell",
            desc=f"{task.name} sweep",
        )
        with bar:
            failures = _collect(spec, references, output, executor, bar)
        if failures:
            warnings.warn(f"{len(failures)} cell(s) failed:\n" + "\n".join(failures), stacklevel=3)
        return dataset()


def _dataset(
    records: dict[store.CellKey, dict[str, Any]],
    coords: dict[str, list[Any]],
    attrs: dict[str, Any],
    seed_axis: bool,
) -> xr.Dataset:
    """The results so far, every grid point filled or pending."""
    table = {name: E.info(name) for name in coords["estimator"]}
    estimator_coords = {
        "label": [table[n].label for n in coords["estimator"]],
        "unbiased": [table[n].unbiased for n in coords["estimator"]],
        "uses_tau": ["tau" in table[n].hyper for n in coords["estimator"]],
        "uses_k": ["k" in table[n].hyper for n in coords["estimator"]],
    }
    ds = store.build_dataset(records, coords, estimator_coords, attrs)
    return ds if seed_axis else ds.squeeze("seed", drop=True)


class _Output:
    """Where finished cells land: the records, and the file at ``path`` when given.

    The whole grid is written when the first cell lands (a sweep of one cell writes once);
    then one journal file per cell (the driver's cost per cell does not grow with the grid),
    consolidated into the file by :meth:`close`, which runs on Ctrl-C or an error too.
    """

    def __init__(
        self,
        records: dict[store.CellKey, dict[str, Any]],
        todo: dict[Cell, list[store.CellKey]],
        dataset: Callable[[], xr.Dataset],
        experiment: str,
        path: str | os.PathLike[str] | None,
        lock: PathLock | None,
    ) -> None:
        self.records, self.todo, self.dataset = records, todo, dataset
        self.experiment, self.path, self.lock = experiment, path, lock
        self.written = self.journaled = False

    def add(self, cell: Cell, record: dict[str, Any]) -> None:
        for key in self.todo[cell]:
            self.records[key] = record
        if self.path is not None and not self.written:
            store.write_atomic(self.dataset(), self.path)
            journal.clear(self.path)
            self.written = True
        elif self.path is not None:
            journal.write(self.path, self.todo[cell], record, self.experiment)
            self.journaled = True

    def close(self) -> None:
        if self.path is not None and self.journaled:
            store.write_atomic(self.dataset(), self.path)
            journal.clear(self.path)


def _collect(
    spec: SweepSpec,
    references: dict[int, Reference],
    output: _Output,
    executor: cf.Executor | None,
    bar: tqdm,
) -> list[str]:
    """Run the cells still to do, store each as it finishes; the failures, said."""
    # The task (model weights, data) and the references travel to each worker once.
    task = engine.share(executor, spec.task)
    shared = {b: engine.share(executor, reference) for b, reference in references.items()}
    jobs = [
        (
            cell,
            (
                task,
                cell,
                spec.reps,
                shared[cell.batch_size],
                spec.threads_per_cell,
                spec.warmup,
            ),
        )
        for cell in output.todo
    ]
    failures = []
    noted: set[str] = set()
    try:
        for cell, record in engine.run(run_cell, jobs, executor):
            for note in record.pop("notes", []):
                if note not in noted:  # said once, in the driver, wherever the cell ran
                    noted.add(note)
                    warnings.warn(note, stacklevel=4)
            record = store.sealed(record)
            output.add(cell, record)
            if record["status"].startswith("failed"):
                failures.append(f"{cell}: {record['status']}")
            if output.lock is not None:
                output.lock.refresh()
            bar.set_postfix_str(f"{cell.estimator} τ={cell.tau} K={cell.k} B={cell.batch_size}")
            bar.update()
    finally:  # finished cells reach the file even on Ctrl-C or an error
        output.close()
    return failures


def _cache(path: str | os.PathLike[str], batch_size: int) -> Path:
    return Path(f"{path}.references") / f"batch-{batch_size}.npz"


def _reference(
    spec: SweepSpec,
    plan: Plan,
    batch_size: int,
    cells: Sequence[Cell],
    path: str | os.PathLike[str] | None,
    attrs: dict[str, Any],
    progress: bool,
) -> Reference:
    """The reference of the cells at ``batch_size``: from the cache beside ``path`` when it is
    this experiment's and intact, else computed (with torch's global generator seeded and the
    cells' thread count, like a cell) and cached."""
    # Kept beside the results, so that a resumed sweep does not recompute minutes of RLOO
    # draws; tagged with the experiment and a digest, so a stale or edited one is never used.
    identity = json.dumps([attrs["experiment"], batch_size])
    cache = None if path is None else _cache(path, batch_size)
    if cache is not None:
        reference, why = load_reference(cache, identity)
        if why is not None:
            warnings.warn(why, stacklevel=4)
        if reference is not None:
            return reference
    source = Cell("reference", None, None, batch_size, spec.seed[0])
    device = spec.task.device
    with source.seeded(device), pinned_threads(spec.threads_per_cell):
        generator = source.generator(device)
        reference = _new_reference(spec, plan, batch_size, cells, attrs, progress, generator)
    if cache is not None:
        save_reference(reference, cache, identity)
    return reference


def _new_reference(
    spec: SweepSpec,
    plan: Plan,
    batch_size: int,
    cells: Sequence[Cell],
    attrs: dict[str, Any],
    progress: bool,
    generator: torch.Generator,
) -> Reference:
    """Exact, of a given size, or ``auto``: sized from the cells' own resolution (at most the
    plan's cap; one that would run long is asked about first), and said."""
    task = spec.task
    if task.exact(batch_size):
        return reference_gradient(task, batch_size)
    size, k = spec.reference_reps, spec.reference_k
    if size != "auto":
        return reference_gradient(
            task, batch_size, reps=size, k=k, generator=generator, progress=progress
        )
    finest, where = math.inf, "no cell applies"
    for cell in cells:
        if not_applicable(task, cell) is None:
            pilot = cell.generator(task.device, 1)
            try:
                with cell.seeded(task.device):
                    estimator = E.get(cell.estimator, **cell.options())
                    estimator = adapt(task, estimator, spec.warmup, batch_size, pilot)
                    found = resolution(task, estimator, batch_size, spec.reps, pilot)
            except MemoryBudgetError:  # the cell fails on its own, saying what it needs
                continue
            if found < finest:
                finest, where = found, f"{cell.estimator}{_hyper(cell)}"
    target = NOISE_FRACTION * finest if math.isfinite(finest) else None
    plan.check_reference(batch_size, target)
    cap = plan.caps[batch_size]  # the task's, or fitted to the time budget
    reference = reference_gradient(
        task,
        batch_size,
        k=k,
        generator=generator,
        progress=progress,
        noise_target=target,
        cap=cap,
    )
    budget = plan.budget if cap < task.reference_reps else None
    sizing = Sizing(finest, where, reference.count, reference.noise, cap, budget)
    attrs["reference_sizing"] = (
        attrs.get("reference_sizing", "") + sizing.describe(batch_size) + "\n"
    )
    if progress:
        print(sizing.describe(batch_size), file=sys.stderr)
    return reference


def _hyper(cell: Cell) -> str:
    return "".join(f" {name}={value:g}" for name, value in cell.options().items())


def sweep_over(
    tasks: Sequence[Task],
    coords: dict[str, Sequence[Any]],
    folder: str | os.PathLike[str] | None = None,
    progress: bool = True,
    per_task: Sequence[dict[str, Any]] | None = None,
    **options: Any,
) -> xr.Dataset:
    """The same sweep over several tasks (e.g. a grid of θ), concatenated along ``point``.

    ``coords`` are per-task values to attach along ``point`` (e.g. the probabilities p₁, p₂,
    p₃ of each θ); ``per_task`` are options that differ by task (e.g. its batch size). With
    ``folder``, each point is its own resumable file there.
    """
    per_task = per_task or [{}] * len(tasks)
    results = []
    for index, task in enumerate(tqdm(tasks, disable=not progress, unit="point", desc="points")):
        path = None if folder is None else Path(folder) / f"point-{index:04d}.nc"
        results.append(sweep(task, path=path, progress=False, **options, **per_task[index]))
    # Only the per-cell variables vary by point; the estimators' descriptions do not.
    per_cell = [name for name in results[0].data_vars if results[0][name].dims != ("estimator",)]
    combined = xr.concat(
        results, dim="point", data_vars=per_cell, coords="minimal", combine_attrs="drop_conflicts"
    )
    created = sorted(str(r.attrs["created"]) for r in results if "created" in r.attrs)
    if created:
        combined.attrs["created"] = created[0]
    combined = combined.assign_coords(
        {name: ("point", list(values)) for name, values in coords.items()}
    )
    combined.attrs["task_configs"] = json.dumps([task.config() for task in tasks])
    return combined
