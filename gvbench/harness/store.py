"""Sweep results as xarray Datasets in netCDF files, written atomically and merged on resume.

Nothing wrong is trusted: every finished cell carries a ``digest`` (SHA-256 of its values and
status) that :func:`read` verifies, numeric variables carry HDF5 Fletcher-32 checksums, and a
cell whose metrics are not finite is never "done". A file that cannot be read as a gvbench
result is reported in one line and never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gvbench.atomic_files import write_bytes
from gvbench.harness import journal
from gvbench.harness.quantities import (
    CELL_VARIABLES,
    GROUP_VARIABLES,
    REQUIRED_FINITE,
    long_name,
    quantity,
)
from gvbench.harness.records import DIMS, DONE, PENDING, CellKey, plain


class ResultsFileError(ValueError):
    """A results file that cannot be used as it is; the message is one line that says what to do."""


# The netCDF-C library writes and reads a small sweep ten times faster than h5netcdf (which
# attaches HDF5 dimension scales from Python); both make the same netCDF4/HDF5 files, and
# h5netcdf stands in where netCDF4 is not installed.
try:
    import netCDF4  # noqa: F401

    ENGINE = "netcdf4"
except ImportError:  # pragma: no cover - depends on the environment
    ENGINE = "h5netcdf"


def _array(values: Sequence[Any]) -> np.ndarray:
    """A coordinate array; strings as objects (h5py writes no fixed-width unicode)."""
    array = np.asarray(values)
    return array.astype(object) if array.dtype.kind == "U" else array


def is_finished(status: str) -> bool:
    """Whether a cell needs no more work (computed, or not applicable)."""
    return status == DONE or status.startswith("not applicable")


def non_finite(record: Mapping[str, Any]) -> list[str]:
    """The required metrics of a record that are missing or not finite."""
    return [
        name
        for name in REQUIRED_FINITE
        if not isinstance(record.get(name), float | int) or not math.isfinite(record[name])
    ]


def cell_digest(values: Mapping[str, float], status: str) -> str:
    """SHA-256 of a cell's values and status (floats by their exact repr)."""
    text = json.dumps(
        {"status": status, **{k: float(v) for k, v in values.items()}}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def experiment_digest(identity: Mapping[str, Any]) -> str:
    """SHA-256 of what makes a sweep one experiment (task, configuration, reps, reference,
    seed, threads, draw mode): carried by its file and every journal entry and reference."""
    text = json.dumps({k: str(v) for k, v in identity.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_values(record: Mapping[str, Any]) -> dict[str, float]:
    values = {name: float(record.get(name, np.nan)) for name in CELL_VARIABLES}
    if record["status"] == DONE:
        for group, metrics in record.get("groups", {}).items():
            for name in GROUP_VARIABLES:
                values[f"group_{name}[{group}]"] = float(metrics.get(name, np.nan))
    return values


def sealed(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its ``digest``, computed once when the cell lands (not at every write)."""
    return {**record, "digest": cell_digest(_digest_values(record), record["status"])}


def build_dataset(
    records: Mapping[CellKey, Mapping[str, Any]],
    coords: Mapping[str, Sequence[Any]],
    estimator_coords: Mapping[str, Sequence[Any]],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """One Dataset over the full grid; cells without a record are NaN with status 'pending'."""
    shape = tuple(len(coords[d]) for d in DIMS)
    index = {d: {v: i for i, v in enumerate(coords[d])} for d in DIMS}
    names = CELL_VARIABLES
    values = {name: np.full(shape, np.nan) for name in names}
    status = np.full(shape, PENDING, dtype=object)
    digest = np.full(shape, "", dtype=object)
    for key, record in records.items():
        position = tuple(index[d][v] for d, v in zip(DIMS, key, strict=True))
        status[position] = record["status"]
        for name in names:
            if name in record:
                values[name][position] = record[name]
        digest[position] = record["digest"] if "digest" in record else sealed(record)["digest"]
    data_vars: dict[str, Any] = {}
    for name in names:
        described = {"long_name": long_name(name), "units": quantity(name).units()}
        data_vars[name] = (DIMS, values[name], described)
    data_vars["status"] = (DIMS, status, {"long_name": "cell status"})
    data_vars["digest"] = (
        DIMS,
        digest,
        {"long_name": "SHA-256 of the cell's values and status (verified on read)"},
    )
    groups = list(coords.get("group", []))
    if groups:
        slot = {g: i for i, g in enumerate(groups)}
        for name in GROUP_VARIABLES:
            table = np.full((*shape, len(groups)), np.nan)
            for key, record in records.items():
                position = tuple(index[d][v] for d, v in zip(DIMS, key, strict=True))
                for group, metrics in record.get("groups", {}).items():
                    if name in metrics:
                        table[(*position, slot[group])] = metrics[name]
            data_vars[f"group_{name}"] = (
                (*DIMS, "group"),
                table,
                {
                    "long_name": f"{long_name(name)}, per parameter group",
                    "units": quantity(name).units(),
                },
            )
    for name, column in estimator_coords.items():
        data_vars[name] = ("estimator", _array(column))
    dims = {d: _array(coords[d]) for d in DIMS}
    if groups:
        dims["group"] = _array(groups)
    ds = xr.Dataset(data_vars, coords=dims, attrs=dict(attrs))
    ds["tau"].attrs.update(long_name="temperature τ", units="1")
    ds["k"].attrs.update(long_name="Monte Carlo samples K", units="1")
    ds["batch_size"].attrs.update(long_name="examples per gradient B", units="1")
    ds["seed"].attrs.update(long_name="master seed", units="1")
    return ds


def write_atomic(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` to ``path`` (netCDF4/HDF5, Fletcher-32 checksums) atomically.

    The file is built in memory and then written whole (:func:`gvbench.atomic_files.write_bytes`):
    a reader, a sweep killed mid-write or a full disk never leaves a half-written file.
    """
    encoding = {
        name: {"fletcher32": True}
        for name, variable in ds.variables.items()
        if variable.dtype.kind in "fiu" and variable.ndim > 0
    }
    with _no_distributed_lock():
        data = ds.to_netcdf(engine=ENGINE, encoding=encoding)
    write_bytes(data, path)


def _no_distributed_lock() -> Any:
    """While a Dask client is open, xarray guards netCDF writes with a cluster-wide lock,
    which an in-memory write does not have; the data are in memory, so none is needed."""
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    return dask.config.set(scheduler="synchronous")


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a results path that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ResultsFileError(f"{path} is a directory; give a file name such as {path / 'toy.nc'}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ResultsFileError(f"{path} lies under {folder}, which is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ResultsFileError(f"{path} cannot be written (no write permission in {folder})")
    return path


def read(path: str | os.PathLike[str], verify: bool = True) -> xr.Dataset:
    """Load a results file fully into memory (so it can be rewritten in place).

    Cells that a running or killed sweep has journaled beside the file (see
    :mod:`gvbench.harness.journal`) are merged in. Raises :class:`ResultsFileError` (one
    line: the path, what is wrong, what to do) for a missing, empty, truncated or non-netCDF
    file, and, with ``verify``, for cells whose values no longer match their digest.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"{path}: no such results file")
    if path.stat().st_size == 0:
        raise ResultsFileError(
            f"{path} is empty; it was left as it is: remove it or choose another path"
        )
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    # h5netcdf raises OSError for a damaged file, the netCDF-C library a RuntimeError
    # ("NetCDF: HDF error").
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResultsFileError(
            f"{path} is not a readable netCDF file ({reason}): it may be truncated or corrupted, "
            "and was left as it is: move it away or choose another path"
        ) from None
    ds = consolidated(ds, path)
    if verify:
        corrupted = corrupted_cells(ds)
        if corrupted:
            shown = "; ".join(corrupted[:3]) + (" …" if len(corrupted) > 3 else "")
            raise ResultsFileError(
                f"{path}: {len(corrupted)} cell(s) do not match their checksum ({shown}); "
                "the file was changed after it was written: rerun the sweep to recompute them"
            )
    return ds


def _cells(ds: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    if "seed" not in ds.dims:
        ds = ds.expand_dims(seed=[int(ds.attrs.get("seed", 0))])
    ds = ds.transpose(*DIMS, ...)
    names = [n for n in ds.data_vars if ds[n].dims == DIMS and n not in ("status", "digest")]
    return ds, names


def _group_values(ds: xr.Dataset, position: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """A done cell's per-group metrics (``group_<name>`` variables), by group.

    Only a computed cell has them: a not-applicable cell's slots are NaN in the file but were
    never part of its record, so they are not part of its digest either.
    """
    if "group" not in ds.dims or ds["status"].values[position] != DONE:
        return {}
    dims = (*ds["status"].dims, "group")
    names = [n for n in ds.data_vars if n.startswith("group_") and ds[n].dims == dims]
    groups: dict[str, dict[str, float]] = {}
    for slot, group in enumerate(ds["group"].values.tolist()):
        groups[group] = {
            n.removeprefix("group_"): float(ds[n].values[(*position, slot)]) for n in names
        }
    return groups


def _finished_positions(ds: xr.Dataset) -> list[tuple[int, ...]]:
    status = ds["status"].values
    return list(zip(*np.nonzero(np.vectorize(is_finished)(status)), strict=True))


def _key(ds: xr.Dataset, position: tuple[int, ...]) -> CellKey:
    values = (ds[d].values[i] for d, i in zip(DIMS, position, strict=True))
    return tuple(v.item() if hasattr(v, "item") else v for v in values)


def corrupted_cells(ds: xr.Dataset) -> list[str]:
    """Finished cells whose values do not match their digest (any Dataset with ``digest``)."""
    if "digest" not in ds or "status" not in ds:
        return []
    dims = ds["status"].dims
    names = [n for n in ds.data_vars if ds[n].dims == dims and n not in ("status", "digest")]
    status, digests = ds["status"].values, ds["digest"].values
    bad = []
    for position in zip(*np.nonzero(np.vectorize(is_finished)(status)), strict=True):
        values = {n: float(ds[n].values[position]) for n in names}
        for group, metrics in _group_values(ds, position).items():
            values.update({f"group_{n}[{group}]": v for n, v in metrics.items()})
        if cell_digest(values, str(status[position])) != digests[position]:
            bad.append(
                ", ".join(
                    f"{d}={ds[d].values[i].item()}" for d, i in zip(dims, position, strict=True)
                )
            )
    return bad


def finished_records(ds: xr.Dataset) -> dict[CellKey, dict[str, Any]]:
    """The cells of a stored Dataset that need no more work, as records.

    A "done" cell whose required metrics are not finite, or whose digest does not match, is
    left out (so it is recomputed).
    """
    ds, names = _cells(ds)
    digests = ds["digest"].values if "digest" in ds else None
    records: dict[CellKey, dict[str, Any]] = {}
    for position in _finished_positions(ds):
        record: dict[str, Any] = {n: float(ds[n].values[position]) for n in names}
        record["status"] = str(ds["status"].values[position])
        values = {n: record[n] for n in names}
        groups = _group_values(ds, position)
        for group, metrics in groups.items():
            values.update({f"group_{n}[{group}]": v for n, v in metrics.items()})
        if groups:
            record["groups"] = groups
        stored = cell_digest(values, record["status"])
        if digests is not None and stored != digests[position]:
            continue
        if record["status"] == DONE and non_finite(record):
            continue
        records[_key(ds, position)] = sealed(record)
    return records


def verified(record: Mapping[str, Any]) -> bool:
    """Whether a record read back (from a journal) is what was sealed: its values match its
    digest, and a done cell's required metrics are finite."""
    return (
        "digest" in record
        and "status" in record
        and sealed(record)["digest"] == record["digest"]
        and not (record["status"] == DONE and non_finite(record))
    )


def consolidated(ds: xr.Dataset, path: str | os.PathLike[str]) -> xr.Dataset:
    """``ds`` (read from ``path``) with the :mod:`~gvbench.harness.journal`'s finished cells
    of the same experiment merged in.

    A sweep writes its whole grid when its first cell lands, so every journaled cell has its
    place in the file; one that has none (a journal left from another grid) is ignored.
    """
    logged = journal.records(path, ds.attrs.get("experiment"), verified)
    if not logged:
        return ds
    squeezed = "seed" not in ds.dims
    base, _ = _cells(ds)
    coords = {d: base[d].values.tolist() for d in DIMS}
    if "group" in base.dims:
        coords["group"] = base["group"].values.tolist()
    grid = {d: {plain((v,))[0] for v in values} for d, values in coords.items()}

    def in_grid(key: CellKey) -> bool:
        return all(plain((v,))[0] in grid[d] for d, v in zip(DIMS, key, strict=True))

    merged = finished_records(base)
    merged.update({key: record for key, record in logged.items() if in_grid(key)})
    merged = {_key_in(coords, key): record for key, record in merged.items()}
    known = {n: base[n].values.tolist() for n in base.data_vars if base[n].dims == ("estimator",)}
    result = build_dataset(merged, coords, known, base.attrs)
    return result.squeeze("seed", drop=True) if squeezed else result


def _key_in(coords: Mapping[str, list[Any]], key: CellKey) -> CellKey:
    """``key`` with each value taken from the grid (NaN τ matched by its plain form)."""
    values = []
    for dim, value in zip(DIMS, key, strict=True):
        same = plain((value,))[0]
        values.append(next((v for v in coords[dim] if plain((v,))[0] == same), value))
    return tuple(values)
