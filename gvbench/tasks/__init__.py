"""Tasks: the experiments the harness measures, all behind one protocol (:class:`Task`).

A new task is one subclass of :class:`Task` and one line in ``TASKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gvbench.tasks.base import Parameters, Task
from gvbench.tasks.module import ModuleTask
from gvbench.tasks.toy import Toy

# Name → a class or factory taking the task's configuration as keywords.
TASKS: dict[str, Callable[..., Task]] = {"toy": Toy}


def _register_experiments() -> None:
    # Imported here: the experiment packages build on gvbench.tasks.base themselves.
    from gvbench.listops.task import listops
    from gvbench.vae.task import vae

    TASKS["listops"] = listops
    TASKS["vae"] = vae


_register_experiments()


def available() -> dict[str, Callable[..., Task]]:
    """Task constructors by name."""
    return dict(TASKS)


def get(name: str, **config: Any) -> Task:
    """The task ``name`` built with ``config`` (its constructor's keywords)."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None
    return cls(**config)


__all__ = ["TASKS", "ModuleTask", "Parameters", "Task", "Toy", "available", "get"]
