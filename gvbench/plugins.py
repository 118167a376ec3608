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

Both reach Dask workers. An ``--import`` module that lives in a folder of the user's (not
an installed package) travels with its local code: the Python files of every module that
importing it brought in from the same folder (the package it belongs to, sibling modules
it imports), so a worker of a remote cluster without that folder imports the same code.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ESTIMATORS = "gvbench.estimators"
TASKS = "gvbench.tasks"
_loaded = False
# Python files as (path that their module's name gives, contents) pairs.
LocalCode = tuple[tuple[str, bytes], ...]
# --import modules of this process: name → its local code, sent to workers that may not have
# that folder; None for an installed module (a worker imports it by name).
_imported: dict[str, LocalCode | None] = {}


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
    before = set(sys.modules)
    try:
        importlib.import_module(name)
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
    except SystemExit as error:  # a script's sys.exit(...) at import: said, not obeyed
        raise ValueError(
            f"--import {name}: importing it called sys.exit({error.code!r}); a module given to "
            "--import must define estimators or tasks, not run a program when imported"
        ) from None
    brought = [m for m in sys.modules if m not in before]
    _imported[name] = local_code(name, brought)


def _installed(path: Path) -> bool:
    return "site-packages" in path.parts or "dist-packages" in path.parts


def local_code(name: str, brought: list[str] | tuple[str, ...] = ()) -> LocalCode | None:
    """The Python files a worker without this machine's folders needs to import ``name``.

    The folder is the one ``name``'s top-level module was found in. Its files are those of
    ``name``, of the packages above it and of the ``brought`` modules (those its import
    brought in) that lie in that folder: a package's other modules and the sibling files a
    module imports. Each goes where its module's name puts it (``a.b`` at ``a/b.py``), so a
    worker imports it by that name from one folder, whichever path found it here.
    ``None`` where ``name`` is an installed module (or not a Python file).
    """
    top = sys.modules.get(name.partition(".")[0])
    file = getattr(top, "__file__", None)
    if file is None or not file.endswith(".py") or _installed(Path(file)):
        return None
    folder = Path(file).resolve().parent
    if getattr(top, "__path__", None) is not None:  # a package: its folder's parent
        folder = folder.parent
    parts = name.split(".")
    chain = [".".join(parts[: i + 1]) for i in range(len(parts))]
    files = {}
    for module_name in [*chain, *brought]:
        path = getattr(sys.modules.get(module_name), "__file__", None)
        if path is None or not path.endswith(".py"):
            continue
        path = Path(path).resolve()
        if path.is_relative_to(folder) and not _installed(path.relative_to(folder)):
            relative = module_name.replace(".", "/")
            relative += "/__init__.py" if path.name == "__init__.py" else ".py"
            files[relative] = path.read_bytes()
    return tuple(sorted(files.items()))


@dataclass(frozen=True)
class Requirements:
    """What a worker must import before it runs this process's jobs: the installed plugins
    and the ``--import`` modules (with their local code, see :func:`local_code`)."""

    modules: tuple[tuple[str, LocalCode | None], ...] = field(default_factory=tuple)


def requirements() -> Requirements:
    """This process's plugins, as a worker needs them."""
    return Requirements(tuple(_imported.items()))


def ensure(required: Requirements) -> None:
    """Import ``required`` here (on a worker): the installed plugins, then each ``--import``
    module by name, or from its sent local code where this machine does not have it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the driver said it already, once, in its own words
        load()
    for name, files in required.modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ModuleNotFoundError:
            if not files:
                raise  # an installed module, or a dependency, that this worker lacks
        folder = Path(tempfile.mkdtemp(prefix="gvbench-plugins-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for relative, contents in files:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(contents)
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()
        importlib.import_module(name)
