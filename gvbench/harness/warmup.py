"""How long a sweep's work takes, measured before any of it (the pilot), and a refusal, before
any work, of an adaptation that would run for longer than the user allowed.

The pilot times a few passes of every cell, of the RLOO reference at each batch size it is
drawn at, and of an adaptation step, each on a generator of its own and under the cells'
thread count: it moves no generator, no estimator and no number of the sweep.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from time import perf_counter  # the pilot's clock: a test reads a simulated one instead

import torch

import gvbench.estimators as E
from gvbench.harness.cell import Cell
from gvbench.harness.draws import adapt, draws_per_pass, one_pass
from gvbench.tasks import Task
from gvbench.threads import pinned_threads

# Steps (of 16 draws) a stateful estimator adapts for before it is measured: on the toy,
# REBAR's and RELAX's variance settles within 500-1000 steps, REINFORCE's within 50.
DEFAULT_WARMUP = 1000
# The longest adaptation a sweep starts without being told to (max_warmup_seconds), and
# the steps timed, in the driver, to estimate it.
MAX_WARMUP_SECONDS = 3600.0
TIMED_STEPS = 2
# A timed pass starts at TIMED_DRAWS draws (two: a module's draws are batched from two) and
# doubles until it lasts TIMED_PASS_SECONDS, so that a cheap draw's per-pass overhead is
# shared as in the cell's own passes, or until it holds as many draws as they do.
TIMED_DRAWS = 2
TIMED_PASS_SECONDS = 0.005
# A cell's first pass of FIT_FROM_SECONDS or longer (its doubling stopped at once) is timed
# again at twice the size, to separate its overhead from its draws' cost, unless it lasts
# FIT_PASS_SECONDS or longer (a cell of such passes is long whatever the split).
FIT_FROM_SECONDS = 0.05
FIT_PASS_SECONDS = 0.5
# Reference draws whose spread the pilot measures: V_ref, what sizes an auto reference.
SPREAD_DRAWS = 4


@dataclasses.dataclass(frozen=True)
class Pilot:
    """What the pilot measured: seconds, and the reference draws' spread.

    Attributes:
        draw: seconds a draw of each cell takes (a cell whose draw failed is absent: it
            fails again when it runs, and says why).
        step: seconds an adaptation step of the costliest adapted cell (NaN: none timed).
        stepped: that cell.
        reference: per batch size whose reference is drawn, the seconds an RLOO draw takes
            and :math:`V_{ref} = \\mathrm{tr}\\,\\Sigma_{ref}` of one draw (NaN if unmeasured).
        seconds: the pilot's own time.
    """

    draw: Mapping[Cell, float]
    step: float
    stepped: Cell | None
    reference: Mapping[int, tuple[float, float]]
    seconds: float


def run_pilot(
    task: Task,
    cells: Sequence[Cell],
    *,
    reps: int,
    warmup: int,
    threads: int,
    reference_k: int,
    sampled: Sequence[int],
    reference_pass: int,
) -> Pilot:
    """Time ``cells`` (a draw each, frozen as they are measured), an adaptation step of the
    costliest adapted one (when ``warmup`` adapts), and an RLOO(``reference_k``) draw of the
    reference at each batch size in ``sampled``, in passes of at most ``reference_pass``."""
    start = perf_counter()
    with pinned_threads(threads):
        draw = {}
        for cell in cells:
            estimator = E.get(cell.estimator, **cell.options())
            most = max(1, min(draws_per_pass(task, estimator, reps, cell.batch_size), reps // 4))
            timed = _attempt(task, estimator, cell.batch_size, most, TIMED_DRAWS, fit=True)
            if timed is not None:
                draw[cell] = timed[0]
        step, stepped = _step_seconds(task, cells, warmup)
        reference = {}
        for batch_size in sampled:
            estimator = E.get("rloo", k=reference_k)
            most = min(reference_pass, draws_per_pass(task, estimator, reference_pass, batch_size))
            timed = _attempt(task, estimator, batch_size, most, SPREAD_DRAWS)
            if timed is not None:
                seconds, draws = timed
                spread = draws.to(torch.float64).var(0).sum() if len(draws) > 1 else math.nan
                reference[batch_size] = (seconds, float(spread))
    return Pilot(draw, step, stepped, reference, perf_counter() - start)


def _attempt(
    task: Task, estimator: E.Estimator, batch_size: int, most: int, least: int, fit: bool = False
) -> tuple[float, torch.Tensor] | None:
    """Seconds a draw takes in passes of up to ``most`` draws, and the draws of the untimed and
    the last pass (None where the task fails: its cells fail again, and say why). An untimed
    pass first (warm-up, tracing), then passes of ``least`` draws or more, doubling while a
    pass is shorter than :data:`TIMED_PASS_SECONDS`. A stateful estimator is timed frozen,
    as its cells draw."""
    try:
        return _draw_seconds(task, estimator, batch_size, most, least, fit)
    except Exception:  # a loss that fails here fails its cells, which say why
        return None


def _draw_seconds(
    task: Task, estimator: E.Estimator, batch_size: int, most: int, least: int, fit: bool
) -> tuple[float, torch.Tensor]:
    generator = torch.Generator(device=task.device).manual_seed(0)
    estimator = adapt(task, estimator, 0, batch_size, generator)
    untimed = one_pass(task, estimator, min(TIMED_DRAWS, most), batch_size, generator)
    size, previous = min(least, most), None
    while True:
        seconds, draws = _timed_pass(task, estimator, size, batch_size, generator)
        if seconds >= TIMED_PASS_SECONDS or size >= most:
            break
        previous, size = (size, seconds), min(2 * size, most)
    if fit and size < most and previous is None and FIT_FROM_SECONDS <= seconds < FIT_PASS_SECONDS:
        # The first pass already took long: it may be mostly its own overhead (IndeCateR's K
        # runs in Python whatever the draws). Passes twice as large separate the two costs;
        # each size is timed twice and the faster kept (another process only adds time).
        smaller = size
        size = min(2 * size, most)
        previous = (
            smaller,
            min(seconds, _timed_pass(task, estimator, smaller, batch_size, generator)[0]),
        )
        seconds = min(
            _timed_pass(task, estimator, size, batch_size, generator)[0] for _ in range(2)
        )
    if previous is None or size >= most:
        return seconds / size, torch.cat([untimed, draws])
    # The cell's passes hold ``most`` draws: its cost per pass (the fit through the last two
    # passes) is shared by more draws than in the pilot's; at most the plain ratio.
    per_draw = max(0.0, (seconds - previous[1]) / (size - previous[0]))
    per_pass = max(0.0, seconds - per_draw * size)
    return min(per_draw + per_pass / most, seconds / size), torch.cat([untimed, draws])


def _timed_pass(
    task: Task, estimator: E.Estimator, size: int, batch_size: int, generator: torch.Generator
) -> tuple[float, torch.Tensor]:
    start = perf_counter()
    draws = one_pass(task, estimator, size, batch_size, generator)
    return perf_counter() - start, draws


def _step_seconds(task: Task, cells: Sequence[Cell], warmup: int) -> tuple[float, Cell | None]:
    """Seconds an adaptation step of the costliest adapted cell takes, timed over
    :data:`TIMED_STEPS` steps after one untimed step (NaN where nothing adapts)."""
    adapted = [c for c in cells if E.info(c.estimator).state is not None]
    if not warmup or not adapted:
        return math.nan, None
    costliest = max(adapted, key=lambda c: (c.batch_size, c.k or 1))
    estimator = E.get(costliest.estimator, **costliest.options())
    generator = torch.Generator(device=task.device).manual_seed(0)
    try:
        adapt(task, estimator, 1, costliest.batch_size, generator)  # warm-up and tracing
        start = perf_counter()
        adapt(task, estimator, TIMED_STEPS, costliest.batch_size, generator)
    except Exception:  # a loss that fails here fails its cells, which say why
        return math.nan, None
    return (perf_counter() - start) / TIMED_STEPS, costliest


def check_warmup_time(pilot: Pilot, cells: Sequence[Cell], warmup: int, limit: float) -> None:
    """Refuse, before any work, a ``warmup`` whose adaptation alone would run for longer than
    ``limit`` seconds (the largest warmup, 2²⁴ steps, is a day for one toy cell), from the
    pilot's timed step of the costliest adapted cell."""
    adapted = [c for c in cells if E.info(c.estimator).state is not None]
    if warmup <= TIMED_STEPS or pilot.stepped is None or not math.isfinite(pilot.step):
        return
    total = pilot.step * warmup * len(adapted)
    if total > limit:
        raise ValueError(
            f"warmup={warmup} would adapt {len(adapted)} cell(s) for about {duration(total)} "
            f"({pilot.step * 1e3:.3g} ms a step, measured on {pilot.stepped.estimator} at "
            f"B={pilot.stepped.batch_size}), above max_warmup_seconds={limit:g}: lower warmup "
            f"(the default {DEFAULT_WARMUP} steps adapt the field's estimators), or raise "
            "max_warmup_seconds (--max-warmup-seconds) to run it"
        )


def duration(seconds: float) -> str:
    """``seconds`` as a person reads a duration: 0.42 s, 42 s, 12 min, 2.1 h."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
