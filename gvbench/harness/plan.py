"""A sweep's plan, said in one line before any work: its cells and draws, its reference and
its adaptation, and about how long each takes (from the pilot of
:mod:`gvbench.harness.warmup`); fitted to a time budget where one is given; and the automatic
reference that would run for too long, asked about or refused before it is drawn.

Without a budget the plan changes nothing: it is said, and the sweep runs as specified.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence

import xarray as xr

import gvbench.estimators as E
from gvbench.harness import store
from gvbench.harness.cell import Cell
from gvbench.harness.reference import (
    FIRST_STAGE,
    LONG_REFERENCE_SECONDS,
    NOISE_FRACTION,
    PILOT_DRAWS,
    expected_draws,
)
from gvbench.harness.spec import SweepSpec
from gvbench.harness.warmup import Pilot, duration, run_pilot

# Of the time a budget leaves after the work that does not shrink (the cells' draws, a fixed
# reference, the pilots), the adaptation and an auto reference each get at least this share
# when both want more; either takes what the other leaves.
SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sweep computes, and about how long it takes.

    Attributes:
        cells: the cells to compute (applicable and not yet finished).
        reps: draws per cell.
        warmup: adaptation steps of a stateful estimator (fitted to the budget).
        requested_warmup: the steps asked for.
        adaptations: runs of that adaptation: one per stateful cell, and one more per
            stateful cell whose pilot sizes an auto reference.
        references: per batch size: ``"exact"``, ``"saved"`` (beside the results),
            ``"fixed"`` (``reference_reps`` draws) or ``"auto"``.
        caps: the most draws of each auto reference (the task's, or fitted to the budget).
        reference_reps, reference_k: the reference's size (or ``"auto"``) and K.
        pilot: what the pilot measured.
        budget: the time budget in seconds, or None.
        confirm: asked, with the estimate, before an auto reference that would run long
            (None: it is refused).
    """

    cells: tuple[Cell, ...]
    reps: int
    warmup: int
    requested_warmup: int
    adaptations: int
    references: Mapping[int, str]
    caps: Mapping[int, int]
    reference_reps: int | str
    reference_k: int
    pilot: Pilot
    budget: float | None
    confirm: Callable[[str], bool] | None = None

    def reference_draws(self, batch_size: int) -> int:
        """The draws of the reference at ``batch_size`` (auto: at most)."""
        kind = self.references[batch_size]
        if kind == "fixed":
            return int(self.reference_reps)
        return self.caps[batch_size] if kind == "auto" else 0

    def seconds(self) -> dict[str, float]:
        """About how long each part takes: the cells' draws, the reference (with the pilot
        that sizes an auto one; at most, for auto), the adaptation, and the pilot."""
        pilot, auto = self.pilot, {b for b, kind in self.references.items() if kind == "auto"}
        drawn = {cell: pilot.draw.get(cell, 0.0) for cell in self.cells}
        sizing = sum(PILOT_DRAWS * drawn[c] for c in self.cells if c.batch_size in auto)
        reference = sum(
            self.reference_draws(b) * pilot.reference.get(b, (0.0, math.nan))[0]
            for b in self.references
        )
        step = pilot.step if math.isfinite(pilot.step) else 0.0
        return {
            "cells": self.reps * sum(drawn.values()),
            "reference": sizing + reference,
            "adaptation": step * self.warmup * self.adaptations,
            "pilot": pilot.seconds,
        }

    def describe(self) -> str:
        """The plan in one line: what is computed, and about how long it takes."""
        parts = [f"{len(self.cells)} cell(s) × {self.reps} draws"]
        parts.append("reference " + " and ".join(map(self._reference, sorted(self.references))))
        if self.adaptations and self.requested_warmup:
            fitted = (
                f" (of {self.requested_warmup})" if self.warmup != self.requested_warmup else ""
            )
            parts.append(f"{self.warmup} steps{fitted} × {self.adaptations} adaptation(s)")
        # An auto reference draws its first stage, and more as the cells' resolution needs.
        fewest = {b: min(cap, FIRST_STAGE) for b, cap in self.caps.items()}
        low, high = dataclasses.replace(self, caps=fewest).seconds(), self.seconds()
        parts.append(
            f"about {_span(sum(low.values()), sum(high.values()))} (cells "
            f"{duration(high['cells'])}, reference {_span(low['reference'], high['reference'])}"
            f", adaptation {duration(high['adaptation'])}, pilot {duration(high['pilot'])})"
        )
        within = "" if self.budget is None else f" within time_budget={self.budget:g} s"
        return f"plan{within}: " + "; ".join(parts)

    def _reference(self, batch_size: int) -> str:
        kind, k = self.references[batch_size], self.reference_k
        if kind in ("exact", "saved"):
            return f"at B={batch_size} {kind}"
        draws = self.reference_draws(batch_size)
        if kind == "fixed":
            return f"at B={batch_size} fixed ({draws} RLOO draws, k={k})"
        first = min(draws, FIRST_STAGE)
        counts = f"{draws}" if first == draws else f"{first} to {draws}"
        variance = self.pilot.reference.get(batch_size, (0.0, math.nan))[1]
        noise = ""
        if self.budget is not None and math.isfinite(variance):
            noise = f"; its noise V_ref/N_ref at least about {variance / draws:.2g}"
        return f"at B={batch_size} auto ({counts} RLOO draws, k={k}{noise})"

    def check_reference(self, batch_size: int, target: float | None) -> None:
        """Ask (:attr:`confirm`, with the estimate) or refuse, before it is drawn, an auto
        reference at ``batch_size`` whose noise ``target`` would take longer than
        :data:`~gvbench.harness.reference.LONG_REFERENCE_SECONDS` to reach (a time budget
        has sized it: never asked)."""
        if self.budget is not None or batch_size not in self.pilot.reference:
            return
        seconds, variance = self.pilot.reference[batch_size]
        cap = self.caps[batch_size]
        if target is None:
            draws = cap
        elif math.isfinite(variance):
            draws = expected_draws(variance, target, cap)
        else:
            return
        if draws * seconds <= LONG_REFERENCE_SECONDS:
            return
        goal = "" if target is None else f" to bring its noise to {target:.3g}"
        message = (
            f"the automatic reference at B={batch_size} would take about "
            f"{duration(draws * seconds)}: {draws} RLOO draws (k={self.reference_k}) of "
            f"{seconds:.3g} s each{goal} ({NOISE_FRACTION:g} × the smallest bias² a cell "
            f"resolves), above {duration(LONG_REFERENCE_SECONDS)}: pass reference_reps=N "
            "(--reference-reps N) for a reference of N draws, or time_budget=SECONDS "
            "(--time-budget SECONDS) to size it to fit"
        )
        if self.confirm is None or not self.confirm(message):
            raise ValueError(message)


def _span(low: float, high: float) -> str:
    """``low to high`` as durations, or one where they read the same."""
    shown = duration(low), duration(high)
    return shown[1] if shown[0] == shown[1] else f"{shown[0]} to {shown[1]}"


def plan_sweep(
    spec: SweepSpec,
    cells: Sequence[Cell],
    batch_sizes: Collection[int],
    saved: Collection[int] = (),
    resumed: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> Plan:
    """The plan of computing ``cells`` (applicable, not yet finished) and the references at
    ``batch_sizes`` (those in ``saved`` are read back), from a pilot; with a time budget, the
    warm-up (unless ``resumed``: its file fixed it) and the auto references fitted to it.
    ``confirm`` is asked before an auto reference that would run long (see
    :meth:`Plan.check_reference`)."""
    task = spec.task
    references = {}
    for b in sorted(batch_sizes):
        if task.exact(b):
            references[b] = "exact"
        elif b in saved:
            references[b] = "saved"
        else:
            references[b] = "auto" if spec.reference_reps == "auto" else "fixed"
    auto = [b for b, kind in references.items() if kind == "auto"]
    pilot = run_pilot(
        task,
        cells,
        reps=spec.reps,
        warmup=spec.warmup,
        threads=spec.threads_per_cell,
        reference_k=spec.reference_k,
        sampled=[b for b, kind in references.items() if kind in ("auto", "fixed")],
        reference_pass=FIRST_STAGE if spec.reference_reps == "auto" else spec.reference_reps,
    )
    adapted = [c for c in cells if E.info(c.estimator).state is not None]
    # A saved reference that cannot be read back is drawn as an auto one would be.
    drawn = [b for b, kind in references.items() if kind != "exact"]
    caps = dict.fromkeys(drawn, task.reference_reps) if spec.reference_reps == "auto" else {}
    plan = Plan(
        cells=tuple(cells),
        reps=spec.reps,
        warmup=spec.warmup,
        requested_warmup=spec.warmup,
        adaptations=len(adapted) + sum(c.batch_size in auto for c in adapted),
        references=references,
        caps=caps,
        reference_reps=spec.reference_reps,
        reference_k=spec.reference_k,
        pilot=pilot,
        budget=spec.time_budget,
        confirm=confirm,
    )
    return plan if spec.time_budget is None else _fitted(plan, spec.time_budget, resumed)


def _fitted(plan: Plan, budget: float, resumed: bool) -> Plan:
    """``plan`` within ``budget`` seconds: the time left after the work that does not shrink
    goes to the adaptation and the auto references, each at least :data:`SHARE` of it when
    both want more, either taking what the other leaves; each shrinks in proportion."""
    wanted = plan.seconds()
    bare = dataclasses.replace(plan, warmup=0, caps=dict.fromkeys(plan.caps, 0)).seconds()
    adaptation = 0.0 if resumed else wanted["adaptation"]
    fixed = sum(bare.values()) + wanted["adaptation"] - adaptation
    left = budget - fixed
    if left <= 0:
        raise ValueError(
            f"time_budget={budget:g} s does not cover the work that does not shrink, about "
            f"{duration(fixed)} (the cells' draws {duration(bare['cells'])}, the pilots and a "
            f"fixed reference {duration(fixed - bare['cells'])}): lower reps, or raise "
            "time_budget"
        )
    reference = wanted["reference"] - bare["reference"]
    for_reference = min(reference, max(SHARE * left, left - adaptation))
    for_adaptation = min(adaptation, left - for_reference)
    warmup = plan.warmup
    if for_adaptation < adaptation:
        warmup = int(plan.warmup * for_adaptation / adaptation)
    caps = dict(plan.caps)
    if for_reference < reference:
        caps = {b: max(2, int(cap * for_reference / reference)) for b, cap in plan.caps.items()}
    return dataclasses.replace(plan, warmup=warmup, caps=caps)


def resumed_warmup(spec: SweepSpec, path: str | os.PathLike[str]) -> SweepSpec:
    """``spec`` at the warm-up its file at ``path`` was started with, where a time budget
    fitted it then (its finished cells were adapted so); else ``spec`` as it is."""
    if spec.time_budget is None or not os.path.exists(path):
        return spec
    try:
        with xr.open_dataset(path, engine=store.ENGINE) as stored:
            warmup = stored.attrs.get("warmup")
    except Exception:  # resuming says, in one line, what is wrong with the file
        return spec
    return spec if warmup is None else dataclasses.replace(spec, warmup=int(warmup))


__all__ = ["Plan", "plan_sweep", "resumed_warmup"]
