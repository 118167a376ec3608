"""Sweeps over estimator × τ × K × batch size (× seed), stored as one xarray Dataset.

Every cell draws ``reps`` gradients at the task's fixed parameters and reduces them to
metrics against a reference computed once per batch size. Cells are independent: each gets
its own ``numpy.random.SeedSequence`` derived from the master seed and the cell's own
coordinates (not its position), so results are identical whatever the executor, the order,
or the grid a cell was first computed in.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

import gvbench
import gvbench.estimators as E
import gvbench.tasks
from gvbench import engine, provenance
from gvbench.estimators.validation import check_count, check_tau
from gvbench.harness import journal, store
from gvbench.harness.draws import evaluations_per_draw, gradient_chunks, parameter_columns
from gvbench.harness.metrics import GradientMoments, Reference
from gvbench.harness.reference import REFERENCE_K, reference_gradient
from gvbench.harness.reference import load as load_reference
from gvbench.harness.reference import save as save_reference
from gvbench.path_lock import PathLock
from gvbench.tasks import Task
from gvbench.threads import pinned_threads

DEFAULT_TAU = (0.01, 0.1, 0.5, 1.0, 2.0, 10.0)
DEFAULT_K = (1, 10, 100, 1000)
# The paper's toy tables use 10⁴ draws per cell; the CLI and the Python API share these.
DEFAULT_REPS = 10_000


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

    def generator(self, device: torch.device) -> torch.Generator:
        state = int(self.seed_sequence().generate_state(1, np.uint64)[0])
        return torch.Generator(device=device).manual_seed(state)


def _sequence(value: Any, name: str) -> list[Any]:
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def check_grid(
    estimators: Sequence[str],
    taus: Sequence[float],
    ks: Sequence[int],
    batch_sizes: Sequence[int],
    reps: int,
) -> tuple[list[str], list[float], list[int], list[int], int]:
    """Validate a grid before any work starts; errors name the argument and its range."""
    for name in estimators:
        E.info(name)  # KeyError naming the known estimators
    taus = sorted({check_tau(t) for t in taus})
    ks = sorted({check_count(k, "k", 1) for k in ks})
    batch_sizes = sorted({check_count(b, "batch_size", 1) for b in batch_sizes})
    reps = check_count(reps, "reps", 2)
    return list(dict.fromkeys(estimators)), taus, ks, batch_sizes, reps


def plan_cells(
    estimators: Sequence[str],
    taus: Sequence[float],
    ks: Sequence[int],
    batch_sizes: Sequence[int],
    seeds: Sequence[int],
) -> dict[Cell, list[store.CellKey]]:
    """Each cell with the grid points it fills (several when τ or K does not apply)."""
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
                            for t in taus
                            if tau is None or t == tau
                            for kk in ks
                            if k is None or kk == k
                        ]
    return plan


def run_cell(
    task: Task, cell: Cell, reps: int, reference: Reference, threads: int
) -> dict[str, Any]:
    """Draw ``reps`` gradients for ``cell`` and reduce them to metrics (a picklable record)."""
    info = E.info(cell.estimator)
    reason = task.applicable(info)
    if reason is None and cell.k is not None and not info.min_k <= cell.k <= info.max_k:
        reason = f"{info.label} needs {info.min_k} <= k <= {info.max_k}"
    outcomes = task.outcomes
    if reason is None and info.without_replacement and outcomes is not None and cell.k > outcomes:
        reason = f"{info.label} draws k distinct samples; an example has {outcomes} outcomes"
    if reason is not None:
        return {"status": f"not applicable: {reason}"}
    if not np.isfinite(reference.gradient).all() or not np.isfinite(reference.variance):
        return {"status": f"failed: the reference gradient ({reference.kind}) is not finite"}
    start = time.perf_counter()
    try:
        with pinned_threads(threads):
            groups = parameter_columns(task)
            moments = GradientMoments(reference)
            by_group = {
                group: (columns, GradientMoments(reference.restrict(columns)))
                for group, columns in groups.items()
            }
            # Two passes over the same seeded draws (see GradientMoments): a fresh estimator
            # and generator replay the first pass exactly.
            for replay in (False, True):
                estimator = E.get(cell.estimator, **cell.options())
                generator = cell.generator(task.device)
                bad = 0
                if not replay:
                    first_pass = time.perf_counter()
                for chunk in gradient_chunks(task, estimator, reps, cell.batch_size, generator):
                    bad += int((~torch.isfinite(chunk).all(1)).sum())
                    if not bad:
                        moments.add(chunk)
                        for columns, group_moments in by_group.values():
                            group_moments.add(
                                chunk[:, torch.as_tensor(columns, device=chunk.device)]
                            )
                if bad:
                    return {
                        "status": f"failed: {bad} of {reps} gradient draws are not finite (the "
                        "task's loss or the estimator overflowed)"
                    }
                if not replay:
                    draw_seconds = (time.perf_counter() - first_pass) / reps
                    moments.replay()
                    for _, group_moments in by_group.values():
                        group_moments.replay()
            record = moments.metrics()
            if by_group:
                record["groups"] = {
                    group: {
                        **group_moments.metrics(),
                        "parameters": float(len(columns)),
                        "reference_norm2": float(
                            np.square(reference.gradient.reshape(-1)[columns]).sum()
                        ),
                    }
                    for group, (columns, group_moments) in by_group.items()
                }
            evaluations = evaluations_per_draw(
                task, E.get(cell.estimator, **cell.options()), cell.batch_size, generator
            )
        g_star = np.asarray(reference.gradient, float)
        record.update(
            draw_seconds=draw_seconds,
            evaluations=float(evaluations),
            parameters=float(g_star.size),
            reference_norm2=float(g_star @ g_star),
            reference_draws=float(reference.count),
        )
    except Exception as error:  # recorded, reported, and retried on resume
        return {"status": f"failed: {type(error).__name__}: {error}"}
    bad = store.non_finite(record)
    if bad:
        return {"status": f"failed: non-finite {', '.join(bad)}"}
    return {**record, "status": store.DONE, "seconds": time.perf_counter() - start}


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool whose workers start fresh (spawn): safe with torch's threads and CUDA."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


# Attributes that must agree for a stored file to be resumed: the same experiment.
IDENTITY = ("task", "task_config", "reps", "reference", "threads_per_cell", "seed")


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
    reference_reps: int | None = None,
    reference_k: int = REFERENCE_K,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Variance, bias², MSE, cosine and SNR of every estimator over a grid of τ, K and B.

    Args:
        task: a :class:`~gvbench.tasks.Task`, or a task name built with its defaults.
        estimators: registered names (default: the registry's default set — all but the exact
            reference and the FouST reconstruction).
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
            task and references are scattered to its workers once, cells lost with a worker
            are rerun), or any ``concurrent.futures.Executor``.
        progress: show a progress bar with an ETA.
        threads_per_cell: torch intra-op threads inside a cell, fixed so that results do not
            depend on the executor.
        reference_reps, reference_k: size of the RLOO reference when the task cannot enumerate
            (default: the task's ``reference_reps``).
        device: run the task there (e.g. ``"cuda"``): draws and their reduction stay on the
            device, only metrics come back. Default: where the task is (the CPU).

    Returns:
        Dataset with dims ``estimator, tau, k, batch_size`` (and ``seed`` for a sequence of
        seeds); data variables ``variance, variance_per_coord, bias2, mse, cosine, snr``, each
        with an ``_se`` companion; per cell its ``status``, cost (``seconds``,
        ``draw_seconds``, ``evaluations`` per draw) and provenance (``parameters`` P,
        ``reference_norm2`` ‖g*‖², ``reference_draws``: 0 for an exact reference). A task
        with parameter groups adds ``group_<metric>`` variables along a ``group`` dimension.
    """
    if isinstance(task, str):
        task = gvbench.tasks.get(task)
    if not isinstance(task, Task):
        raise TypeError(
            f"task must be a gvbench.tasks.Task or a task name "
            f"({', '.join(gvbench.tasks.available())}), got {task!r}"
        )
    if device is not None:
        task = task.to(device)
    reference_reps = check_count(
        task.reference_reps if reference_reps is None else reference_reps, "reference_reps", 2
    )
    reference_k = check_count(reference_k, "reference_k", 2)
    if estimators is None:
        estimators = [name for name, entry in E.available().items() if entry.default]
    seeds = sorted({check_count(s, "seed", 0, 2**63 - 1) for s in _sequence(seed, "seed")})
    names, taus, ks, batch_sizes, reps = check_grid(
        _sequence(estimators, "estimators"),
        _sequence(tau, "tau"),
        _sequence(k, "k"),
        _sequence(batch_size, "batch_size"),
        reps,
    )
    threads_per_cell = check_count(threads_per_cell, "threads_per_cell", 1)
    attrs = {
        "title": f"gvbench sweep of the {task.name} task",
        "Conventions": "CF-1.8",
        "task": task.name,
        "task_config": json.dumps(task.config(), sort_keys=True),
        "reps": reps,
        "reference": "exact where the task enumerates, else "
        f"rloo(k={reference_k}, reps={reference_reps})",
        "threads_per_cell": threads_per_cell,
        "seed": seeds[0] if not isinstance(seed, Iterable) else json.dumps(seeds),
        "dtype": str(task.dtype).removeprefix("torch."),
        "device": str(task.device),
        "gvbench_version": gvbench.__version__,
        "git_commit": provenance.git_commit(),
        "torch_version": str(torch.__version__),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    coords: dict[str, list[Any]] = {
        "estimator": names,
        "tau": taus,
        "k": ks,
        "batch_size": batch_sizes,
        "seed": seeds,
        "group": list(task.parameter_groups() or {}),
    }
    if path is not None:
        store.check_output_path(path)
    lock = PathLock(path) if path is not None else None
    with lock if lock is not None else contextlib.nullcontext():
        return _sweep_locked(
            task,
            path,
            lock,
            attrs,
            coords,
            names,
            taus,
            ks,
            batch_sizes,
            seeds,
            seed,
            reps,
            reference_reps,
            reference_k,
            threads_per_cell,
            executor,
            progress,
        )


def _sweep_locked(
    task: Task,
    path: str | os.PathLike[str] | None,
    lock: PathLock | None,
    attrs: dict[str, Any],
    coords: dict[str, list[Any]],
    names: list[str],
    taus: list[float],
    ks: list[int],
    batch_sizes: list[int],
    seeds: list[int],
    seed: int | Sequence[int],
    reps: int,
    reference_reps: int,
    reference_k: int,
    threads_per_cell: int,
    executor: Any,
    progress: bool,
) -> xr.Dataset:
    records: dict[store.CellKey, dict[str, Any]] = {}
    if path is not None and Path(path).exists():
        stored = store.read(path, verify=False)
        if "task" not in stored.attrs or "status" not in stored:
            raise store.ResultsFileError(
                f"{path} is a netCDF file but not a gvbench sweep; it was left as it is: "
                "choose another path"
            )
        for key in IDENTITY:
            if str(stored.attrs.get(key)) != str(attrs[key]):
                raise ValueError(
                    f"{path} holds a different experiment ({key}: {stored.attrs.get(key)!r} "
                    f"vs {attrs[key]!r}); choose another path"
                )
        corrupted = store.corrupted_cells(stored)
        if corrupted:
            warnings.warn(
                f"{path}: {len(corrupted)} cell(s) do not match their checksum and will be "
                f"recomputed ({'; '.join(corrupted[:3])})",
                stacklevel=2,
            )
        if stored.attrs.get("git_commit") != attrs["git_commit"]:
            warnings.warn(
                f"{path} was written at commit {stored.attrs.get('git_commit')} and is resumed at "
                f"{attrs['git_commit']}: its finished cells are kept as they are",
                stacklevel=2,
            )
        records = store.finished_records(stored)
        for name, values in coords.items():
            if name == "group":  # fixed by the task's configuration, which must match
                continue
            old = (
                stored[name].values.tolist() if name in stored.dims else [int(stored.attrs["seed"])]
            )
            merged = list(dict.fromkeys([*old, *values]))
            coords[name] = merged if name == "estimator" else sorted(merged)
        attrs["created"] = stored.attrs.get("created", attrs["created"])
        attrs["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    table = E.available()
    estimator_coords = {
        "label": [table[n].label for n in coords["estimator"]],
        "unbiased": [table[n].unbiased for n in coords["estimator"]],
        "uses_tau": ["tau" in table[n].hyper for n in coords["estimator"]],
        "uses_k": ["k" in table[n].hyper for n in coords["estimator"]],
    }

    def dataset() -> xr.Dataset:
        ds = store.build_dataset(records, coords, estimator_coords, attrs)
        return ds.squeeze("seed", drop=True) if not isinstance(seed, Iterable) else ds

    plan = plan_cells(names, taus, ks, batch_sizes, seeds)
    todo = {
        cell: keys
        for cell, keys in plan.items()
        if not all(key in records and store.is_finished(records[key]["status"]) for key in keys)
    }
    references = {}
    for b in sorted({cell.batch_size for cell in todo}):
        # Kept beside the results, so that a resumed sweep does not recompute minutes of
        # RLOO draws; tagged with the experiment, so a stale one is never used.
        identity = json.dumps(
            [attrs["task_config"], b, reference_reps, reference_k, seeds[0]], sort_keys=True
        )
        cache = None if path is None else Path(f"{path}.references") / f"batch-{b}.npz"
        reference = None if cache is None else load_reference(cache, identity)
        if reference is None:
            reference = reference_gradient(
                task,
                b,
                reps=reference_reps,
                k=reference_k,
                generator=Cell("reference", None, None, b, seeds[0]).generator(task.device),
                progress=progress,
            )
            if cache is not None:
                save_reference(reference, cache, identity)
        references[b] = reference
    if path is not None:
        # The whole grid once, before the first cell; then one journal file per cell (the
        # driver's cost per cell does not grow with the grid), consolidated at the end.
        store.write_atomic(dataset(), path)
        journal.clear(path)
    # The task (model weights, data) and the references travel to each worker once.
    shared_task = engine.share(executor, task)
    shared = {b: engine.share(executor, reference) for b, reference in references.items()}
    jobs = [
        (cell, (shared_task, cell, reps, shared[cell.batch_size], threads_per_cell))
        for cell in todo
    ]
    if not jobs and progress and path is not None:
        print(f"all {len(plan)} cells already in {path}; nothing to compute", file=sys.stderr)
    failures = []
    bar = tqdm(
        total=len(jobs), disable=not progress or not jobs, unit="cell", desc=f"{task.name} sweep"
    )
    try:
        with bar:
            for cell, record in engine.run(run_cell, jobs, executor):
                record = store.sealed(record)
                for key in todo[cell]:
                    records[key] = record
                    if path is not None:
                        journal.write(path, key, record)
                if record["status"].startswith("failed"):
                    failures.append(f"{cell}: {record['status']}")
                if lock is not None:
                    lock.refresh()
                bar.set_postfix_str(f"{cell.estimator} τ={cell.tau} K={cell.k} B={cell.batch_size}")
                bar.update()
    finally:  # finished cells reach the file even on Ctrl-C or an error
        if path is not None and jobs:
            store.write_atomic(dataset(), path)
            journal.clear(path)
    if failures:
        warnings.warn(f"{len(failures)} cell(s) failed:\n" + "\n".join(failures), stacklevel=3)
    return dataset()


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
