"""Command line: ``gvbench list | sweep | plot | compare | simplex | train | reproduce |
report | leaderboard | demo``, one module per command.

The CLI parses, validates and delegates; it computes no statistics of its own. Every
command's user errors end in :func:`main`, as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from gvbench import engine, plugins
from gvbench.cli import (
    compare,
    demo,
    leaderboard,
    listing,
    plot,
    reproduce,
    simplex,
    sweep,
    train,
)
from gvbench.path_lock import PathInUseError

EPILOG = """examples:
  gvbench list
  gvbench sweep toy --tau 0.01 0.1 1 --k 1 10 100 --reps 10000 --workers 2
  gvbench sweep toy --estimators st_gumbel_softmax gumbel_rao --task-option n=5 m=2
  gvbench plot results/toy.nc
  gvbench compare results/toy.nc --cost seconds
  gvbench compare results/toy-main.nc results/toy-branch.nc
  gvbench simplex --workers 2
  gvbench train listops --preset small --workers 2
  gvbench train vae --estimator gumbel_rao --k 10 --arity 4 --batch-size 20
  gvbench leaderboard --preset cpu --workers 2
"""
COMMANDS = (listing, sweep, plot, compare, train, simplex, reproduce, leaderboard, demo)

# What a user's input or machine can cause (TrainingDiverged, CheckpointError and
# ResultsFileError are ValueErrors): said in one line, never as a traceback.
USER_ERRORS = (ValueError, KeyError, TypeError, OSError, PathInUseError, engine.Stalled)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, the installed experiments' among them."""
    parser = argparse.ArgumentParser(
        prog="gvbench",
        description="Gradient-variance analysis of estimators for discrete random variables.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): a module of your own that registers "
        "estimators or adds tasks to gvbench.tasks.TASKS; installed packages are found "
        "through their 'gvbench.estimators', 'gvbench.tasks' and 'gvbench.experiments' "
        "entry points",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning as the CLI prints it: one ``warning: …`` line, no source location (the
    reader is a user of the command, not of the code that warned)."""
    return f"warning: {' '.join(str(message).split())}\n"


@contextlib.contextmanager
def _bars(on: bool) -> Iterator[None]:
    """``--no-progress`` for every bar of the command, also those no flag reaches (a harness
    task's brief training, on a worker too): tqdm's own switch, ``TQDM_DISABLE``, set for the
    command and the processes it starts, then put back as it was."""
    if on:
        yield
        return
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = previous


@contextlib.contextmanager
def _one_interrupt() -> Iterator[None]:
    """Ctrl-C stops the command once; a second press while it saves and stops is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    engine.INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, engine.stop_once)
    try:
        yield
    finally:
        # After a Ctrl-C the command is ending: a second press must not cut that short.
        signal.signal(signal.SIGINT, signal.SIG_IGN if engine.INTERRUPTED.is_set() else previous)


def _message(error: BaseException) -> str:
    """The error's message (a KeyError's without the quotes its str adds)."""
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error).strip()
    return text or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    plugins.load()  # installed estimators, tasks and experiments, before any is named
    args = build_parser().parse_args(argv)
    try:
        for module in args.imports:
            plugins.import_module(module)
        with _bars(not getattr(args, "no_progress", False)), _one_interrupt():
            return args.run(args)
    except USER_ERRORS as error:
        # Every command's user errors end here, in one line: a bad file, option or cluster.
        raise SystemExit(f"gvbench: {_message(error)}") from None
    except KeyboardInterrupt:
        # Finished cells and runs were saved as they landed; the queue was cancelled.
        print(
            "gvbench: interrupted; finished work is saved, rerun the command to resume",
            file=sys.stderr,
        )
        return 130
