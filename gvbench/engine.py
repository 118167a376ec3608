"""Where independent jobs run: in-process, a ``concurrent.futures`` executor, or Dask.

Every fan-out of gvbench (sweep cells, training runs, random-search trials, presets) goes
through :func:`run`, which yields results as they finish. With a ``distributed.Client``:

- large shared inputs (a task with its model and data, references) are sent once, as
  the result of a task of their own (:func:`share`), not pickled with every job; a
  worker that dies holding them loses nothing, as the scheduler computes them again;
- a job whose worker dies is rerun elsewhere (``retries``), with the same numbers, since
  every job seeds itself from its own coordinates;
- Ctrl-C cancels what is queued or running and returns at once.

``client()`` gives the embedded default: a ``LocalCluster`` of N worker processes with one
thread each (the number of torch threads inside a job is fixed by the job itself), or the
scheduler named by ``--scheduler`` / ``GVBENCH_SCHEDULER``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

SCHEDULER_VARIABLE = "GVBENCH_SCHEDULER"
DASHBOARD_VARIABLE = "GVBENCH_DASHBOARD"
# A job that kills its worker this many times is reported as failed, not retried forever.
RETRIES = 3


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


def run(
    function: Callable[..., Any],
    jobs: Sequence[tuple[Hashable, tuple[Any, ...]]],
    executor: Any = None,
) -> Iterator[tuple[Hashable, Any]]:
    """``function(*arguments)`` for every ``(key, arguments)``, yielding ``(key, result)`` as
    each finishes (in order in-process). Jobs start in the order given, on any executor.
    Closing the iterator early (an exception in the consumer, Ctrl-C) cancels the jobs still
    queued."""
    if executor is None:
        for key, arguments in jobs:
            yield key, function(*arguments)
        return
    if is_client(executor):
        yield from _run_dask(function, jobs, executor)
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
    function: Callable[..., Any], jobs: Sequence[tuple[Hashable, tuple[Any, ...]]], client: Any
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
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        completed = as_completed(futures)
        remaining = len(futures)
        while remaining:
            batch = completed.next_batch(block=False)
            if not batch:
                if interrupted.is_set():
                    raise KeyboardInterrupt
                time.sleep(0.05)
                continue
            for future in batch:
                remaining -= 1
                yield futures[future], future.result()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


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
    # tensor above 128 KiB is then mapped afresh and faulted in page by page, and a VAE
    # step at B = 200 takes 2.6× as long (54 s against 26 s for three seeds × 300 steps):
    # unset here, so a worker computes as fast as a plain process.
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
