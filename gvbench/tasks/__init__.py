"""Tasks: the experiments the harness measures, all behind one protocol (:class:`Task`).

A new task is one subclass of :class:`Task` and one line in ``TASKS``.
"""

from __future__ import annotations

from typing import Any

from gvbench.tasks.base import Parameters, Task
from gvbench.tasks.toy import Toy

TASKS: dict[str, type[Task]] = {"toy": Toy}


def available() -> dict[str, type[Task]]:
    """Task classes by name."""
    return dict(TASKS)


def get(name: str, **config: Any) -> Task:
    """The task ``name`` built with ``config`` (its constructor's keywords)."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None
    return cls(**config)


__all__ = ["TASKS", "Parameters", "Task", "Toy", "available", "get"]
