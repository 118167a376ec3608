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
import math
import multiprocessing
import os
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

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
from gvbench.harness.draws import adapt, choices, gradient_chunks, parameter_columns
from gvbench.harness.metrics import MIN_DRAWS, GradientMoments, NonFiniteDraws, Reference
from gvbench.harness.reference import (
    NOISE_FRACTION,
    REFERENCE_K,
    Sizing,
    reference_gradient,
    resolution,
)
from gvbench.harness.reference import load as load_reference
from gvbench.harness.reference import save as save_reference
from gvbench.path_lock import PathLock
from gvbench.tasks import Task
from gvbench.threads import pinned_threads

DEFAULT_TAU = (0.01, 0.1, 0.5, 1.0, 2.0, 10.0)
DEFAULT_K = (1, 10, 100, 1000)
# The paper's toy tables use 10⁴ draws per cell; the CLI and the Python API share these.
DEFAULT_REPS = 10_000
# Steps (of 16 draws) a stateful estimator adapts for before it is measured: on the toy,
# REBAR's and RELAX's variance settles within 500-1000 steps, REINFORCE's within 50.
DEFAULT_WARMUP = 1000


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
    # KeyError naming the known estimators; variants written canonically
    estimators = [E.info(name).name for name in estimators]
    taus = sorted({check_tau(t) for t in taus})
    ks = sorted({check_count(k, "k", 1) for k in ks})
    batch_sizes = sorted({check_count(b, "batch_size", 1) for b in batch_sizes})
    reps = check_count(reps, "reps", MIN_DRAWS)
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


def at_equal_cost(
    metrics: dict[str, float], evaluations: float, seconds: float
) -> dict[str, float]:
    """Variance and MSE per unit of cost: an estimator whose draw costs c can average B/c
    draws within a budget B, so V·c ranks estimators at any budget (and V·c/B is what the
    budget buys). Per objective evaluation and per second of a draw; the SEs scale alike
    (the costs are counts and measured times, taken as known)."""
    scaled = {}
    for metric in ("variance", "mse"):
        for unit, cost in (("work", evaluations), ("time", seconds)):
            scaled[f"{unit}_normalized_{metric}"] = metrics[metric] * cost
            scaled[f"{unit}_normalized_{metric}_se"] = metrics[f"{metric}_se"] * cost
    return scaled


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


# The longest adaptation a sweep starts without being told to (max_warmup_seconds), and
# the steps timed, in the driver, to estimate it.
MAX_WARMUP_SECONDS = 3600.0
TIMED_STEPS = 2


def _check_warmup_time(task: Task, cells: Sequence[Cell], options: Mapping[str, Any]) -> None:
    """Refuse, before any work, a ``warmup`` whose adaptation alone would run for longer than
    ``max_warmup_seconds`` (the largest warmup, 2²⁴ steps, is a day for one toy cell): a few
    steps of the costliest adapted cell are timed here, on a generator of their own."""
    warmup, limit = options["warmup"], options["max_warmup_seconds"]
    adapted = [c for c in cells if E.info(c.estimator).state is not None]
    if not warmup or not adapted or warmup <= TIMED_STEPS:
        return
    costliest = max(adapted, key=lambda c: (c.batch_size, c.k or 1))
    estimator = E.get(costliest.estimator, **costliest.options())
    generator = torch.Generator(device=task.device).manual_seed(0)
    try:
        with pinned_threads(options["threads"]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cell says what it has to say, once
            adapt(task, estimator, 1, costliest.batch_size, generator)  # warm-up and tracing
            start = time.perf_counter()
            adapt(task, estimator, TIMED_STEPS, costliest.batch_size, generator)
    except Exception:  # a loss that fails here fails its cells, which say why
        return
    step = (time.perf_counter() - start) / TIMED_STEPS
    total = step * warmup * len(adapted)
    if total > limit:
        raise ValueError(
            f"warmup={warmup} would adapt {len(adapted)} cell(s) for about {_duration(total)} "
            f"({step * 1e3:.3g} ms a step, measured on {costliest.estimator} at "
            f"B={costliest.batch_size}), above max_warmup_seconds={limit:g}: lower warmup (the "
            f"default {DEFAULT_WARMUP} steps adapt the field's estimators), or raise "
            "max_warmup_seconds (--max-warmup-seconds) to run it"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def run_cell(
    task: Task, cell: Cell, reps: int, reference: Reference, threads: int, warmup: int
) -> dict[str, Any]:
    """Draw ``reps`` gradients for ``cell`` and reduce them to metrics (a picklable record)."""
    info = E.info(cell.estimator)
    reason = not_applicable(task, cell)
    if reason is not None:
        return {"status": f"not applicable: {reason}"}
    if not np.isfinite(reference.gradient).all() or not np.isfinite(reference.variance):
        return {"status": f"failed: the reference gradient ({reference.kind}) is not finite"}
    start = time.perf_counter()
    try:
        with pinned_threads(threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            groups = parameter_columns(task)
            moments = GradientMoments(reference, groups)
            estimator = E.get(cell.estimator, **cell.options())
            generator = cell.generator(task.device)
            with cell.seeded(task.device):
                # Stateful estimators are measured at their adapted state, frozen: the
                # adaptation draws are spent first and never measured.
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
                        "reference_norm2": float(
                            np.square(reference.gradient.reshape(-1)[columns]).sum()
                        ),
                    }
                    for group, columns in groups.items()
                }
            evaluations = info.evaluations_per_draw(
                estimator.options, choices(task, cell.batch_size)
            )
        g_star = np.asarray(reference.gradient, float)
        record.update(at_equal_cost(record, evaluations, draw_seconds))
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


def _reference(
    task: Task,
    batch_size: int,
    cells: Sequence[Cell],
    path: str | os.PathLike[str] | None,
    attrs: dict[str, Any],
    options: dict[str, Any],
) -> Reference:
    """The reference of the cells at ``batch_size``: from the cache beside ``path`` when it is
    this experiment's and intact, else computed (with torch's global generator seeded, like a
    cell's) and cached."""
    # Kept beside the results, so that a resumed sweep does not recompute minutes of RLOO
    # draws; tagged with the experiment and a digest, so a stale or edited one is never used.
    identity = json.dumps([attrs["experiment"], batch_size])
    cache = None if path is None else Path(f"{path}.references") / f"batch-{batch_size}.npz"
    if cache is not None:
        reference, why = load_reference(cache, identity)
        if why is not None:
            warnings.warn(why, stacklevel=4)
        if reference is not None:
            return reference
    source = Cell("reference", None, None, batch_size, options["seed"])
    with source.seeded(task.device):
        reference = _new_reference(
            task, batch_size, cells, attrs, options, source.generator(task.device)
        )
    if cache is not None:
        save_reference(reference, cache, identity)
    return reference


def _new_reference(
    task: Task,
    batch_size: int,
    cells: Sequence[Cell],
    attrs: dict[str, Any],
    options: dict[str, Any],
    generator: torch.Generator,
) -> Reference:
    """Exact, of a given size, or ``auto``: sized from the cells' own resolution, and said."""
    if task.enumerable(batch_size):
        return reference_gradient(task, batch_size)
    progress, size, k = options["progress"], options["reference_reps"], options["reference_k"]
    if size != "auto":
        return reference_gradient(
            task, batch_size, reps=size, k=k, generator=generator, progress=progress
        )
    finest, where = math.inf, "no cell applies"
    for cell in cells:
        if not_applicable(task, cell) is None:
            pilot = cell.generator(task.device, 1)
            with cell.seeded(task.device):
                estimator = adapt(
                    task,
                    E.get(cell.estimator, **cell.options()),
                    options["warmup"],
                    batch_size,
                    pilot,
                )
                found = resolution(task, estimator, batch_size, options["reps"], pilot)
            if found < finest:
                finest, where = found, f"{cell.estimator}{_hyper(cell)}"
    reference = reference_gradient(
        task,
        batch_size,
        k=k,
        generator=generator,
        progress=progress,
        noise_target=NOISE_FRACTION * finest if math.isfinite(finest) else None,
        cap=task.reference_reps,
    )
    sizing = Sizing(finest, where, reference.count, reference.noise, task.reference_reps)
    attrs["reference_sizing"] = (
        attrs.get("reference_sizing", "") + sizing.describe(batch_size) + "\n"
    )
    if progress:
        print(sizing.describe(batch_size), file=sys.stderr)
    return reference


def _hyper(cell: Cell) -> str:
    return "".join(f" {name}={value:g}" for name, value in cell.options().items())


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool whose workers start fresh (spawn): safe with torch's threads and CUDA."""
    return cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


# Attributes that must agree for a stored file to be resumed: the same experiment.
IDENTITY = (
    "task",
    "task_config",
    "reps",
    "reference",
    "threads_per_cell",
    "warmup",
    "seed",
    "draw_mode",
)


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
            task and references are sent to its workers once, cells lost with a worker
            are rerun), or any ``concurrent.futures.Executor``.
        progress: show a progress bar with an ETA.
        threads_per_cell: torch intra-op threads inside a cell, fixed so that results do not
            depend on the executor.
        reference_reps, reference_k: size of the RLOO reference when the task cannot enumerate:
            a number of draws, or ``"auto"`` (the default): drawn until its noise V_ref/N_ref
            is at most a tenth of the smallest bias² a cell can resolve (measured by a short
            pilot of each cell), at most the task's ``reference_reps``; the choice is printed
            and kept in the ``reference_sizing`` attribute.
        device: run the task there (e.g. ``"cuda"``): draws and their reduction stay on the
            device, only metrics come back. Default: where the task is (the CPU).
        warmup: steps an estimator with state (REINFORCE's baseline, REBAR's η and λ,
            RELAX's network) adapts by its own update rule at the fixed parameters, each on
            16 draws, before it is frozen and measured (the cell stores them and the adapted
            state).
        max_warmup_seconds: the longest the adaptation of all cells may take, estimated
            before any work from a few timed steps; a longer plan is refused in one line that
            gives its time (it changes no number).

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
    if reference_reps is None or (isinstance(reference_reps, str) and reference_reps == "auto"):
        reference_reps = "auto"
    else:
        reference_reps = check_count(reference_reps, "reference_reps", 2)
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
    warmup = check_count(warmup, "warmup", 0)
    if not (isinstance(max_warmup_seconds, int | float) and max_warmup_seconds > 0):
        raise ValueError(f"max_warmup_seconds must be a number > 0, got {max_warmup_seconds!r}")
    attrs = {
        "title": f"gvbench sweep of the {task.name} task",
        "Conventions": "CF-1.8",
        "task": task.name,
        "task_config": json.dumps(task.config(), sort_keys=True),
        "reps": reps,
        "reference": "exact where the task enumerates, else "
        f"rloo(k={reference_k}, reps={reference_reps})",
        "threads_per_cell": threads_per_cell,
        "warmup": warmup,
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
            (names, taus, ks, batch_sizes, seeds),
            squeeze_seed=not isinstance(seed, Iterable),
            options={
                "reps": reps,
                "reference_reps": reference_reps,
                "reference_k": reference_k,
                "seed": seeds[0],
                "threads": threads_per_cell,
                "warmup": warmup,
                "max_warmup_seconds": float(max_warmup_seconds),
                "executor": executor,
                "progress": progress,
            },
        )


def _plain(value: Any) -> Any:
    """A netCDF attribute as Python shows it (``0``, not ``np.int64(0)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _sweep_locked(
    task: Task,
    path: str | os.PathLike[str] | None,
    lock: PathLock | None,
    attrs: dict[str, Any],
    coords: dict[str, list[Any]],
    grid: tuple[list[str], list[float], list[int], list[int], list[int]],
    squeeze_seed: bool,
    options: dict[str, Any],
) -> xr.Dataset:
    names, taus, ks, batch_sizes, seeds = grid
    reps, executor, progress = options["reps"], options["executor"], options["progress"]
    records: dict[store.CellKey, dict[str, Any]] = {}
    if path is not None and Path(path).exists():
        stored = store.read(path, verify=False)
        if "task" not in stored.attrs or "status" not in stored:
            raise store.ResultsFileError(
                f"{path} is a netCDF file but not a gvbench sweep; it was left as it is: "
                "choose another path"
            )
        for key in IDENTITY:
            if key == "draw_mode":  # adopted below when the task leaves it to gvbench
                continue
            if str(stored.attrs.get(key)) != str(attrs[key]):
                raise ValueError(
                    f"{path} holds a different experiment ({key}: "
                    f"{_plain(stored.attrs.get(key))!r} vs {_plain(attrs[key])!r}); choose "
                    "another path"
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
        chosen = stored.attrs.get("draw_mode", "batched")  # the only mode before it was stored
        if task.draw_mode == "auto":
            task.set_draw_mode(str(chosen))  # the mode its finished cells were drawn in
        elif task.draw_mode != chosen:
            raise ValueError(
                f"{path} was drawn in {chosen} mode and this task is set to {task.draw_mode} "
                "(batched=…): the draws would differ; choose another path"
            )
    if task.draw_mode == "auto":
        # Once per task, in the driver: every cell, on any executor, draws the same way.
        task.calibrate(E.get("st_gumbel_softmax"), max(batch_sizes))
        if progress:
            for note in getattr(task, "notes", []):
                print(note, file=sys.stderr)
    attrs["draw_mode"] = task.draw_mode
    attrs["experiment"] = store.experiment_digest({key: attrs[key] for key in IDENTITY})

    table = {name: E.info(name) for name in coords["estimator"]}
    estimator_coords = {
        "label": [table[n].label for n in coords["estimator"]],
        "unbiased": [table[n].unbiased for n in coords["estimator"]],
        "uses_tau": ["tau" in table[n].hyper for n in coords["estimator"]],
        "uses_k": ["k" in table[n].hyper for n in coords["estimator"]],
    }

    def dataset() -> xr.Dataset:
        ds = store.build_dataset(records, coords, estimator_coords, attrs)
        return ds.squeeze("seed", drop=True) if squeeze_seed else ds

    plan = plan_cells(names, taus, ks, batch_sizes, seeds)
    todo = {
        cell: keys
        for cell, keys in plan.items()
        if not all(key in records and store.is_finished(records[key]["status"]) for key in keys)
    }
    _check_warmup_time(task, [c for c in todo if not_applicable(task, c) is None], options)
    references = {
        b: _reference(task, b, [c for c in todo if c.batch_size == b], path, attrs, options)
        for b in sorted({cell.batch_size for cell in todo})
    }
    # The task (model weights, data) and the references travel to each worker once.
    shared_task = engine.share(executor, task)
    shared = {b: engine.share(executor, reference) for b, reference in references.items()}
    jobs = [
        (
            cell,
            (
                shared_task,
                cell,
                reps,
                shared[cell.batch_size],
                options["threads"],
                options["warmup"],
            ),
        )
        for cell in todo
    ]
    if not jobs and path is not None:  # said with or without progress bars
        print(f"all {len(plan)} cells already in {path}; nothing to compute", file=sys.stderr)
    failures = []
    noted: set[str] = set()
    written = journaled = False
    bar = tqdm(
        total=len(jobs), disable=not progress or not jobs, unit="cell", desc=f"{task.name} sweep"
    )
    try:
        with bar:
            for cell, record in engine.run(run_cell, jobs, executor):
                for note in record.pop("notes", []):
                    if note not in noted:  # said once, in the driver, wherever the cell ran
                        noted.add(note)
                        warnings.warn(note, stacklevel=3)
                record = store.sealed(record)
                for key in todo[cell]:
                    records[key] = record
                if path is not None and not written:
                    # The whole grid when the first cell lands (a sweep of one cell writes
                    # once); then one journal file per cell (the driver's cost per cell does
                    # not grow with the grid), consolidated at the end.
                    store.write_atomic(dataset(), path)
                    journal.clear(path)
                    written = True
                elif path is not None:
                    journal.write(path, todo[cell], record, attrs["experiment"])
                    journaled = True
                if record["status"].startswith("failed"):
                    failures.append(f"{cell}: {record['status']}")
                if lock is not None:
                    lock.refresh()
                bar.set_postfix_str(f"{cell.estimator} τ={cell.tau} K={cell.k} B={cell.batch_size}")
                bar.update()
    finally:  # finished cells reach the file even on Ctrl-C or an error
        if path is not None and journaled:
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
