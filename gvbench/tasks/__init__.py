"""Tasks: the experiments the harness measures, all behind one protocol (:class:`Task`).

A new task is one subclass of :class:`Task` (or a factory returning a
:class:`ModuleTask`) and one line in ``TASKS`` (a module given to ``gvbench --import``
does that), or an entry point of a package's ``pyproject.toml``: in the ``gvbench.tasks``
group, or an experiment in the ``gvbench.experiments`` group, whose ``task`` factory is
a task of its entry point's name. gvbench's own experiments (ListOps, the VAE) register
that way, as a user's package would, so nothing here imports an experiment.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from gvbench import plugins
from gvbench.tasks.base import Parameters, Task
from gvbench.tasks.module import ModuleTask
from gvbench.tasks.subset_toy import SubsetToy
from gvbench.tasks.toy import Toy

TaskFactory = Callable[..., Task]

# Name → a class or factory taking the task's configuration as keywords: the built-in tasks
# and those of modules that are not packaged. Installed plugins are not written here.
TASKS: dict[str, TaskFactory] = {"toy": Toy, "subset_toy": SubsetToy}

# Plugin tasks already said to be left out, so each is said once per process.
_refused: set[tuple[str, str]] = set()


def _installed() -> dict[str, tuple[TaskFactory, str]]:
    """The installed packages' tasks by name, with the entry point that gives each: those of
    ``gvbench.tasks``, then each experiment's ``task`` (an experiment without one is not a
    task)."""
    tasks = {
        name: (value, f"task {name!r}") for name, value in plugins.found(plugins.TASKS).items()
    }
    for name, experiment in plugins.found(plugins.EXPERIMENTS).items():
        factory = getattr(experiment, "task", None)
        if callable(factory) and name not in tasks:
            tasks[name] = (factory, f"experiment {name!r}")
    return tasks


def available() -> dict[str, TaskFactory]:
    """Task constructors by name: ``TASKS``, then those of installed packages.

    A plugin task whose name is already a task's is left out with a warning (the built-in
    keeps its name), once per process.
    """
    table = dict(TASKS)
    for name, (factory, what) in _installed().items():
        if name in table and table[name] is not factory:
            if (name, what) not in _refused:
                _refused.add((name, what))
                warnings.warn(
                    f"gvbench plugin {what} ({_origin(factory)}) is not used: {name!r} is "
                    "already a task; register it under another name",
                    stacklevel=2,
                )
            continue
        table[name] = factory
    return table


def _origin(factory: TaskFactory) -> str:
    """Where a plugin's factory is defined, as its entry point names it (``module:name``)."""
    module = getattr(factory, "__module__", None) or "?"
    return f"{module}:{getattr(factory, '__qualname__', type(factory).__name__)}"


def get(name: str, **config: Any) -> Task:
    """The task ``name`` built with ``config`` (its constructor's keywords)."""
    table = available()
    try:
        factory = table[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(table))}") from None
    return factory(**config)


__all__ = [
    "TASKS",
    "ModuleTask",
    "Parameters",
    "SubsetToy",
    "Task",
    "TaskFactory",
    "Toy",
    "available",
    "get",
]
