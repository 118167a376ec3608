"""The training loop: many runs as one, each with its own numbers and its own fate.

Runs of one experiment that differ only in seed, learning rate, momentum and temperature τ
train as one loop: every step is one vmapped pass over their stacked models
(:mod:`gvbench.training.stacked`), followed by each run's own update by its own optimizer
(:mod:`gvbench.training.optimizers`), so eight runs cost little more than one where a step is
dispatch overhead. Each run keeps its own data order, its own samples
(:class:`~gvbench.estimators.RunStreams`), its own batch transform's noise (dynamic
binarization: :attr:`~gvbench.training.runs.Run.transform`), its own checkpoint, and its own
fate: a run whose loss or gradient stops being finite is recorded as diverged and left out of
the stack, and the others go on. A run's numbers are those it would have alone, bit for bit.

Estimators whose state trains inside a call (REBAR's and RELAX's control variates, Double
CV's weight, RODEO's Stein network) or that cannot run under vmap train one run per pass,
each run with its own estimator. State read as a constant number within a step (REINFORCE's
running-mean baseline) keeps one estimator per run too, and enters the stack as a tensor
with a row per run; each run's state moves after the step by its own losses alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call
from tqdm.auto import tqdm

from gvbench.estimators import Estimator
from gvbench.estimators.state import EstimatorState
from gvbench.estimators.streams import PoolExhausted
from gvbench.estimators.validation import NonFiniteLogits
from gvbench.training.evaluation import scores
from gvbench.training.optimizers import apply
from gvbench.training.runs import Run, RunState, Steps, TrainingDiverged
from gvbench.training.sgd import gradient_norms
from gvbench.training.stacked import (
    INITIAL_POOL,
    NotVectorisable,
    Spare,
    StackedStep,
    grown_pool,
    stacked_step,
)


def vectorised(estimator: Estimator) -> bool:
    """Whether ``estimator`` trains runs as one (its state can be read as a constant)."""
    if not estimator.info.transforms:
        return False
    try:
        estimator.frozen()
    except TypeError:
        return False
    return True


def per_run_state(estimator: Estimator) -> tuple[str, ...] | None:
    """The options of a :func:`vectorised` estimator that hold state read as one number
    within a step (REINFORCE's baseline): a stack takes them as a tensor with a row per run.
    ``None`` where some state is not a number; then each run trains in a stack of its own."""
    frozen, _ = estimator.frozen()
    keys = tuple(k for k, value in estimator.options.items() if isinstance(value, EstimatorState))
    numbers = all(
        isinstance(frozen.options[key], int | float) and not isinstance(frozen.options[key], bool)
        for key in keys
    )
    return keys if numbers else None


def fit_runs(
    runs: Sequence[Run],
    steps: Steps,
    *,
    progress: bool = True,
    desc: str = "training",
) -> list[dict[str, Any] | TrainingDiverged]:
    """Train ``runs`` as one; per run ``{"rows", "best", "best_score", "initial_score"}`` or the
    :class:`TrainingDiverged` that ended it. A rerun resumes each from its checkpoint."""
    states = [RunState.start(run, steps) for run in runs]
    probe = steps.estimator()
    if not vectorised(probe) or per_run_state(probe) is None:
        groups = [[state] for state in states]
    else:
        # Runs resumed at different steps train apart (a stack moves in lockstep).
        by_step: dict[int, list[RunState]] = {}
        for state in states:
            by_step.setdefault(state.progress.step, []).append(state)
        groups = list(by_step.values())
    fresh = [s for s in states if s.progress.initial is None]
    if fresh:  # the selection figure before any step, e.g. to see how far training went
        for state, score in zip(fresh, scores(fresh, steps), strict=True):
            state.progress.initial = score
    total = sum(steps.steps - s.progress.step for s in states)
    with tqdm(total=total, disable=not progress, desc=desc, unit="run-step") as bar:
        for group in groups:
            if vectorised(probe):
                _fit_vectorised(group, steps, bar)
            else:
                for state in group:
                    _fit_alone(state, steps, bar)
    return [state.result() for state in states]


# -- the vectorised path ------------------------------------------------------------------


def _fit_vectorised(members: list[RunState], steps: Steps, bar: tqdm) -> None:
    live = [m for m in members if m.progress.step < steps.steps]
    if not live:
        return
    spare = Spare(live[0])
    keys = per_run_state(live[0].estimator) or ()
    while live:
        before = _Snapshot(live, spare)
        try:
            batches = [m.batch(steps.batch_size) for m in live]
            step = stacked_step(live, batches, spare, steps, keys)
        except PoolExhausted as short:
            # A pool size follows from the step's needs alone (the same for every run of
            # the group, alone or not), so growing it keeps every run's numbers its own.
            before.restore()
            size = grown_pool(live[0].progress.pool or INITIAL_POOL, short.needed)
            for member in live:
                member.progress.pool = size
            continue
        except NotVectorisable:
            # The estimator cannot run under vmap here (it branches on values, or calls
            # .item()): the same for every run and every step, so each run goes on alone from
            # the state it had before this step, and draws what it would have drawn alone.
            before.restore()
            for member in live:
                _fit_alone(member, steps, bar)
            return
        live = _update(live, step)
        bar.update(len(before.live))
        _evaluate_due(live, steps, bar)
        live = [m for m in live if m.progress.step < steps.steps]


def _update(live: list[RunState], step: StackedStep) -> list[RunState]:
    """Each run's optimizer step and estimator state moved by its own part of ``step``; the runs
    that go on (a run whose loss or gradient is not finite diverges instead)."""
    # Read back once each (on an accelerator, every read waits for the step to finish).
    losses = step.surrogates.mean(1).tolist()
    norms = gradient_norms([[g[r] for g in step.grads.values()] for r in range(len(live))])
    survivors, updates = [], []
    for index, (member, norm) in enumerate(zip(live, norms.tolist(), strict=True)):
        loss = losses[index]
        if not (math.isfinite(loss) and math.isfinite(norm)):
            member.diverge(f"loss {loss:g}, gradient norm {norm:g}")
            continue
        step.moves[index](step.surrogates[index])  # its state (a baseline), by its own losses
        grads = {n: g[index] for n, g in step.grads.items()}
        updates.extend(member.update(grads, norm))
        member.losses.append(loss)
        member.progress.step += 1
        survivors.append(member)
    apply(updates)
    return survivors


class _RunSnapshot(NamedTuple):
    """What drawing a run's batch and pool moves: its generators and its epoch's order."""

    generator: Tensor
    transform_generator: Tensor | None  # None: the run has no batch transform
    order: tuple[int, Tensor] | None

    @classmethod
    def of(cls, member: RunState) -> _RunSnapshot:
        transform = member.transform_generator
        return cls(
            member.generator.get_state(),
            None if transform is None else transform.get_state(),
            member.progress.order,
        )

    def restore(self, member: RunState) -> None:
        member.generator.set_state(self.generator)
        if member.transform_generator is not None and self.transform_generator is not None:
            member.transform_generator.set_state(self.transform_generator)
        member.progress.order = self.order


class _Snapshot:
    """The generators and data orders of a group before a step, to undo a step that failed."""

    def __init__(self, live: list[RunState], spare: Spare) -> None:
        self.live, self.spare = live, spare
        self.runs = [_RunSnapshot.of(m) for m in live]
        self.spare_state = spare.generator.get_state()

    def restore(self) -> None:
        """As if the step's batches (and their transforms) and pools had not been drawn."""
        for member, snapshot in zip(self.live, self.runs, strict=True):
            snapshot.restore(member)
        self.spare.generator.set_state(self.spare_state)


# -- one run per pass ---------------------------------------------------------------------


def _fit_alone(member: RunState, steps: Steps, bar: tqdm) -> None:
    """A run whose estimator cannot be vectorised: plain forward and backward passes."""
    while member.progress.step < steps.steps:
        try:
            grads, loss = _plain_step(member, steps)
        except NonFiniteLogits as error:
            member.diverge(f"the model's logits stopped being finite ({error})")
            return
        norm = gradient_norms([list(grads.values())]).item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            member.diverge(f"loss {loss:g}, gradient norm {norm:g}")
            return
        apply(member.update(grads, norm))
        member.losses.append(loss)
        member.progress.step += 1
        bar.update()
        _evaluate_due([member], steps, bar)


def _plain_step(member: RunState, steps: Steps) -> tuple[dict[str, Tensor], float]:
    """One run's gradient and mean surrogate loss from one forward and backward pass."""
    batch = member.batch(steps.batch_size)
    leaves = {n: p.detach().requires_grad_() for n, p in member.params.items()}
    state = {**leaves, **{n: b.clone() for n, b in member.buffers.items()}}

    def objective(sample: Any) -> Tensor:
        output = functional_call(member.run.model, state, batch, {"sample": sample})
        return steps.loss(output, *batch)

    surrogate = member.tempered()(objective, generator=member.generator)
    grads = torch.autograd.grad(surrogate.mean(), list(leaves.values()), allow_unused=True)
    return {
        n: g if g is not None else torch.zeros_like(leaves[n])
        for n, g in zip(leaves, grads, strict=True)
    }, float(surrogate.detach().mean())


# -- evaluation ---------------------------------------------------------------------------


def _evaluate_due(live: list[RunState], steps: Steps, bar: tqdm) -> None:
    """Score, record and checkpoint the runs at an evaluation step."""
    due = [m for m in live if _due(m, steps)]
    if not due:
        return
    found = scores(due, steps)
    for member, score in zip(due, found, strict=True):
        member.record(_evaluate_row(member, steps, score))
        member.save()
    best = max(found) if steps.higher_is_better else min(found)
    bar.set_postfix({steps.selection: f"{best:.4g}"})


def _due(state: RunState, steps: Steps) -> bool:
    step = state.progress.step
    return step % steps.eval_every == 0 or step == steps.steps


def _evaluate_row(state: RunState, steps: Steps, score: float) -> dict[str, float]:
    """The curve's row at an evaluation: mean training loss since the last, the score, and
    the gradient's variance where it is measured at this step."""
    step = state.progress.step
    row = {
        "step": step,
        "train_loss": sum(state.losses) / len(state.losses),
        steps.selection: score,
        "selection": score,
    }
    state.losses.clear()
    if state.run.tau_schedule is not None:
        row["tau"] = state.tau  # the τ the next step takes, and the variance is measured at
    if steps.variance is not None and steps.variance_every:
        if step % steps.variance_every == 0 or step == steps.steps:
            # Its own generator, seeded by the run and the step: measuring takes nothing from
            # the training stream, so curves with and without it train alike.
            seed = np.random.SeedSequence([state.run.seed, step]).generate_state(1)
            generator = torch.Generator(device=state.generator.device).manual_seed(int(seed[0]))
            v, se = steps.variance(state.run, state.module(), state.tempered(), generator)
            row["gradient_variance"], row["gradient_variance_se"] = v, se
    return row
