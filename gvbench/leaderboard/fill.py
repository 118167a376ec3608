"""``gvbench leaderboard``: every registered estimator on every registered study's columns,
at matched budgets, into one folder of CSV tables, figures, claims and an HTML page.

Per column (:mod:`gvbench.leaderboard.column`): its gradient check's sweep
(:mod:`~gvbench.leaderboard.gradients`) and its training protocol's search and final runs
(:mod:`~gvbench.leaderboard.training`), both resumable from the folder; then each table's
resolved best (:mod:`~gvbench.leaderboard.ranking`) and the columns' claims
(:mod:`~gvbench.leaderboard.claims`). A rerun of a finished leaderboard computes nothing and
writes the same tables.

Layout of ``out`` (default ``results/leaderboard/PRESET``)::

    MEASURE.csv             one per measure: rows estimators, columns tasks (value, SE, …)
    entries.csv             the same numbers as one long table, a row per (column,
                            estimator, measure), with the mark each got
    claims.csv, claims.json the columns' claims and their verdicts
    index.html, report.css  the page
    figures/                per column: NAME-frontier.{png,pdf}, NAME-training.{png,pdf}
    columns/NAME/           gradients.nc (the sweep), checkpoints/ (the one its task trains),
                            search/ and runs/ (the training)

Nothing is written outside ``out`` (see :class:`~gvbench.leaderboard.column.ColumnFolder`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gvbench import provenance
from gvbench.atomic_files import write_bytes
from gvbench.leaderboard import figures as drawing
from gvbench.leaderboard import page, rows, tables
from gvbench.leaderboard.claims import decide
from gvbench.leaderboard.column import Column, ColumnFolder
from gvbench.leaderboard.gradients import gradient_entries, gradient_sweep
from gvbench.leaderboard.measures import Entry, entries, entry
from gvbench.leaderboard.page import PageFigure
from gvbench.leaderboard.presets import PRESETS
from gvbench.leaderboard.ranking import marks
from gvbench.leaderboard.training import TRAINING_MEASURES, curve_name, train_column
from gvbench.plots import save_figure
from gvbench.report.claims import Claim
from gvbench.tasks import Task


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    """What :func:`fill` wrote: the page, the tables by measure, the long table with marks,
    the claims, and a line per study without a column."""

    page: Path
    tables: dict[str, Path]
    entries: pd.DataFrame
    claims: list[Claim]
    without: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Measured:
    """A column's rows of the long table and the figures drawn of it."""

    entries: list[Entry]
    figures: list[PageFigure]


def fill(
    preset: str,
    out: str | os.PathLike[str] | None = None,
    *,
    estimators: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    seed: int = 0,
    executor: Any = None,
    progress: bool = True,
) -> Leaderboard:
    """Fill the leaderboard at ``preset`` into ``out`` (resumable).

    Args:
        preset: ``tiny``, ``cpu`` or ``paper``, passed to each study's
            :meth:`~gvbench.study.Study.leaderboard`.
        estimators: the rows (default: the preset's list, else the registry's default set for
            each column's variable).
        columns: the columns, by name (default: every column at the preset).
        seed: the sweeps' master seed and the searches' seed.
        executor: where cells and runs go (see :mod:`gvbench.engine`).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    chosen = estimators if estimators is not None else PRESETS[preset].estimators
    found = rows.columns(preset, columns)
    cap = PRESETS[preset].warmup
    if cap is not None:
        found = dataclasses.replace(found, columns=tuple(_capped(c, cap) for c in found.columns))
    folder = Path(out) if out is not None else Path("results") / "leaderboard" / preset
    places = {c.name: ColumnFolder.under(folder, c.name) for c in found.columns}
    tasks = {
        c.name: c.gradients.make(places[c.name]) if c.gradients else None for c in found.columns
    }
    listed = [
        name for c in found.columns for name in rows.candidates(_variable(tasks[c.name]), chosen)
    ]
    listed = list(dict.fromkeys(listed))
    made, drawn = [], {}
    budget = PRESETS[preset].training_evaluations
    for column in found.columns:
        where, task = places[column.name], tasks[column.name]
        measured = _measure(
            column, task, listed, where, folder, seed, executor, progress, budget=budget
        )
        made += measured.entries
        drawn[column.name] = measured.figures
    # Every table lists its rows in one order: the estimators' as listed.
    table = entries(sorted(made, key=lambda row: listed.index(row.estimator)))
    higher = {
        c.name: bool(c.training and c.training.outcome_higher_is_better) for c in found.columns
    }
    table["mark"] = marks(table, higher)
    claims = decide(found.columns, table)
    names = [c.name for c in found.columns]
    wides = tables.wide_tables(table, names)
    written = tables.write_tables(wides, folder)
    write_bytes(table.to_csv(index=False).encode(), folder / "entries.csv")
    _write_claims(folder, claims)
    shown = {measure: tables.shown(data) for measure, data in wides.items()}
    facts = _facts(preset, seed, executor, found.without)
    index = page.write(folder, page.render(preset, found.columns, shown, claims, drawn, facts))
    return Leaderboard(index, written, table, claims, found.without)


def _capped(column: Column, warmup: int) -> Column:
    """``column`` whose gradient check adapts a stateful estimator at most ``warmup`` steps."""
    if column.gradients is None:
        return column
    own = column.gradients.warmup
    capped = warmup if own is None else min(own, warmup)
    return dataclasses.replace(
        column, gradients=dataclasses.replace(column.gradients, warmup=capped)
    )


def _variable(task: Task | None) -> str:
    # A column without a gradient check trains an experiment: its choices are categorical.
    return task.variable if task is not None else "categorical"


def _measure(
    column: Column,
    task: Task | None,
    listed: list[str],
    where: ColumnFolder,
    folder: Path,
    seed: int,
    executor: Any,
    progress: bool,
    *,
    budget: int | None = None,
) -> Measured:
    """A column's rows of the long table and its figures (into ``folder/figures``); an
    estimator whose evaluations per step exceed ``budget`` is measured, not trained."""
    made: list[Entry] = []
    drawn: list[PageFigure] = []
    evaluations: dict[str, float] = {}
    trainable = listed
    if column.gradients is not None and task is not None:
        ds = gradient_sweep(
            column, task, listed, where, seed=seed, executor=executor, progress=progress
        )
        made += gradient_entries(column, ds)
        evaluations = {r.estimator: r.value for r in made if r.measure == "evaluations"}
        figure = drawing.frontier_figure(ds, column.gradients.tau)
        if figure is not None:
            caption = (
                f"{column.title}: gradient variance against objective evaluations per draw at "
                f"B = {column.gradients.batch_size}, {column.gradients.reps} draws per point "
                "(bars: 95%); dashed: the Pareto front of the unbiased estimators."
            )
            drawn.append(_saved(figure, folder, f"{column.name}-frontier", caption))
        reasons = {name: rows.not_applicable(task, name) for name in listed}
        trainable = [name for name in listed if reasons[name] is None]
        if column.training is not None:  # what the task refuses is not trained
            made += [
                entry(column.name, name, measure, note=f"not applicable: {reason}")
                for name, reason in reasons.items()
                if reason is not None
                for measure in TRAINING_MEASURES
            ]
    if column.training is not None and budget is not None:
        costly = {n: evaluations[n] for n in trainable if evaluations.get(n, 0) > budget}
        trainable = [name for name in trainable if name not in costly]
        made += [
            entry(
                column.name,
                name,
                measure,
                note=f"not trained at this preset: {count:g} evaluations a step, over its "
                f"budget of {budget}",
            )
            for name, count in costly.items()
            for measure in TRAINING_MEASURES
        ]
    if column.training is not None:
        trained = train_column(
            column, trainable, where, evaluations, seed=seed, executor=executor, progress=progress
        )
        made += trained.rows
        figure = drawing.training_figure(trained.curves, curve_name(column.training), column.title)
        if figure is not None:
            caption = (
                f"{column.title}: the validation figure during training at each estimator's "
                f"tuned settings, {column.training.seeds} seeds."
            )
            drawn.append(_saved(figure, folder, f"{column.name}-training", caption))
    return Measured(made, drawn)


def _saved(figure: Any, folder: Path, name: str, caption: str) -> PageFigure:
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    png, pdf = save_figure(figure, folder / "figures" / name, ("png", "pdf"))
    return PageFigure(png, Path("figures") / pdf.name, caption)


def _write_claims(folder: Path, claims: Sequence[Claim]) -> None:
    records = [claim.record() for claim in claims]
    write_bytes(json.dumps(records, indent=1, ensure_ascii=False).encode(), folder / "claims.json")
    columns = ["experiment", "statement", "verdict", "evidence", "rule", "z"]
    frame = pd.DataFrame(records, columns=columns).rename(columns={"experiment": "column"})
    write_bytes(frame.to_csv(index=False).encode(), folder / "claims.csv")


def _facts(preset: str, seed: int, executor: Any, without: Sequence[str]) -> dict[str, str]:
    stamp = provenance.stamp()
    facts = {
        "preset": preset,
        "seed": str(seed),
        "executor": "in-process" if executor is None else type(executor).__name__,
        "git commit": stamp["git_commit"],
        "gvbench": stamp["gvbench_version"],
        "torch": stamp["torch_version"],
        "python": platform.python_version(),
        "created": stamp["created"],
    }
    for line in without:
        name, said = line.split(": ", 1)
        facts[f"study {name}"] = said
    return facts
