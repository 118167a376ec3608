"""Finished cells persisted one by one, beside the results file, as they land.

Rewriting a whole netCDF after every cell costs the driver O(cells) per cell, O(cells²) per
sweep. Instead each finished cell becomes one small JSON file in ``<path>.cells/`` (written
atomically), holding every grid point the cell fills (an estimator without τ fills a row of
them: one file, so a kill never leaves half of them), and the netCDF is rewritten when the
first cell lands and at the end; :func:`gvbench.harness.read` merges a journal it finds
(:func:`gvbench.harness.store.consolidated`), so a sweep killed at any point loses no
finished cell.

Nothing foreign or damaged is trusted: every entry carries the experiment it belongs to (a
digest of the sweep's identity, the ``experiment`` attribute of its file) and its record's
digest. An entry of another experiment, or one that does not verify, is left out (its cell is
recomputed) with a warning that names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gvbench.atomic_files import write_bytes
from gvbench.harness.records import CellKey, plain


def folder(path: str | os.PathLike[str]) -> Path:
    """The journal of the results file ``path``."""
    path = Path(path)
    return path.parent / f"{path.name}.cells"


def _name(keys: Sequence[CellKey]) -> str:
    return hashlib.sha256(json.dumps([plain(k) for k in keys]).encode()).hexdigest()[:32] + ".json"


def write(
    path: str | os.PathLike[str],
    keys: Sequence[CellKey],
    record: dict[str, Any],
    experiment: str,
) -> None:
    """Persist one finished cell, with every grid point it fills, in one atomic file (its
    record must be sealed: it carries its digest)."""
    entry = {"experiment": experiment, "keys": [plain(k) for k in keys], "record": record}
    write_bytes(json.dumps(entry, sort_keys=True).encode(), folder(path) / _name(keys))


def records(
    path: str | os.PathLike[str],
    experiment: str | None,
    verified: Callable[[Mapping[str, Any]], bool],
) -> dict[CellKey, dict[str, Any]]:
    """The journal's cells of ``experiment`` that are ``verified`` (the store's check that a
    record's values match its digest); the others are left out (to be recomputed) with a
    warning naming their file."""
    found: dict[CellKey, dict[str, Any]] = {}
    directory = folder(path)
    if not directory.is_dir():
        return found
    for file in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(file.read_text())
            keys = [tuple(math.nan if v is None else v for v in key) for key in entry["keys"]]
            record, owner = entry["record"], entry.get("experiment")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            warnings.warn(
                f"{file}: not a readable journal entry; its cell is recomputed", stacklevel=3
            )
            continue
        if experiment is None or owner != experiment:
            warnings.warn(
                f"{file} belongs to another experiment ({owner}, not {experiment}); it is "
                "ignored and its cell recomputed",
                stacklevel=3,
            )
            continue
        if not isinstance(record, dict) or not verified(record):
            warnings.warn(
                f"{file}: its values do not match their digest; the cell is recomputed",
                stacklevel=3,
            )
            continue
        for key in keys:
            found[key] = record
    return found


def clear(path: str | os.PathLike[str]) -> None:
    """Remove the journal once its cells are in the netCDF."""
    shutil.rmtree(folder(path), ignore_errors=True)
