"""The Dask engine and the storage that survives faults: a LocalCluster gives the in-process
numbers, a killed worker or driver loses nothing, Ctrl-C stops at once, one writer per path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gvbench
from gvbench import engine
from gvbench.cli import main
from gvbench.harness import journal, read
from gvbench.path_lock import PathInUseError, PathLock
from gvbench.tasks import Toy
from tests.models import tiny_model_task

TASK = Toy(theta=[0.6, -0.2, 0.1])
GRID = dict(
    estimators=["st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo"],
    tau=[0.5, 1.0],
    k=[2, 10],
    reps=2000,
    progress=False,
)
METRICS = ["variance", "bias2", "mse", "variance_se", "bias2_se", "cosine", "snr"]
# A scheduler serves HTTP on 8787 even without a dashboard: a test taking that port failed
# whenever another Dask on the machine held it.
NO_FIXED_PORT = {
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}
# A hang fails the test instead of stalling the suite.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster():
    with engine.client(workers=2) as client:
        yield client


def assert_same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    assert (a.status == b.status).all()
    for name in METRICS:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def assert_identical_but_timing(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every variable identical, bit for bit, but those that time the work (and the digest,
    which seals the times too)."""
    timed = {n for n in a.data_vars if "seconds" in n or n.startswith("time_normalized")}
    timed.add("digest")
    assert set(a.data_vars) == set(b.data_vars)
    for name in sorted(set(a.data_vars) - timed):
        xr.testing.assert_identical(a[name], b[name])


def test_a_local_cluster_gives_the_in_process_dataset_exactly(cluster, tmp_path):
    local = gvbench.sweep(TASK, **GRID)
    distributed = gvbench.sweep(TASK, executor=cluster, path=tmp_path / "toy.nc", **GRID)
    assert_identical_but_timing(local, distributed)
    assert_same_numbers(local, read(tmp_path / "toy.nc"))
    assert not journal.folder(tmp_path / "toy.nc").exists()  # consolidated and cleared
    assert not (tmp_path / "toy.nc.lock").exists()


def test_a_module_task_on_a_local_cluster_gives_the_in_process_dataset_exactly(cluster):
    task = tiny_model_task(reference_reps=300)
    grid = {**GRID, "estimators": ["st_gumbel_softmax", "rloo", "reinforce"], "reps": 300}
    grid |= {"batch_size": [2, 4], "warmup": 30}
    assert_identical_but_timing(
        gvbench.sweep(task, **grid), gvbench.sweep(task, executor=cluster, **grid)
    )


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_allocate_like_a_plain_process(cluster):
    # Dask's default (64 KiB) maps every large tensor afresh: a VAE step 2.6× as slow.
    assert set(cluster.run(_trim_threshold).values()) == {None}


def _started() -> int:
    return time.monotonic_ns()


def test_jobs_start_in_the_order_given_on_a_cluster():
    # One worker of one thread runs its jobs one at a time: they must start in the order
    # given (the costliest training groups first), also when the submissions reach the
    # scheduler as one graph, whose independent tasks Dask orders its own way.
    import dask
    from distributed import Client, LocalCluster

    order = [7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6]
    with (
        dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}),
        LocalCluster(n_workers=1, threads_per_worker=1, **NO_FIXED_PORT) as local,
        Client(local) as client,
    ):
        started = dict(engine.run(_started, [(key, ()) for key in order], client))
    assert sorted(started, key=started.__getitem__) == order


def test_a_job_that_never_starts_stops_the_sweep_in_one_line():
    # No worker to run on: before the watchdog, engine.run waited forever without a word.
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, processes=False, **NO_FIXED_PORT) as empty,
        Client(empty) as client,
    ):
        start = time.monotonic()
        with pytest.raises(engine.Stalled) as stalled:
            list(engine.run(_started, [("job", ())], client, stall=2.0))
        waited = time.monotonic() - start
    message = str(stalled.value)
    assert "\n" not in message and "no progress for" in message
    assert "1 job(s) unfinished" in message and "GVBENCH_STALL_SECONDS" in message
    assert 2.0 <= waited < 2.0 + engine.ACTIVITY_TIMEOUT


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_stall_time_is_named(monkeypatch, value):
    monkeypatch.setenv(engine.STALL_VARIABLE, value)
    with pytest.raises(ValueError, match=r"GVBENCH_STALL_SECONDS=.*a number of seconds > 0"):
        engine.stall_seconds()


def test_a_worker_killed_mid_sweep_changes_nothing(cluster, tmp_path):
    grid = {**GRID, "reps": 20_000}
    expected = gvbench.sweep(TASK, **grid)
    pids = cluster.run(os.getpid)  # worker address → process id
    killed = threading.Event()

    def kill_a_busy_worker():
        deadline = time.time() + 60
        while time.time() < deadline and not killed.is_set():
            busy = [address for address, tasks in cluster.processing().items() if tasks]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    result = gvbench.sweep(TASK, executor=cluster, path=tmp_path / "toy.nc", **grid)
    killer.join()
    assert killed.is_set(), "no worker was busy to be killed"
    assert_same_numbers(expected, result)
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


def test_a_shared_value_outlives_the_worker_that_held_it(cluster):
    """What jobs share (a task, its references) survives the death of every worker that
    held it: Dask's memory manager keeps one replica of a value however it was sent, and a
    scattered one, lost with its worker, cancelled every job that needed it."""
    from distributed import wait

    shared = engine.share(cluster, TASK)
    wait(shared)
    cluster.run_on_scheduler(lambda dask_scheduler: dask_scheduler.extensions["amm"].run_once())
    holders = cluster.who_has(shared)[shared.key]
    assert holders  # held somewhere, then lost there
    pids = cluster.run(os.getpid)
    for address in holders:
        os.kill(pids[address], signal.SIGKILL)
    job = cluster.submit(lambda task: task.config(), shared, pure=False)
    assert job.result(timeout=120) == TASK.config()
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


def sweep_command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gvbench.cli",
        "sweep",
        "toy",
        "--estimators",
        "st_gumbel_softmax",
        "gumbel_rao",
        "rloo",
        "--tau",
        "0.1",
        "0.5",
        "1",
        "2",
        "--k",
        "2",
        "10",
        "100",
        "--reps",
        "30000",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def wait_for_cells(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(journal.folder(out).glob("*.json"))) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before {count} cells: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} cells after {timeout} s")


def test_a_killed_driver_loses_no_finished_cell(tmp_path):
    out = tmp_path / "toy.nc"
    finished, before = None, None
    # kill -9 three times, each landing wherever the next cell's write happens to be.
    for cells in (2, 4, 6):
        process = subprocess.Popen(sweep_command(out), stderr=subprocess.PIPE, text=True)
        wait_for_cells(out, cells, process)
        process.kill()  # no chance to consolidate
        process.communicate()
        assert (tmp_path / "toy.nc.lock").exists()  # left behind, but its process is gone
        now = read(out)  # the file's grid and the journal, merged
        if finished is not None:  # what had finished stands, wall time included
            for name in ["seconds", "draw_seconds", *METRICS]:
                np.testing.assert_array_equal(
                    now[name].values[finished], before[name].values[finished]
                )
        before, finished = now, now.status.values == "done"
        assert finished.sum() >= cells
    with pytest.warns(UserWarning, match="taking over the lock of a run that is gone"):
        main(sweep_command(out)[3:])
    after = read(out)
    # Cells that had finished were not recomputed: their records, wall time included, stand.
    for name in ["seconds", "draw_seconds", *METRICS]:
        np.testing.assert_array_equal(after[name].values[finished], before[name].values[finished])
    assert (after.status == "done").all() | after.status.str.startswith("not applicable").all()
    fresh = main(sweep_command(tmp_path / "fresh.nc")[3:])
    assert fresh is None or fresh == 0
    assert_same_numbers(read(tmp_path / "fresh.nc"), after)


def test_ctrl_c_stops_at_once_and_keeps_the_finished_cells(tmp_path):
    out = tmp_path / "toy.nc"
    # Its own session: Ctrl-C in a terminal signals the whole process group, workers too.
    process = subprocess.Popen(
        sweep_command(out, "--workers", "2"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_cells(out, 2, process)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)  # impatient: a second press while it stops
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    # One line: no traceback, and no "terminate called without an active exception" from
    # threads a second KeyboardInterrupt left running at exit.
    assert len(lines) == 1 and lines[0].startswith("gvbench: interrupted"), stderr
    kept = read(out)
    # Stopped, not run to the end: queued cells were cancelled (the sweep takes tens of
    # seconds; the Ctrl-C came after its second cell).
    assert int((kept.status == "done").sum()) >= 2 and bool((kept.status == "pending").any())
    assert not journal.folder(out).exists()  # consolidated into the file
    assert not (tmp_path / "toy.nc.lock").exists()


def test_a_double_ctrl_c_in_process_stops_once_in_one_line(tmp_path):
    out = tmp_path / "toy.nc"
    process = subprocess.Popen(
        sweep_command(out), stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for_cells(out, 2, process)
    for _ in range(2):
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gvbench: interrupted"), stderr
    assert int((read(out).status == "done").sum()) >= 2


def test_a_second_sweep_on_a_path_in_use_is_refused(tmp_path):
    out = tmp_path / "toy.nc"
    process = subprocess.Popen(sweep_command(out), stderr=subprocess.PIPE, text=True)
    try:
        wait_for_cells(out, 1, process)
        with pytest.raises(PathInUseError, match=f"being written by process {process.pid}"):
            gvbench.sweep(TASK, path=out, **GRID)
    finally:
        process.kill()
        process.communicate()


def test_a_stale_lock_from_another_host_expires(tmp_path, monkeypatch):
    lock = tmp_path / "toy.nc.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    with pytest.raises(PathInUseError):
        PathLock(tmp_path / "toy.nc").acquire()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="taking over"):
        with PathLock(tmp_path / "toy.nc"):
            pass
    assert not lock.exists()


def test_a_damaged_journal_entry_is_recomputed_not_trusted(tmp_path):
    out = tmp_path / "toy.nc"
    grid = {**GRID, "estimators": ["st_gumbel_softmax"], "k": [2]}
    gvbench.sweep(TASK, path=out, **grid)
    ds = read(out)
    key = ("st_gumbel_softmax", 0.5, 2, 1, 0)
    record = {"status": "done", "variance": 123.0, "digest": "0" * 64}
    journal.write(out, [key], record, ds.attrs["experiment"])  # a forged value, no valid digest
    with pytest.warns(UserWarning, match=r"\.json: its values do not match their digest"):
        merged = read(out)
    assert float(merged.variance.sel(tau=0.5, k=2).squeeze()) == float(
        ds.variance.sel(tau=0.5, k=2).squeeze()
    )
    journal.clear(out)


def test_an_unknown_executor_is_named():
    with pytest.raises(TypeError, match=r"executor must be None, a concurrent\.futures\.Executor"):
        list(engine.run(print, [(0, ())], executor=object()))


def test_a_second_sweep_in_the_same_process_is_refused_too(tmp_path):
    with PathLock(tmp_path / "toy.nc"):
        with pytest.raises(PathInUseError, match=f"being written by process {os.getpid()}"):
            gvbench.sweep(TASK, path=tmp_path / "toy.nc", **{**GRID, "reps": 10})
