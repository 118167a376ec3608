"""How long a sweep adapts its stateful estimators, and a refusal, before any work, of an
adaptation that would run for longer than the user allowed."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch

import gvbench.estimators as E
from gvbench.harness.cell import Cell
from gvbench.harness.draws import adapt
from gvbench.tasks import Task
from gvbench.threads import pinned_threads

# Steps (of 16 draws) a stateful estimator adapts for before it is measured: on the toy,
# REBAR's and RELAX's variance settles within 500-1000 steps, REINFORCE's within 50.
DEFAULT_WARMUP = 1000
# The longest adaptation a sweep starts without being told to (max_warmup_seconds), and
# the steps timed, in the driver, to estimate it.
MAX_WARMUP_SECONDS = 3600.0
TIMED_STEPS = 2


def check_warmup_time(
    task: Task, cells: Sequence[Cell], warmup: int, limit: float, threads: int
) -> None:
    """Refuse, before any work, a ``warmup`` whose adaptation alone would run for longer than
    ``limit`` seconds (the largest warmup, 2²⁴ steps, is a day for one toy cell): a few
    steps of the costliest adapted cell are timed here, on a generator of their own."""
    adapted = [c for c in cells if E.info(c.estimator).state is not None]
    if not warmup or not adapted or warmup <= TIMED_STEPS:
        return
    costliest = max(adapted, key=lambda c: (c.batch_size, c.k or 1))
    estimator = E.get(costliest.estimator, **costliest.options())
    generator = torch.Generator(device=task.device).manual_seed(0)
    try:
        with pinned_threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cell says what it has to say, once
            adapt(task, estimator, 1, costliest.batch_size, generator)  # warm-up and tracing
            start = time.perf_counter()
            adapt(task, estimator, TIMED_STEPS, costliest.batch_size, generator)
    except Exception:  # a loss that fails here fails its cells, which say why
        return
    step = (time.perf_counter() - start) / TIMED_STEPS
    total = step * warmup * len(adapted)
    if total > limit:
        raise ValueError(
            f"warmup={warmup} would adapt {len(adapted)} cell(s) for about {_duration(total)} "
            f"({step * 1e3:.3g} ms a step, measured on {costliest.estimator} at "
            f"B={costliest.batch_size}), above max_warmup_seconds={limit:g}: lower warmup (the "
            f"default {DEFAULT_WARMUP} steps adapt the field's estimators), or raise "
            "max_warmup_seconds (--max-warmup-seconds) to run it"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
