"""Sweep results as xarray Datasets in netCDF files, written atomically and merged on resume."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gvbench.harness.metrics import METRICS

CellKey = tuple[str, float, int, int, int]  # estimator, tau, k, batch_size, seed
DIMS = ("estimator", "tau", "k", "batch_size", "seed")
PENDING = "pending"
DONE = "done"

LONG_NAMES = {
    "variance": "trace of the covariance of the gradient estimate",
    "variance_per_coord": "trace of the covariance per gradient coordinate (V/P)",
    "bias2": "squared bias ‖E ĝ − g*‖², finite-sample corrected",
    "mse": "mean squared error E‖ĝ − g*‖²",
    "cosine": "cosine between the mean estimate and the reference gradient",
    "snr": "signal-to-noise ratio ‖E ĝ‖ / sqrt(V/P)",
    "mean_norm": "norm of the mean gradient estimate",
    "seconds": "wall time of the cell (draws and metrics)",
}


def _array(values: Sequence[Any]) -> np.ndarray:
    """A coordinate array; strings as objects (h5py writes no fixed-width unicode)."""
    array = np.asarray(values)
    return array.astype(object) if array.dtype.kind == "U" else array


def is_finished(status: str) -> bool:
    """Whether a cell needs no more work (computed, or not applicable)."""
    return status == DONE or status.startswith("not applicable")


def build_dataset(
    records: Mapping[CellKey, Mapping[str, Any]],
    coords: Mapping[str, Sequence[Any]],
    estimator_coords: Mapping[str, Sequence[Any]],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """One Dataset over the full grid; cells without a record are NaN with status 'pending'."""
    shape = tuple(len(coords[d]) for d in DIMS)
    index = {d: {v: i for i, v in enumerate(coords[d])} for d in DIMS}
    names = [*METRICS, *(f"{m}_se" for m in METRICS), "mean_norm", "seconds"]
    values = {name: np.full(shape, np.nan) for name in names}
    status = np.full(shape, PENDING, dtype=object)
    for key, record in records.items():
        position = tuple(index[d][v] for d, v in zip(DIMS, key, strict=True))
        status[position] = record["status"]
        for name in names:
            if name in record:
                values[name][position] = record[name]
    data_vars: dict[str, Any] = {}
    for name in names:
        base = name.removesuffix("_se")
        long_name = LONG_NAMES[base] + (" (standard error)" if name.endswith("_se") else "")
        units = "s" if name == "seconds" else "1"
        data_vars[name] = (DIMS, values[name], {"long_name": long_name, "units": units})
    data_vars["status"] = (DIMS, status, {"long_name": "cell status"})
    for name, column in estimator_coords.items():
        data_vars[name] = ("estimator", _array(column))
    ds = xr.Dataset(data_vars, coords={d: _array(coords[d]) for d in DIMS}, attrs=dict(attrs))
    ds["tau"].attrs.update(long_name="temperature τ", units="1")
    ds["k"].attrs.update(long_name="Monte Carlo samples K", units="1")
    ds["batch_size"].attrs.update(long_name="examples per gradient B", units="1")
    ds["seed"].attrs.update(long_name="master seed", units="1")
    return ds


def write_atomic(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` to ``path`` (netCDF4 via h5netcdf) through a temporary file and a rename.

    A reader, or a sweep killed mid-write, never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read(path: str | os.PathLike[str]) -> xr.Dataset:
    """Load a results file fully into memory (so it can be rewritten in place)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def finished_records(ds: xr.Dataset) -> dict[CellKey, dict[str, Any]]:
    """The cells of a stored Dataset that need no more work, as records."""
    if "seed" not in ds.dims:
        ds = ds.expand_dims(seed=[int(ds.attrs["seed"])])
    ds = ds.transpose(*DIMS)
    names = [n for n in ds.data_vars if ds[n].dims == DIMS and n != "status"]
    records: dict[CellKey, dict[str, Any]] = {}
    status = ds["status"].values
    for position in zip(*np.nonzero(np.vectorize(is_finished)(status)), strict=True):
        key = tuple(ds[d].values[i].item() for d, i in zip(DIMS, position, strict=True))
        record = {n: float(ds[n].values[position]) for n in names}
        record["status"] = str(status[position])
        records[key] = record
    return records
