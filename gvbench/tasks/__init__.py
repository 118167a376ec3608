"""Tasks: the experiments the harness measures, all behind one protocol (:class:`Task`).

A new task is one subclass of :class:`Task` (or a factory returning a
:class:`ModuleTask`) and one line in ``TASKS``, or an entry point in the
``gvbench.tasks`` group of a package's ``pyproject.toml``. gvbench's own experiments
(ListOps, the VAE) register that way, as a user's package would, so nothing here imports
an experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gvbench import plugins
from gvbench.tasks.base import Parameters, Task
from gvbench.tasks.module import ModuleTask
from gvbench.tasks.toy import Toy

# Name → a class or factory taking the task's configuration as keywords.
TASKS: dict[str, Callable[..., Task]] = {"toy": Toy}


def available() -> dict[str, Callable[..., Task]]:
    """Task constructors by name (the built-in ones and those of installed packages)."""
    plugins.load()
    return dict(TASKS)


def get(name: str, **config: Any) -> Task:
    """The task ``name`` built with ``config`` (its constructor's keywords)."""
    plugins.load()
    try:
        cls = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None
    return cls(**config)


__all__ = ["TASKS", "ModuleTask", "Parameters", "Task", "Toy", "available", "get"]
