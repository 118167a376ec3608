"""Training outcome of a column: each estimator tuned by a random search of the same size,
then trained over seeds at its chosen settings, as the paper tunes each estimator.

For every estimator the protocol's :func:`~gvbench.training.random_searches` (``trials``
trials of ``search_steps`` steps, its lr, momentum and τ ranges) chooses on the protocol's
validation figure, never on the test figure; then ``seeds`` runs of ``base.steps`` train at
the chosen settings, and the outcome is the protocol's test figure, mean ± SE over seeds.
Every run checkpoints in the leaderboard's folder, so a rerun resumes and trains nothing
that is done. The cost of a step is timed when the final runs train (written beside them,
read back on a rerun) and the objective's evaluations per step are the estimator's own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gvbench.atomic_files import write_bytes
from gvbench.leaderboard.column import Column, ColumnFolder, TrainingProtocol
from gvbench.leaderboard.measures import Entry, entry
from gvbench.report.claims import Estimate
from gvbench.training import RunConfig, Train, TrainingDiverged, random_searches
from gvbench.training.grid import train_many

COST_FILE = "cost.json"
# What a column's training gives each estimator (see :mod:`gvbench.leaderboard.measures`).
TRAINING_MEASURES = ("outcome", "seconds_per_step", "evaluations_per_step", "lr", "tau")


@dataclasses.dataclass(frozen=True)
class TimedTrain:
    """An experiment's ``train``, timed: a group trained from scratch in one call writes its
    wall time per step and run to ``cost.json`` in each run's folder, its validation and test
    evaluations included (a group resumed from a checkpoint is not timed: part of its steps
    ran elsewhere). Picklable, like ``train``."""

    train: Train[Any]

    def __call__(
        self,
        configs: Sequence[RunConfig],
        out_dir: str | os.PathLike[str],
        progress: bool = False,
        final_checkpoints: Any = None,
    ) -> list[Any]:
        folders = [Path(out_dir) / config.name() for config in configs]
        fresh = not any(folder.exists() for folder in folders)
        start = time.perf_counter()
        results = self.train(
            list(configs), out_dir=out_dir, progress=progress, final_checkpoints=final_checkpoints
        )
        seconds = time.perf_counter() - start
        if fresh:
            per_step = seconds / (configs[0].steps * len(configs))
            for folder, result in zip(folders, results, strict=True):
                if not isinstance(result, TrainingDiverged):
                    cost = {"seconds_per_step": per_step, "runs_as_one": len(configs)}
                    write_bytes(json.dumps(cost).encode(), folder / COST_FILE)
        return results


@dataclasses.dataclass(frozen=True)
class Trained:
    """A column's training: the long table's rows (an estimator that was not trained has
    its reason as their note) and each trained estimator's validation curves over seeds
    (``step × seed``)."""

    rows: list[Entry]
    curves: dict[str, xr.DataArray]


def base_of(column: Column, estimator: str) -> RunConfig:
    """The protocol's base run for ``estimator``, its K the column's option for it, else the
    gradient check's (the K its gradients were measured at), else the base's; a
    ``ValueError`` saying why where the experiment cannot train it."""
    protocol = _protocol(column)
    k = column.gradients.k if column.gradients is not None else protocol.base.k
    k = column.options.get(estimator, {}).get("k", k)
    return dataclasses.replace(protocol.base, estimator=estimator, k=k)


def train_column(
    column: Column,
    estimators: Sequence[str],
    folder: ColumnFolder,
    evaluations: dict[str, float],
    *,
    seed: int = 0,
    executor: Any = None,
    progress: bool = True,
) -> Trained:
    """Search, then train ``estimators`` (those the protocol can train) into ``folder``'s
    search and runs.

    Args:
        evaluations: objective evaluations per draw of each estimator (from the column's
            sweep, where it has one): a training step is one draw.
    """
    protocol = _protocol(column)
    bases, searches = {}, {}
    for name in estimators:
        try:
            bases[name] = base_of(column, name)
        except ValueError as error:  # the experiment cannot train it: the reason it gives
            searches[name] = f"not applicable: {error}"
    searches |= _searches(protocol, bases, folder.search, seed, executor, progress)
    finals: dict[str, list[RunConfig]] = {}
    for name, found in searches.items():
        if not isinstance(found, str):
            chosen = json.loads(found.attrs["best_config"])
            tuned = {key: chosen[key] for key in ("lr", "momentum", "tau")}
            base = dataclasses.replace(bases[name], **tuned)
            finals[name] = [
                dataclasses.replace(base, seed=base.seed + offset)
                for offset in range(protocol.seeds)
            ]
    configs = [config for runs in finals.values() for config in runs]
    runs = folder.runs
    results = train_many(
        TimedTrain(protocol.train), configs, runs, executor, progress=progress, desc="final runs"
    )
    attrs = dict(zip((c.name() for c in configs), results, strict=True))
    rows, curves = [], {}
    for name in estimators:
        found = searches[name]
        if isinstance(found, str):
            rows += [entry(column.name, name, measure, note=found) for measure in TRAINING_MEASURES]
            continue
        outcome = _outcome(protocol, [attrs[c.name()] for c in finals[name]])
        diverged = sum("diverged" in attrs[c.name()] for c in finals[name])
        note = f"diverged: {diverged} of {protocol.seeds} seeds" if diverged else ""
        rows.append(
            entry(column.name, name, "outcome", outcome.value, outcome.se, outcome.n, "seeds", note)
        )
        rows += _settings(column.name, name, finals[name][0], runs, evaluations.get(name))
        curves[name] = _curves(protocol, runs, finals[name])
    return Trained(rows, curves)


def _searches(
    protocol: TrainingProtocol,
    bases: dict[str, RunConfig],
    folder: Path,
    seed: int,
    executor: Any,
    progress: bool,
) -> dict[str, xr.Dataset | str]:
    """Each estimator's search, or why it has none (every trial diverged)."""
    if not bases:
        return {}
    trial = {
        name: dataclasses.replace(base, steps=protocol.search_steps, variance_every=0)
        for name, base in bases.items()
    }
    search = functools.partial(
        random_searches,
        protocol.train,
        trials=protocol.trials,
        lr=protocol.lr,
        momentum=protocol.momentum,
        tau=protocol.tau,
        selection=protocol.selection,
        higher_is_better=protocol.selection_higher_is_better,
        out_dir=folder,
        seed=seed,
        executor=executor,
        progress=progress,
    )
    try:
        return dict(zip(trial, search(list(trial.values())), strict=True))
    except TrainingDiverged:
        # Some estimator's trials all diverged: each is chosen alone, reading the trials just
        # trained back from disk, so that one estimator's failure is its own row's note.
        return {name: _search_alone(search, base) for name, base in trial.items()}


def _search_alone(
    search: Callable[[list[RunConfig]], list[xr.Dataset]], base: RunConfig
) -> xr.Dataset | str:
    """One estimator's search, or why it has none."""
    try:
        (found,) = search([base])
        return found
    except TrainingDiverged as error:
        return f"diverged: {error}"


def _outcome(protocol: TrainingProtocol, attrs: Sequence[dict[str, Any]]) -> Estimate:
    values = np.array([float(a.get(protocol.outcome, np.nan)) for a in attrs])
    return Estimate.over_seeds(xr.DataArray(values, dims="seed"))


def _settings(
    column: str, name: str, config: RunConfig, runs: Path, evaluations: float | None
) -> list[Entry]:
    """The chosen lr and τ, and the cost of a step (timed when the runs trained)."""
    cost_file = runs / config.name() / COST_FILE
    seconds, note = math.nan, "not timed: its runs resumed from a checkpoint"
    if cost_file.is_file():
        seconds, note = json.loads(cost_file.read_text())["seconds_per_step"], ""
    evaluations = math.nan if evaluations is None else evaluations
    return [
        entry(column, name, "seconds_per_step", seconds, note=note),
        entry(
            column,
            name,
            "evaluations_per_step",
            evaluations,
            note="" if math.isfinite(evaluations) else "no gradient check to count them",
        ),
        entry(column, name, "lr", config.lr),
        entry(
            column,
            name,
            "tau",
            config.tau if "tau" in config.estimator_options() else math.nan,
            note="" if "tau" in config.estimator_options() else "takes no τ",
        ),
    ]


def curve_name(protocol: TrainingProtocol) -> str:
    """The curves' variable of the validation figure: the protocol's ``curve``, else its
    selection figure (an experiment's curves hold it by name, and their attrs its best as
    ``best_NAME``)."""
    if protocol.curve is not None:
        return protocol.curve
    return protocol.selection.removeprefix("best_")


def _curves(protocol: TrainingProtocol, runs: Path, configs: Sequence[RunConfig]) -> xr.DataArray:
    """The validation curve of each seed (``step × seed``; NaN where one diverged)."""
    seeds = []
    name = curve_name(protocol)
    for config in configs:
        path = runs / config.name() / "curves.nc"
        if path.is_file():
            curves = xr.load_dataset(path)
            if name in curves:
                seeds.append(curves[name])
    if not seeds:
        return xr.DataArray(np.empty((0, 0)), dims=("step", "seed"))
    return xr.concat(seeds, dim="seed", join="outer")


def _protocol(column: Column) -> TrainingProtocol:
    if column.training is None:
        raise ValueError(f"column {column.name} has no training protocol")
    return column.training
