"""Nothing lost, nothing wrong trusted: non-finite cells, corrupted and unwritable files, a full
disk, the umask, duplicate grid values and bad harness arguments."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import gvbench
from gvbench import atomic_files
from gvbench.cli import main
from gvbench.harness import read
from gvbench.harness.store import ResultsFileError, write_atomic
from gvbench.tasks import Toy

TASK = Toy(theta=[0.6, -0.2, 0.1])
GRID = dict(estimators=["st_gumbel_softmax", "reinforce"], tau=[0.5], k=[1], reps=50)


class NonFiniteToy(Toy):
    """The toy whose loss is NaN (or +inf) at one category."""

    name = "non-finite-toy"

    def __init__(self, bad: float) -> None:
        super().__init__(theta=[0.6, -0.2, 0.1])
        self.bad = bad

    def loss(self, params, sample, batch_size):
        d = sample(params["theta"][:, None].expand(-1, batch_size, -1, -1))
        return (d[..., 0, :] * torch.tensor([1.0, self.bad, 0.5], dtype=torch.float64)).sum(-1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_fails_its_cells_and_is_retried_on_resume(tmp_path, bad):
    path = tmp_path / "bad.nc"
    with pytest.warns(UserWarning, match="failed"):
        ds = gvbench.sweep(NonFiniteToy(bad), path=path, progress=False, **GRID)
    status = ds.status.values.ravel().tolist()
    assert all(s.startswith("failed: ") for s in status), status
    assert "not finite" in status[0]
    assert (read(path).status != "done").all()


def test_the_cli_exits_non_zero_when_cells_failed(tmp_path, monkeypatch):
    monkeypatch.setitem(gvbench.tasks.TASKS, "nan-toy", lambda: NonFiniteToy(float("nan")))
    out = tmp_path / "nan.nc"
    argv = ["sweep", "nan-toy", "--estimators", "straight_through", "--tau", "1", "--k", "1"]
    with pytest.warns(UserWarning), pytest.raises(SystemExit, match="failed"):
        main([*argv, "--reps", "20", "--no-progress", "--out", str(out)])


def test_a_reference_of_one_draw_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reference_reps must be an integer >= 2"):
        gvbench.sweep(TASK, reference_reps=1, progress=False, **GRID)


def test_a_value_changed_by_hand_is_detected_and_recomputed(tmp_path):
    path = tmp_path / "toy.nc"
    clean = gvbench.sweep(TASK, path=path, progress=False, **GRID)
    tampered = read(path)
    tampered["variance"].values[0, 0, 0, 0] *= 1.5
    tampered.to_netcdf(tmp_path / "edited.nc", engine="h5netcdf")
    os.replace(tmp_path / "edited.nc", path)
    with pytest.raises(ResultsFileError, match="do not match their checksum"):
        read(path)
    with pytest.warns(UserWarning, match="1 cell.* do not match their checksum"):
        resumed = gvbench.sweep(TASK, path=path, progress=False, **GRID)
    xr.testing.assert_equal(resumed.variance, clean.variance)
    read(path)  # verifies


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"not a netCDF file at all", "is not a readable netCDF file"),
        ("truncated", "is not a readable netCDF file"),
        ("foreign", "not a gvbench sweep"),
    ],
)
def test_unreadable_or_foreign_files_get_one_line_and_are_never_overwritten(
    tmp_path, content, message
):
    path = tmp_path / "toy.nc"
    if content == "truncated":
        gvbench.sweep(TASK, path=path, progress=False, **GRID)
        content = path.read_bytes()[:3000]
    elif content == "foreign":
        xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
        content = path.read_bytes()
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=message) as error:
        gvbench.sweep(TASK, path=path, progress=False, **GRID)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert path.read_bytes() == content
    with pytest.raises(SystemExit) as plotted:
        main(["plot", str(path)])
    assert str(path) in str(plotted.value) and "\n" not in str(plotted.value)


def test_a_full_disk_is_a_clear_error_that_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "toy.nc"
    gvbench.sweep(TASK, path=path, progress=False, **GRID)
    before = path.read_bytes()

    def full(descriptor, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "write", full)
    with pytest.raises(OSError, match=r"no space left on the device.*left as it was"):
        write_atomic(read(path), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.nc", "toy.nc.references"]


SMALL_DISK = 1 << 20  # room for the first file and the filler, not for a larger grid


def test_a_real_full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK // 1024}k", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        path = mount / "toy.nc"
        gvbench.sweep(TASK, path=path, progress=False, **GRID)
        before = path.read_bytes()
        (mount / "filler").write_bytes(b"x" * (SMALL_DISK - 2 * len(before) - 4096))
        grid = {**GRID, "tau": [0.5, 1.0, 2.0, 3.0, 4.0], "k": [1, 2, 3, 4, 5, 6]}
        with pytest.raises(OSError, match="no space left on the device"):
            gvbench.sweep(TASK, path=mount / "toy.nc", progress=False, **grid)
        assert not list(mount.glob("*.tmp")) and not list(mount.glob(".*.tmp"))
        read(path)  # still a valid file: the previous version or a complete newer one
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_files_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        gvbench.sweep(TASK, path=tmp_path / "toy.nc", progress=False, **GRID)
        atomic_files.save_torch({"x": 1}, tmp_path / "state.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "toy.nc").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "state.pt").stat().st_mode & 0o777 == 0o644


def test_duplicate_seeds_are_merged():
    ds = gvbench.sweep(TASK, seed=[0, 0, 3, 3], progress=False, **GRID)
    assert ds.seed.values.tolist() == [0, 3] and (ds.status == "done").all()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(task=None), TypeError, "task must be a gvbench.tasks.Task or a task name"),
        (dict(seed="abc"), TypeError, "seed must be an integer"),
        (dict(seed=-1), ValueError, "seed must be an integer >= 0"),
        (dict(k=[float("inf")]), TypeError, "k must be an integer"),
        (dict(reps=True), TypeError, "reps must be an integer"),
    ],
)
def test_bad_harness_arguments_name_themselves(arguments, error, message):
    options = {**GRID, "progress": False, **arguments}
    task = options.pop("task", TASK)
    with pytest.raises(error, match=message):
        gvbench.sweep(task, **options)


@pytest.mark.parametrize("case", ["directory", "under a file", "read-only", "not netcdf"])
def test_unwritable_output_paths_fail_before_any_work(tmp_path, case, monkeypatch):
    import importlib

    sweep_module = importlib.import_module("gvbench.harness.sweep")
    if case == "directory":
        path = tmp_path
    elif case == "under a file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "toy.nc"
    elif case == "read-only":
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        path = folder / "toy.nc"
        if os.access(folder, os.W_OK):  # root ignores permissions: check the check itself
            monkeypatch.setattr(os, "access", lambda *a, **k: False)
    else:
        path = tmp_path / "toy.nc"
        path.write_text("hello")
    called = []
    monkeypatch.setattr(sweep_module, "run_cell", lambda *a: called.append(a))
    with pytest.raises(ValueError, match=str(Path(path).name)):
        gvbench.sweep(TASK, path=path, progress=False, **GRID)
    assert not called


def test_wrong_shaped_loss_on_an_enumerable_task_names_the_task():
    class WrongShape(Toy):
        name = "wrong-shape"

        def loss(self, params, sample, batch_size):
            return super().loss(params, sample, batch_size).sum(1)

    ds_error = None
    try:
        gvbench.sweep(WrongShape(), progress=False, **GRID)
    except ValueError as error:
        ds_error = str(error)
    assert ds_error is not None and "task 'wrong-shape' returned losses of shape" in ds_error


def test_plot_draws_every_kind_of_gvbench_file(tmp_path, capsys):
    simplex = ["simplex", "--resolution", "4", "--tau", "1", "--k", "4", "--reps", "20"]
    assert main([*simplex, "--no-progress", "--out", str(tmp_path / "simplex.nc")]) == 0
    assert main(["plot", str(tmp_path / "simplex.nc"), "--out-dir", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "simplex.png").stat().st_size > 1000
    curves = xr.Dataset(
        {"train_loss": ("step", [3.0, 2.0]), "valid_accuracy": ("step", [0.1, 0.4])},
        coords={"step": [10, 20]},
        attrs={"title": "a run"},
    )
    write_atomic(curves, tmp_path / "curves.nc")
    assert main(["plot", str(tmp_path / "curves.nc")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert "curves.pdf" in capsys.readouterr().out


def test_a_resumed_sweep_reuses_its_references(tmp_path, monkeypatch):
    import importlib

    sweep_module = importlib.import_module("gvbench.harness.sweep")

    calls = []
    real = sweep_module.reference_gradient
    monkeypatch.setattr(
        sweep_module, "reference_gradient", lambda *a, **k: calls.append(a[1]) or real(*a, **k)
    )
    path = tmp_path / "toy.nc"
    first = gvbench.sweep(TASK, path=path, progress=False, **GRID)
    assert calls == [1]
    grid = {**GRID, "tau": [0.5, 2.0]}  # extends the grid: new cells, same references
    second = gvbench.sweep(TASK, path=path, progress=False, **grid)
    assert calls == [1]
    np.testing.assert_array_equal(
        second.variance.sel(tau=0.5).values, first.variance.sel(tau=0.5).values
    )
    (path.parent / "toy.nc.references" / "batch-1.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"batch-1\.npz is damaged .* it is recomputed"):
        gvbench.sweep(TASK, path=path, progress=False, **{**grid, "tau": [0.5, 2.0, 3.0]})
    assert calls == [1, 1]  # an unreadable cache is recomputed, never trusted


def test_a_checksum_corrupted_file_is_one_line_for_every_reader(tmp_path):
    # The netCDF-C library reports a Fletcher-32 mismatch as RuntimeError("NetCDF: HDF
    # error"), which read() let through: plot, compare, a resuming sweep and plot --frontier
    # printed a traceback. A byte flipped in a checksummed chunk: every reader says one line.
    import h5py

    path = tmp_path / "toy.nc"
    gvbench.sweep(TASK, path=path, progress=False, **GRID)
    with h5py.File(path) as file:
        offset = file["variance"].id.get_chunk_info(0).byte_offset
    damaged = bytearray(path.read_bytes())
    damaged[offset] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ResultsFileError, match="is not a readable netCDF file") as error:
        read(path)
    assert "\n" not in str(error.value)
    with pytest.raises(ResultsFileError, match="is not a readable netCDF file"):
        gvbench.sweep(TASK, path=path, progress=False, **GRID)
    commands = [["plot", str(path)], ["plot", "--frontier", str(path)], ["compare", str(path)]]
    for argv in commands:
        with pytest.raises(SystemExit, match="is not a readable netCDF file") as exited:
            main(argv)
        assert "\n" not in str(exited.value), argv
    assert path.read_bytes() == bytes(damaged)  # never overwritten
