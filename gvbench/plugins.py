"""Estimators and tasks from other packages: Python entry points, or a module named on the CLI.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."gvbench.estimators"]
    my_estimators = "my_package.estimators"        # a module whose import @registers them

    [project.entry-points."gvbench.tasks"]
    my_task = "my_package.tasks:MyTask"            # a Task class or factory, by its name

and, once installed, its estimators and tasks are in ``gvbench list``, in sweeps
(``--estimators NAME``, ``gvbench sweep NAME``) and in the asv suite, as pytest and asv
discover their own plugins. ``gvbench --import MODULE …`` imports a module that is not
packaged (it registers estimators, or adds tasks to ``gvbench.tasks.TASKS``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings

ESTIMATORS = "gvbench.estimators"
TASKS = "gvbench.tasks"
_loaded = False


def load() -> None:
    """Import every installed plugin once (later calls do nothing).

    A plugin that fails to import is reported in a warning naming it, and skipped: one
    broken package must not stop gvbench.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    from gvbench.tasks import TASKS as task_table

    for group in (ESTIMATORS, TASKS):
        for entry in importlib.metadata.entry_points(group=group):
            try:
                value = entry.load()
            except Exception as error:  # a plugin's own failure, whatever it is
                warnings.warn(
                    f"gvbench plugin {entry.name!r} ({entry.value}) failed to load: "
                    f"{type(error).__name__}: {error}",
                    stacklevel=2,
                )
                continue
            if group == TASKS:
                task_table.setdefault(entry.name, value)


def import_module(name: str) -> None:
    """Import ``name`` (``--import``): a clear error naming it if it cannot be found."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"--import {name}: no module named {error.name!r} (is it installed, or on PYTHONPATH?)"
        ) from None
