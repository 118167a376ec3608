"""What a study contributes to ``gvbench leaderboard``: one column per task, as data.

A study (:class:`~gvbench.study.Study`) returns its columns at a leaderboard preset from
:meth:`~gvbench.study.Study.leaderboard`; the leaderboard knows no task and reads only these
types. A column measures every applicable estimator twice, at matched budgets:

- **gradient quality**: a harness sweep of the task at a fixed checkpoint
  (:class:`GradientCheck`), giving variance, bias² (exact where the task has its exact
  gradient), MSE and cosine, per evaluation and per second, each with its SE;
- **training outcome**: each estimator's own learning rate (and τ) from a random search of
  the same size for every estimator, then ``seeds`` runs of the preset's steps
  (:class:`TrainingProtocol`); its outcome is a test figure, mean ± SE over seeds.

A column may have either part alone (the paper's toy trains nothing). Directions the field's
papers state on the task are :class:`DirectionClaim` s, decided with SEs in the report.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gvbench.tasks import Task
from gvbench.training import RunConfig, Train

if TYPE_CHECKING:
    from gvbench.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class ColumnFolder:
    """Where a column's measurement keeps its files: ``OUT/columns/NAME`` of the leaderboard's
    folder and nothing outside it, so that two leaderboards (or one run from another working
    directory) share no file and no experiment's own results folder is written.

    Attributes:
        sweep: the gradient check's sweep (resumed cell by cell).
        checkpoints: the checkpoint a gradient check's task trains on first use, and its run.
        search, runs: the training protocol's random searches and final runs.
    """

    sweep: Path
    checkpoints: Path
    search: Path
    runs: Path

    @classmethod
    def under(cls, out: Path, column: str) -> ColumnFolder:
        """The folder of the column named ``column`` in the leaderboard's folder ``out``."""
        path = out / "columns" / column
        return cls(path / "gradients.nc", path / "checkpoints", path / "search", path / "runs")


@dataclasses.dataclass(frozen=True)
class GradientCheck:
    """A harness sweep of one task at fixed parameters.

    Attributes:
        task: makes the task (picklable: a module-level function or a ``functools.partial``
            of one, e.g. an experiment's :meth:`~gvbench.experiment.Experiment.task` with its
            options); called once per leaderboard run (:meth:`make`), so a checkpoint trains
            once.
        batch_size: the examples per gradient draw (B).
        reps: gradient draws per estimator (N).
        tau: the temperature of every estimator that takes one.
        k: the K of every estimator that takes one (samples, or evaluations: RLOO with K = 2
            spends two), where the column's ``options`` give none.
        reference_reps: draws of a sampled reference where the task has no exact gradient.
        warmup: steps a stateful estimator (REINFORCE's baseline, REBAR's η) adapts at the
            checkpoint before it is measured; ``None``: the harness's default.

    A ``task`` that takes ``checkpoint_dir`` (an experiment's task: the folder where it
    caches a checkpoint it trains on first use) is given one in the column's folder; any
    other (the toy, a user's plain task class) is called with no argument.
    """

    task: Callable[..., Task]
    batch_size: int
    reps: int
    tau: float = 1.0
    k: int = 2
    reference_reps: int | Literal["auto"] = "auto"
    warmup: int | None = None

    def make(self, folder: ColumnFolder) -> Task:
        """The task, with any checkpoint it trains cached in ``folder`` (trained once per
        folder: the same run, seed and steps wherever it is cached)."""
        if _takes(self.task, "checkpoint_dir"):
            return self.task(checkpoint_dir=str(folder.checkpoints))
        return self.task()


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` accepts the keyword ``name`` (by name or through ``**options``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature to read: pass nothing
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


@dataclasses.dataclass(frozen=True)
class TrainingProtocol:
    """How every estimator is trained on the task, at its own tuned settings.

    Attributes:
        train: the experiment's :meth:`~gvbench.experiment.Experiment.train`.
        base: the run every estimator trains from (its ``estimator`` field replaced, its
            ``lr``, ``momentum`` and ``tau`` set by the search); its ``steps`` are the
            training's.
        seeds: final runs per estimator (seeds ``base.seed …``), the outcome's mean ± SE.
        trials: random-search trials per estimator, the same for every estimator.
        search_steps: the steps of a search trial.
        lr, momentum, tau: the search's ranges (log-uniform, uniform, log-uniform); ``None``
            keeps the base's value (an Adam run searches no momentum).
        selection: the validation figure trials are chosen on (a key of the curves' attrs).
        selection_higher_is_better: its direction.
        outcome: the test figure reported (a key of the curves' attrs), e.g. ``test_bound``.
        outcome_higher_is_better: its direction.
        outcome_units: its units, for the table's header.
        curve: the validation curve the training figure draws (a variable of the runs'
            curves), where the selection is a figure computed once at the end (a bound
            with many importance samples); ``None``: the selection's own curve.
    """

    train: Train[Any]
    base: RunConfig
    seeds: int
    trials: int
    search_steps: int
    lr: tuple[float, float]
    momentum: tuple[float, float] | None
    tau: tuple[float, float] | None
    selection: str
    selection_higher_is_better: bool
    outcome: str
    outcome_higher_is_better: bool
    outcome_units: str = "1"
    curve: str | None = None

    @classmethod
    def tuned_on_validation(
        cls,
        experiment: Experiment[Any],
        base: RunConfig,
        *,
        seeds: int,
        trials: int,
        search_steps: int,
        lr: tuple[float, float],
        tau: tuple[float, float] | None,
        outcome: str,
        outcome_units: str = "1",
    ) -> TrainingProtocol:
        """The protocol of an experiment whose momentum is not searched (an Adam run has none,
        an SGD run keeps its base's), whose trials
        are chosen on the best of its own validation figure over a run
        (``best_`` + :attr:`~gvbench.experiment.Experiment.selection`), and whose ``outcome``
        (its test figure, or the same figure where it has no noise) is better in the same
        direction."""
        return cls(
            train=experiment.train,
            base=base,
            seeds=seeds,
            trials=trials,
            search_steps=search_steps,
            lr=lr,
            momentum=None,
            tau=tau,
            selection=f"best_{experiment.selection}",
            selection_higher_is_better=experiment.higher_is_better,
            outcome=outcome,
            outcome_higher_is_better=experiment.higher_is_better,
            outcome_units=outcome_units,
        )


@dataclasses.dataclass(frozen=True)
class DirectionClaim:
    """A direction a paper states on this task: ``better`` beats ``worse`` on ``measure``.

    Attributes:
        better, worse: registered estimator names.
        measure: ``"variance"``, ``"mse"`` or ``"bias2"`` (gradient quality, lower is
            better, per evaluation: at matched cost), or ``"outcome"`` (the training
            outcome, in its own direction).
        source: where it is stated (paper, table or figure).
    """

    better: str
    worse: str
    measure: Literal["variance", "mse", "bias2", "outcome"]
    source: str


@dataclasses.dataclass(frozen=True)
class Column:
    """One task of the leaderboard.

    Attributes:
        name: the column's name (unique over every study's columns; a folder name).
        title: its heading in the table.
        protocol: where the task's protocol comes from (a citation, one line).
        gradients: its gradient-quality sweep, or ``None``.
        training: its training protocol, or ``None``.
        claims: the directions its papers state.
        options: estimator name → options of that estimator on this task (e.g. K), where
            they differ from the estimator's defaults.
    """

    name: str
    title: str
    protocol: str
    gradients: GradientCheck | None = None
    training: TrainingProtocol | None = None
    claims: tuple[DirectionClaim, ...] = ()
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
