"""``gvbench list``: the estimators with their properties, the tasks and the experiments."""

from __future__ import annotations

import argparse
from typing import Any

import gvbench.estimators as E
import gvbench.tasks
from gvbench import study


def add_parser(commands: Any) -> None:
    commands.add_parser(
        "list", help="list estimators (with their properties), tasks and experiments"
    ).set_defaults(run=run)


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as aligned columns."""
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def _summary(factory: Any) -> str:
    """A task's first docstring line, or its experiment's title for an experiment's task."""
    owner = getattr(factory, "__self__", None)
    if isinstance(owner, study.Study):
        return f"{owner.title}, at a trained checkpoint"
    return next(iter((factory.__doc__ or "").strip().splitlines()), "")


def run(args: argparse.Namespace) -> int:
    print("Estimators (gvbench.estimators.get(NAME, **hyper)):\n")
    print_table([entry.summary() for entry in E.available().values()])
    print("\nTasks (gvbench.tasks.get(NAME, **config)):\n")
    print_table(
        [
            {"name": name, "summary": _summary(factory)}
            for name, factory in gvbench.tasks.available().items()
        ]
    )
    print("\nExperiments (gvbench train NAME, gvbench reproduce --only NAME):\n")
    print_table(
        [
            {"name": name, "presets": " ".join(each.presets), "summary": each.title}
            for name, each in study.registered().items()
        ]
    )
    return 0
