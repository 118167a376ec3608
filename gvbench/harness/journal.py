"""Finished cells persisted one by one, beside the results file, as they land.

Rewriting a whole netCDF after every cell costs the driver O(cells) per cell, O(cells²) per
sweep. Instead each finished cell becomes one small JSON file in ``<path>.cells/`` (written
atomically), holding every grid point the cell fills (an estimator without τ fills a row of
them: one file, so a kill never leaves half of them), and the netCDF is rewritten when the
first cell lands and at the end; :func:`gvbench.harness.read` merges a journal it finds, so a
sweep killed at any point loses no finished cell.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gvbench.atomic_files import write_bytes
from gvbench.harness import store


def folder(path: str | os.PathLike[str]) -> Path:
    """The journal of the results file ``path``."""
    path = Path(path)
    return path.parent / f"{path.name}.cells"


def _plain(key: store.CellKey) -> list[Any]:
    # τ may be NaN (an estimator without τ): JSON keeps it as NaN, and NaN != NaN, so keys
    # are compared through this plain form.
    return [None if isinstance(v, float) and math.isnan(v) else v for v in key]


def _name(keys: Sequence[store.CellKey]) -> str:
    return hashlib.sha256(json.dumps([_plain(k) for k in keys]).encode()).hexdigest()[:32] + ".json"


def write(
    path: str | os.PathLike[str],
    keys: Sequence[store.CellKey],
    record: dict[str, Any],
    experiment: str,
) -> None:
    """Persist one finished cell, with every grid point it fills, in one atomic file (its
    record must be sealed: it carries its digest)."""
    entry = {"experiment": experiment, "keys": [_plain(k) for k in keys], "record": record}
    write_bytes(json.dumps(entry, sort_keys=True).encode(), folder(path) / _name(keys))


def records(
    path: str | os.PathLike[str], experiment: str | None
) -> dict[store.CellKey, dict[str, Any]]:
    """The journal's cells of ``experiment`` whose digest holds; the others are left out
    (to be recomputed) with a warning naming their file."""
    found: dict[store.CellKey, dict[str, Any]] = {}
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
        if (
            not isinstance(record, dict)
            or "digest" not in record
            or "status" not in record
            or store.sealed(record)["digest"] != record["digest"]
            or (record["status"] == store.DONE and store.non_finite(record))
        ):
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


def consolidated(ds: Any, path: str | os.PathLike[str]) -> Any:
    """``ds`` (read from ``path``) with the journal's finished cells of the same experiment
    merged in.

    A sweep writes its whole grid when its first cell lands, so every journaled cell has its
    place in the file; one that has none (a journal left from another grid) is ignored.
    """
    logged = records(path, ds.attrs.get("experiment"))
    if not logged:
        return ds
    squeezed = "seed" not in ds.dims
    base, _ = store._cells(ds)
    coords = {d: base[d].values.tolist() for d in store.DIMS}
    if "group" in base.dims:
        coords["group"] = base["group"].values.tolist()
    grid = {d: {_plain((v,))[0] for v in values} for d, values in coords.items()}

    def in_grid(key: store.CellKey) -> bool:
        return all(_plain((v,))[0] in grid[d] for d, v in zip(store.DIMS, key, strict=True))

    merged = store.finished_records(base)
    merged.update({key: record for key, record in logged.items() if in_grid(key)})
    merged = {_key_in(coords, key): record for key, record in merged.items()}
    known = {n: base[n].values.tolist() for n in base.data_vars if base[n].dims == ("estimator",)}
    result = store.build_dataset(merged, coords, known, base.attrs)
    return result.squeeze("seed", drop=True) if squeezed else result


def _key_in(coords: dict[str, list[Any]], key: store.CellKey) -> store.CellKey:
    """``key`` with each value taken from the grid (NaN τ matched by its plain form)."""
    values = []
    for dim, value in zip(store.DIMS, key, strict=True):
        plain = _plain((value,))[0]
        values.append(next((v for v in coords[dim] if _plain((v,))[0] == plain), value))
    return tuple(values)
