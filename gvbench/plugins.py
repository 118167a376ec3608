"""Plugins: estimators, tasks and experiments of other packages, or a module named on the CLI.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."gvbench.estimators"]
    my_estimators = "my_package.estimators"        # a module whose import @registers them

    [project.entry-points."gvbench.tasks"]
    my_task = "my_package.tasks:MyTask"            # a Task class or factory, by its name

    [project.entry-points."gvbench.experiments"]
    my_study = "my_package.study:MY_STUDY"         # an experiment (its ``task`` is a task too)

and, once installed, its estimators and tasks are in ``gvbench list``, in sweeps
(``--estimators NAME``, ``gvbench sweep NAME``) and in the asv suite, as pytest and asv
discover their own plugins. :func:`found` returns a group's objects and changes no table:
each consumer (:mod:`gvbench.tasks`, the experiments' registry) builds its own from them.
``gvbench --import MODULE …`` imports a module that is not packaged (it registers
estimators, or adds tasks to ``gvbench.tasks.TASKS``).

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
EXPERIMENTS = "gvbench.experiments"
GROUPS = (ESTIMATORS, TASKS, EXPERIMENTS)
# Each group's loaded entry points, by name: an entry point is loaded (and a broken one
# warned about) once per process.
_found: dict[str, dict[str, object]] = {}
# Python files as (path that their module's name gives, contents) pairs.
LocalCode = tuple[tuple[str, bytes], ...]
# --import modules of this process: name → its local code, sent to workers that may not have
# that folder; None for an installed module (a worker imports it by name).
_imported: dict[str, LocalCode | None] = {}


def found(group: str) -> dict[str, object]:
    """The installed plugins of entry-point ``group``: each entry point's object, by its name.

    Every entry point is loaded once per process; later calls return the same objects. A
    plugin that fails to import is reported once, in a warning naming it, and left out: one
    broken package must not stop gvbench. What to do with the objects is the caller's: an
    estimator module registers itself by being imported, :func:`gvbench.tasks.available`
    puts tasks and experiments in its table.
    """
    if group not in _found:
        loaded = {}
        for entry in importlib.metadata.entry_points(group=group):
            try:
                loaded[entry.name] = entry.load()
            except Exception as error:  # a plugin's own failure, whatever it is
                warnings.warn(
                    f"gvbench plugin {entry.name!r} ({entry.value}) failed to load: "
                    f"{type(error).__name__}: {error}",
                    stacklevel=3,
                )
        _found[group] = loaded
    return dict(_found[group])


def load() -> None:
    """Import every installed plugin of every group once (see :func:`found`), so that their
    estimators are registered and a broken one is said before a command starts."""
    for group in GROUPS:
        found(group)


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
        # A module loaded from a file has its absolute path; some made up at run time carry
        # a bare name (torch's operator namespaces say "_ops.py"), which is no file of ours.
        if path is None or not path.endswith(".py") or not os.path.isabs(path):
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
