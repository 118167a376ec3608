"""What several commands share: argparse types that name the allowed range, and the parent
parsers of the options every fan-out command has."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from gvbench import engine


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``least``, with a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {least}, got {text!r}"
            ) from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def reference_size(text: str) -> int | str:
    """``auto`` or an integer >= 2 (the type of --reference-reps)."""
    if text == "auto":
        return text
    return at_least(2)(text)


def cluster(workers: int) -> argparse.ArgumentParser:
    """``--workers`` (default ``workers``) and ``--scheduler``: where a command fans out."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--workers",
        type=at_least(1),
        default=workers,
        help="worker processes of a Dask LocalCluster this command starts (1: in-process)",
    )
    parent.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler (e.g. tcp://10.0.0.1:8786) to run on "
        f"instead of a local cluster (default: ${engine.SCHEDULER_VARIABLE} if set)",
    )
    return parent


def progress() -> argparse.ArgumentParser:
    """``--no-progress``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parent
