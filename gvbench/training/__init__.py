"""Training: an experiment's runs, many trained as one, with checkpoints, curves, grids and
random search.

A run is a :class:`RunConfig` (an experiment subclasses it with its own fields). Runs that
differ only in seed, learning rate, momentum and τ or its schedule (:func:`group_key`) train
as one loop, :func:`fit_runs`, and a run's numbers are those it would have alone, bit for bit.
The modules:

- :mod:`~gvbench.training.config`: :class:`RunConfig`, which runs train as one, and
  :class:`Train`, the signature of an experiment's ``train``;
- :mod:`~gvbench.training.runs`: a :class:`Run`, what a group shares (:class:`Steps`) and a
  run's state between steps (its :class:`RunProgress`);
- :mod:`~gvbench.training.loop`: :func:`fit_runs`, the loop;
- :mod:`~gvbench.training.stacked`: one step of many runs at once, their models stacked
  (``torch.func.stack_module_state``) under ``vmap``;
- :mod:`~gvbench.training.optimizers`: a run's :class:`Optimizer`, update rules
  (:class:`SGD`, :class:`Adam`) by parameter-name prefix after clipping its gradient;
- :mod:`~gvbench.training.sgd`, :mod:`~gvbench.training.adam`: the two rules' steps, each run
  by its own gradient;
- :mod:`~gvbench.training.evaluation`: the runs' validation scores, in one vmapped pass;
- :mod:`~gvbench.training.checkpoints`: atomic checkpoints with digests, a finished run's
  curves and best parameters;
- :mod:`~gvbench.training.grid`: many configurations on an executor, gathered over a grid;
- :mod:`~gvbench.training.search`: random search over lr, momentum and τ;
- :mod:`~gvbench.training.temperature`: :class:`TemperatureSchedule`, τ by training step
  (constant, exponential or linear annealing, or a function), ``--tau-schedule``.
"""

from gvbench.training.checkpoints import (
    CheckpointError,
    cached_checkpoint,
    checkpoint_digest,
    curves_dataset,
    finish_run,
    read_checkpoint,
    read_parameters,
)
from gvbench.training.config import RunConfig, Train, check_one_group, group_key, option
from gvbench.training.grid import train_grid, train_many
from gvbench.training.loop import fit_runs, per_run_state, vectorised
from gvbench.training.optimizers import SGD, Adam, Optimizer, OptimizerState
from gvbench.training.runs import Run, RunProgress, Steps, TrainingDiverged
from gvbench.training.search import random_search, random_searches
from gvbench.training.temperature import TemperatureSchedule

__all__ = [
    "SGD",
    "Adam",
    "CheckpointError",
    "Optimizer",
    "OptimizerState",
    "Run",
    "RunConfig",
    "RunProgress",
    "Steps",
    "TemperatureSchedule",
    "Train",
    "TrainingDiverged",
    "cached_checkpoint",
    "check_one_group",
    "checkpoint_digest",
    "curves_dataset",
    "finish_run",
    "fit_runs",
    "group_key",
    "option",
    "per_run_state",
    "random_search",
    "random_searches",
    "read_checkpoint",
    "read_parameters",
    "train_grid",
    "train_many",
    "vectorised",
]
