"""Where independent jobs run: in-process, a ``concurrent.futures`` executor, or Dask.

Every fan-out of gvbench (sweep cells, training runs, random-search trials, presets) goes
through :func:`run`, which yields results as they finish. With a ``distributed.Client``:

- large shared inputs (a task with its model and data, references) are sent once, as
  the result of a task of their own (:func:`share`), not pickled with every job; a
  worker that dies holding them loses nothing, as the scheduler computes them again;
- a job whose worker dies is rerun elsewhere (``retries``), with the same numbers, since
  every job seeds itself from its own coordinates;
- Ctrl-C cancels what is queued or running and returns at once;
- a cluster that stops making progress (no job finished, no worker executing or fetching
  anything, for ``GVBENCH_STALL_SECONDS``) stops the fan-out with one line that says what
  the jobs were waiting for (:class:`Stalled`), instead of waiting forever.

``client()`` gives the embedded default: a ``LocalCluster`` of N worker processes with one
thread each (the number of torch threads inside a job is fixed by the job itself), or the
scheduler named by ``--scheduler`` / ``GVBENCH_SCHEDULER``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

SCHEDULER_VARIABLE = "GVBENCH_SCHEDULER"
DASHBOARD_VARIABLE = "GVBENCH_DASHBOARD"
STALL_VARIABLE = "GVBENCH_STALL_SECONDS"
# A job that kills its worker this many times is reported as failed, not retried forever.
RETRIES = 3
# Seconds without a finished job while no worker executes or fetches anything: far longer
# than any pause of a healthy cluster (a heartbeat is about a second), far shorter than the
# wait of a user who would otherwise not know that nothing happens.
STALL_SECONDS = 300.0
# How often the scheduler is asked whether its workers are busy, and how long it may take.
ACTIVITY_PERIOD = 1.0
ACTIVITY_TIMEOUT = 30.0


# Set at the first Ctrl-C of this process: later ones are ignored, so that the cleanup it
# started (cancelling jobs, writing finished cells, stopping a cluster) is never cut short
# (a second KeyboardInterrupt there left threads running at exit: "terminate called").
INTERRUPTED = threading.Event()


def stop_once(signum: int, frame: Any) -> None:
    """A SIGINT handler: the first Ctrl-C raises KeyboardInterrupt, later ones do nothing."""
    if INTERRUPTED.is_set():
        return
    INTERRUPTED.set()
    raise KeyboardInterrupt


class Stalled(RuntimeError):
    """The cluster made no progress for the stall time; the message is one line."""


def is_client(executor: Any) -> bool:
    """Whether ``executor`` is a ``distributed.Client`` (without importing Dask otherwise)."""
    return type(executor).__name__ == "Client" and type(executor).__module__.startswith(
        "distributed"
    )


def share(executor: Any, value: Any) -> Any:
    """A handle on ``value`` that jobs can take as an argument: with Dask, a future whose
    task returns ``value``; elsewhere the value itself.

    The value travels once, in the task's spec, and reaches each worker that needs it from
    the one that computed it. A task, unlike scattered data, can be computed again: Dask's
    memory manager keeps a scattered value on one worker however it was broadcast, so a
    worker that died with it took it away and its jobs were cancelled ("already forgotten").
    """
    if is_client(executor):
        _send_plugins(executor)  # a plugin task must be importable where it is unpickled
        with warnings.catch_warnings():
            # Dask's advice for a large value is to scatter it, which is what is avoided.
            warnings.filterwarnings("ignore", message="Sending large graph")
            return executor.submit(_itself, value, pure=False)
    return value


def _itself(value: Any) -> Any:
    return value


def _send_plugins(client: Any) -> None:
    """Register, once per client and set of plugins, a worker plugin that imports this
    process's plugins and ``--import`` modules on every worker: those running now, those
    that join later, and those of a cluster gvbench did not start (an ``--import`` module's
    local code travels with it, see :func:`gvbench.plugins.local_code`)."""
    from distributed import WorkerPlugin

    from gvbench import plugins

    required = plugins.requirements()
    if getattr(client, "_gvbench_plugins", None) == required:
        return

    class GvbenchPlugins(WorkerPlugin):
        idempotent = False

        def __init__(self, required: plugins.Requirements) -> None:
            self.required = required

        def setup(self, worker: Any) -> None:
            plugins.ensure(self.required)

    client.register_plugin(GvbenchPlugins(required), name="gvbench-plugins")
    client._gvbench_plugins = required


def stall_seconds() -> float:
    """How long a Dask fan-out may make no progress before it stops (:class:`Stalled`):
    ``GVBENCH_STALL_SECONDS``, else :data:`STALL_SECONDS`."""
    value = os.environ.get(STALL_VARIABLE)
    if not value:
        return STALL_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"{STALL_VARIABLE}={value!r}: expected a number of seconds > 0 (default "
            f"{STALL_SECONDS:g}), or unset"
        )
    return seconds


def run(
    function: Callable[..., Any],
    jobs: Sequence[tuple[Hashable, tuple[Any, ...]]],
    executor: Any = None,
    stall: float | None = None,
) -> Iterator[tuple[Hashable, Any]]:
    """``function(*arguments)`` for every ``(key, arguments)``, yielding ``(key, result)`` as
    each finishes (in order in-process). Jobs start in the order given, on any executor.
    Closing the iterator early (an exception in the consumer, Ctrl-C) cancels the jobs still
    queued. On Dask, ``stall`` seconds (default :func:`stall_seconds`) without a finished job
    while no worker executes or fetches anything cancel the jobs and raise :class:`Stalled`."""
    if executor is None:
        for key, arguments in jobs:
            yield key, function(*arguments)
        return
    if is_client(executor):
        yield from _run_dask(function, jobs, executor, stall_seconds() if stall is None else stall)
        return
    if not isinstance(executor, cf.Executor):
        raise TypeError(
            "executor must be None, a concurrent.futures.Executor or a distributed.Client, "
            f"got {type(executor).__name__}"
        )
    futures = {executor.submit(function, *arguments): key for key, arguments in jobs}
    try:
        for future in cf.as_completed(futures):
            yield futures[future], future.result()
    finally:
        for future in futures:
            future.cancel()


def _run_dask(
    function: Callable[..., Any],
    jobs: Sequence[tuple[Hashable, tuple[Any, ...]]],
    client: Any,
    stall: float,
) -> Iterator[tuple[Hashable, Any]]:
    from distributed import as_completed

    _send_plugins(client)
    # Submissions close together reach the scheduler as one graph, in which independent
    # tasks lose the order they were submitted in: the order of ``jobs`` is kept as
    # priorities (a test submits twelve to one worker and checks the order they start in).
    futures = {
        client.submit(
            function, *arguments, pure=False, retries=RETRIES, priority=len(jobs) - position
        ): key
        for position, (key, arguments) in enumerate(jobs)
    }
    # Ctrl-C sets a flag instead of raising inside Dask's own waiting (which would log a
    # page of tracebacks from its event loop); the loop below then cancels and raises.
    interrupted = INTERRUPTED
    interrupted.clear()  # an earlier run's Ctrl-C (in a notebook, say) is not this one's
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        # Tracked on this client's own loop, not on whichever client was made last.
        completed = as_completed(futures, loop=client.loop)
        remaining = len(futures)
        watchdog = _Watchdog(client, stall)
        while remaining:
            # Checked before every result, not only when none is ready: while results keep
            # arriving, a Ctrl-C must not wait for the last of them.
            if interrupted.is_set():
                raise KeyboardInterrupt
            batch = completed.next_batch(block=False)
            if not batch:
                watchdog.check([f for f in futures if not f.done()])
                time.sleep(0.05)
                continue
            watchdog.progress()
            for future in batch:
                if interrupted.is_set():
                    raise KeyboardInterrupt
                remaining -= 1
                yield futures[future], future.result()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


class _Watchdog:
    """Says when a fan-out has stalled: ``stall`` seconds with no job finished and no worker
    executing or fetching anything, as the scheduler sees it (its workers' heartbeats)."""

    def __init__(self, client: Any, stall: float) -> None:
        self.client, self.stall = client, stall
        self.quiet_since = self.asked = time.monotonic()

    def progress(self) -> None:
        self.quiet_since = time.monotonic()

    def check(self, pending: Sequence[Any]) -> None:
        now = time.monotonic()
        if now - self.asked < min(ACTIVITY_PERIOD, self.stall / 4):
            return
        self.asked = now
        keys = [f.key for f in pending]
        try:
            busy, states = self.client.sync(
                self.client._run_on_scheduler,
                _activity,
                keys,
                callback_timeout=min(ACTIVITY_TIMEOUT, self.stall),
            )
        except Exception as error:  # an unresponsive scheduler is no progress either
            busy, states = False, {f"scheduler unanswered ({type(error).__name__})": len(keys)}
        if busy:
            self.quiet_since = time.monotonic()
            return
        quiet = time.monotonic() - self.quiet_since
        if quiet >= self.stall:
            described = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
            raise Stalled(
                f"the Dask cluster made no progress for {quiet:.0f} s: {len(keys)} job(s) "
                f"unfinished ({described}) and no worker executing or fetching anything; "
                "they were cancelled and finished work is kept: check the workers' logs "
                f"(a job waiting on a lost input, or no worker to run on), then rerun to resume, "
                f"or set {STALL_VARIABLE} above {self.stall:g} if a job may wait that long"
            )


def _activity(keys: Sequence[Hashable], dask_scheduler: Any = None) -> tuple[bool, dict[str, int]]:
    """On the scheduler: whether a worker executes or fetches anything now, and the states of
    the tasks ``keys`` (a waiting task names what it waits for)."""
    busy = False
    for worker in dask_scheduler.workers.values():
        if "task_counts" not in worker.metrics:  # no heartbeat yet: it cannot be judged idle
            busy = True
            continue
        counts = worker.metrics["task_counts"]
        transfers = worker.metrics.get("transfer", {})
        if counts.get("executing") or counts.get("flight") or transfers.get("incoming_count"):
            busy = True
    states: dict[str, int] = {}
    for key in keys:
        task = dask_scheduler.tasks.get(key)
        if task is None:
            state = "unknown to the scheduler"
        elif task.state == "waiting":
            lost = [d for d in task.waiting_on if not d.who_has]
            state = "waiting on an input held by no worker" if lost else "waiting on inputs"
        elif task.state in ("no-worker", "queued"):
            state = "with no worker to run on" if task.state == "no-worker" else "queued"
        else:
            state = task.state
        states[state] = states.get(state, 0) + 1
    return busy, states


def dashboard_address() -> str | None:
    """Where the LocalCluster's dashboard listens: ``GVBENCH_DASHBOARD`` (``:PORT`` or
    ``HOST:PORT``), none if it is unset."""
    value = os.environ.get(DASHBOARD_VARIABLE)
    if not value:
        return None
    host, colon, port = value.rpartition(":")
    if not (port.isdigit() and 0 <= int(port) <= 65535) or (host and not colon):
        raise ValueError(
            f"{DASHBOARD_VARIABLE}={value!r}: expected ':PORT' or 'HOST:PORT' with a port "
            "from 0 to 65535 (e.g. ':8787'), or unset for no dashboard"
        )
    return value if colon else f":{port}"


@contextlib.contextmanager
def client(workers: int = 1, scheduler: str | None = None) -> Iterator[Any]:
    """The executor for ``workers`` processes: ``None`` (in-process) for one, else a Dask
    client of a ``LocalCluster`` this program starts (and stops), or of the scheduler at
    ``scheduler`` (default: the ``GVBENCH_SCHEDULER`` environment variable), left running."""
    scheduler = scheduler or os.environ.get(SCHEDULER_VARIABLE) or None
    if scheduler is None and workers <= 1:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as connected:
            yield connected
        return
    dashboard = dashboard_address()
    # silence_logs CRITICAL: one line on Ctrl-C, not a page of worker tracebacks, and no
    # heartbeat traceback from a worker that races the scheduler's close at the end of a
    # good run (logged at ERROR). A failing job still reaches the driver as its exception,
    # which says it in one line. Workers take the queued jobs eagerly (worker-saturation
    # inf) instead of one round trip to the scheduler per job: jobs here are independent
    # and their inputs were shared already. Dask starts its workers with glibc's
    # MALLOC_TRIM_THRESHOLD_ at 64 KiB, which also fixes malloc's mmap threshold: every
    # tensor above 128 KiB is then mapped afresh and faulted in page by page, which makes
    # a step of large tensors (the VAE's at B = 200) more than twice as slow: unset here, so
    # a worker computes as fast as a plain process (docs/performance.md has the measurement).
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            dask.config.set(
                {
                    "distributed.scheduler.worker-saturation": float("inf"),
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                }
            )
        )
        with _interrupts_ignored():
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=dashboard,
                    # Without a dashboard the scheduler still serves HTTP (health, metrics),
                    # by default on 8787: a free local port instead, so that two sweeps at
                    # once neither clash nor warn.
                    scheduler_kwargs=None if dashboard else {"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.CRITICAL,
                )
            )
        yield stack.enter_context(Client(cluster))


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored while the cluster's processes start, so that they inherit it: Ctrl-C
    in a terminal reaches the whole process group, and only this process must answer it
    (it cancels the jobs and stops the cluster), not every worker with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
