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
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ESTIMATORS = "gvbench.estimators"
TASKS = "gvbench.tasks"
_loaded = False
# --import modules of this process: name → its source where it is one file outside the
# installed packages (sent to workers that may not have it), else None (import by name).
_imported: dict[str, bytes | None] = {}


def load() -> None:
    """Import every installed plugin once (later calls do nothing).

    A plugin that fails to import is reported in a warning naming it, and skipped: one
    broken package must not stop gvbench. A plugin task whose name is a built-in task's is
    left out with a warning (the built-in keeps its name).
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
            if group != TASKS:
                continue
            if entry.name in task_table and task_table[entry.name] is not value:
                warnings.warn(
                    f"gvbench plugin task {entry.name!r} ({entry.value}) is not used: "
                    f"{entry.name!r} is already a task; register it under another name",
                    stacklevel=2,
                )
                continue
            task_table[entry.name] = value


def import_module(name: str) -> None:
    """Import ``name`` (``--import``), looking in the current folder too, as ``python -m``
    would. Any failure is a ``ValueError`` of one line naming the module and the cause."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"--import {name}: no module named {error.name!r} (not in the current folder, "
            "not installed, not on PYTHONPATH)"
        ) from None
    except SyntaxError as error:
        raise ValueError(
            f"--import {name}: syntax error in {error.filename}, line {error.lineno}: {error.msg}"
        ) from None
    except Exception as error:  # the module's own code raised: say where, in one line
        raise ValueError(
            f"--import {name}: importing it raised {type(error).__name__}: {error}"
        ) from None
    _imported[name] = _portable_source(module)


def _portable_source(module: Any) -> bytes | None:
    """The source of a one-file module outside site-packages (what a remote worker may lack)."""
    file = getattr(module, "__file__", None)
    if file is None or Path(file).name == "__init__.py" or not file.endswith(".py"):
        return None
    if "site-packages" in Path(file).parts or "dist-packages" in Path(file).parts:
        return None
    return Path(file).read_bytes()


@dataclass(frozen=True)
class Requirements:
    """What a worker must import before it runs this process's jobs: the installed plugins
    and the ``--import`` modules (with their source where they are one local file)."""

    modules: tuple[tuple[str, bytes | None], ...] = field(default_factory=tuple)


def requirements() -> Requirements:
    """This process's plugins, as a worker needs them."""
    return Requirements(tuple(_imported.items()))


def ensure(required: Requirements) -> None:
    """Import ``required`` here (on a worker): the installed plugins, then each ``--import``
    module by name, or from its sent source where this machine does not have it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the driver said it already, once, in its own words
        load()
    for name, source in required.modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ModuleNotFoundError:
            if source is None:
                raise
        folder = Path(tempfile.mkdtemp(prefix="gvbench-plugins-"))
        (folder / f"{name.rpartition('.')[2]}.py").write_bytes(source)
        sys.path.insert(0, str(folder))
        importlib.import_module(name)
