r"""Many training runs as one: SGD over parameters stacked on a run axis, under ``vmap``.

Runs of one experiment that differ only in seed, learning rate, momentum and temperature τ
train as one loop: their parameters are stacked (``torch.func.stack_module_state``) and
every step is a ``torch.func.vmap`` of the run's loss over the stack and one backward pass
through it (run r's gradient is that of its own loss: the runs share no parameter), so
eight runs cost little more than one where a step is dispatch overhead (ListOps at batch
10). Each run keeps its own data order, its own samples
(:class:`~gvbench.estimators.RunStreams`), its own checkpoint, and its own fate: a run
whose loss or gradient stops being finite is recorded as diverged and left out of the
stack, and the others go on.

**A run's numbers do not depend on the runs it trains with**, bit for bit:

- noise: each run draws from its own generator (:mod:`gvbench.estimators.streams`);
- reductions: only over one run's values (its loss, its gradient norm);
- kernels: torch's batched matrix product gives a matrix the same bits at any batch count
  of two or more, but takes another kernel for a batch of one; element-wise kernels finish a
  tensor's last few elements outside their vector loop. So every group carries one *spare*
  run at the end — the first run's initial parameters on the first run's batch, never
  updated, its numbers thrown away: a run alone is a batch of two, and no real run is ever
  last. The vectorised path is taken for one run too. The spare covers a tail only as long
  as its own tensor: a per-run tensor shorter than the vector loop (16 float32 elements with
  AVX2) through an op that rounds differently there (sigmoid, softplus, pow) can still take
  other bits in a stack of another size.

Estimators whose state trains inside a call (REBAR's and RELAX's control variates, Double
CV's weight, RODEO's Stein network) or that cannot run under vmap train one run per pass,
each run with its own estimator. State read as a constant number within a step (REINFORCE's
running-mean baseline) keeps one estimator per run too, and enters the stack as a tensor
with a row per run, like τ; each run's state moves after the step by its own losses alone.

SGD with momentum, per run: :math:`b \leftarrow \mu b + g,\ \theta \leftarrow \theta - \eta b`
(``torch.optim.SGD``'s rule, :math:`b_0 = g_0`), after clipping the run's gradient to norm 5.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from gvbench.atomic_files import save_torch
from gvbench.estimators import Estimator, RunStream, RunStreams
from gvbench.estimators.streams import PoolExhausted
from gvbench.estimators.validation import NonFiniteLogits, set_validate_args, validate_args
from gvbench.training import CheckpointError, TrainingDiverged, checkpoint_digest, read_checkpoint

MAX_GRADIENT_NORM = 5.0
# Uniforms per run in a step's first pool (it doubles until a step's needs fit).
INITIAL_POOL = 4096
# Examples per vmapped evaluation pass (all runs at once).
EVALUATION_CHUNK = 500


@dataclasses.dataclass
class Run:
    """One run of a group: its identity, its optimiser settings and its data.

    Args:
        directory: where its ``checkpoint.pt`` lives.
        config: its JSON-able configuration (a checkpoint of another is refused).
        seed: seeds its generator (data order and samples).
        lr, momentum: its SGD settings.
        tau: its estimator's temperature (``None`` where the estimator takes none). Under
            vmap each run's τ is a tensor, float64 where τ > 1 or the parameters are float64
            (GR-MCK's working precision, read from it), float32 otherwise; runs on both sides
            of τ = 1 do not train as one.
        model: its freshly initialised module (the template every run shares in shape).
        train, valid: its input tensors (first dimension: examples), as the module takes them.
    """

    directory: Path
    config: Mapping[str, Any]
    seed: int
    lr: float
    momentum: float
    model: nn.Module
    train: tuple[Tensor, ...]
    valid: tuple[Tensor, ...]
    tau: float | None = None


@dataclasses.dataclass
class Steps:
    """What every run of a group shares: the estimator, the loss and the schedule.

    Args:
        estimator: ``estimator(**options)`` a fresh estimator, ``options`` overriding its
            hyper-parameters (a run's τ); one is made per run.
        loss: ``loss(output, *inputs) -> (B,)`` per-example training losses.
        score: ``score(output, *inputs) -> (B,)`` per-example validation scores; their mean
            is the run's selection figure.
        evaluation_sampler: ``evaluation_sampler(generator)`` → the sampler used to score
            (greedy, or hard samples from a fixed-seed generator).
        variance: ``variance(run, model, estimator, generator) -> (V, se)``, the trace
            variance of the run's gradient at its current parameters (``model``) by its
            estimator as adapted so far, or ``None``.
    """

    estimator: Callable[..., Estimator]
    loss: Callable[..., Tensor]
    score: Callable[..., Tensor]
    evaluation_sampler: Callable[[Any], Any]
    steps: int
    batch_size: int
    eval_every: int
    variance: Callable[[Run, nn.Module, Estimator, torch.Generator], tuple[float, float]] | None = (
        None
    )
    variance_every: int = 0
    higher_is_better: bool = True
    selection: str = "selection"


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
    keys = tuple(key for key, value in estimator.options.items() if hasattr(value, "frozen"))
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
    states = [_RunState.start(run, steps) for run in runs]
    results: list[dict[str, Any] | TrainingDiverged | None] = [None] * len(runs)
    probe = steps.estimator()
    if not vectorised(probe) or per_run_state(probe) is None:
        groups = [[i] for i in range(len(runs))]
    else:
        # Runs resumed at different steps train apart (a stack moves in lockstep).
        by_step: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            by_step.setdefault(state.fit["step"], []).append(i)
        groups = list(by_step.values())
    fresh = [s for s in states if "initial" not in s.fit]
    if fresh:  # the selection figure before any step, e.g. to see how far training went
        for state, score in zip(fresh, _scores(fresh, steps, fresh[0].run.model), strict=True):
            state.fit["initial"] = score
    total = sum(steps.steps - s.fit["step"] for s in states)
    with tqdm(total=total, disable=not progress, desc=desc, unit="run-step") as bar:
        for group in groups:
            members = [states[i] for i in group]
            if vectorised(probe):
                _fit_vectorised(members, steps, bar)
            else:
                for state in members:
                    _fit_alone(state, steps, bar)
            for i, state in zip(group, members, strict=True):
                results[i] = state.result()
    return results  # type: ignore[return-value]


class _RunState:
    """A run's parameters, momentum, generator, estimator and curves between steps."""

    def __init__(self, run: Run, steps: Steps) -> None:
        self.run = run
        self.path = Path(run.directory) / "checkpoint.pt"
        self.params = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        self.buffers = {n: b.detach().clone() for n, b in run.model.named_buffers()}
        self.momentum = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.generator = torch.Generator(device=_device(run.model)).manual_seed(run.seed)
        self.estimator = steps.estimator(**({} if run.tau is None else {"tau": run.tau}))
        self.sign = 1.0 if steps.higher_is_better else -1.0
        self.fit: dict[str, Any] = {
            "step": 0,
            "rows": [],
            "best": None,
            "best_score": -np.inf,
            "data": {},
        }
        self.losses: list[float] = []
        self.diverged: TrainingDiverged | None = None

    @classmethod
    def start(cls, run: Run, steps: Steps) -> _RunState:
        state = cls(run, steps)
        if state.path.exists():
            state.resume()
        return state

    def resume(self) -> None:
        saved = read_checkpoint(self.path, self.run.config, self.params)
        optimizer = saved["optimizer"]
        momentum = optimizer.get("momentum") if isinstance(optimizer, dict) else None
        if not isinstance(momentum, dict) or set(momentum) != set(self.params):
            raise CheckpointError(
                f"{self.path} was written by an older gvbench (no per-run momentum); remove "
                "it to train this run afresh, or choose another folder"
            )
        device = _device(self.run.model)
        self.params = {n: v.to(device) for n, v in saved["params"].items()}
        self.momentum = {n: v.to(device) for n, v in momentum.items()}
        self.generator.set_state(saved["generator"])
        self.estimator.load_state_dict(saved.get("estimator", {}))
        self.fit = saved["state"]

    # -- one step's bookkeeping ------------------------------------------------------------
    def batch(self, batch_size: int) -> tuple[Tensor, ...]:
        """The run's next batch: shuffled epochs from its own generator."""
        size = len(self.run.train[0])
        per_epoch = max(1, size // batch_size)
        epoch, position = divmod(self.fit["step"], per_epoch)
        order = self.fit["data"].get("order")
        if order is None or order[0] != epoch:
            permutation = torch.randperm(
                size, generator=self.generator, device=self.generator.device
            )
            order = self.fit["data"]["order"] = (epoch, permutation.cpu())
        index = order[1][position * batch_size : (position + 1) * batch_size]
        return tuple(x[index.to(x.device)] for x in self.run.train)

    def diverge(self, message: str) -> None:
        self.diverged = TrainingDiverged(
            f"{Path(self.run.directory).name}: training diverged at step {self.fit['step'] + 1}: "
            f"{message} (lr {self.run.lr:g}, momentum {self.run.momentum:g}); the last "
            "checkpoint is kept: lower the learning rate or the momentum"
        )

    def record(self, row: dict[str, float]) -> None:
        self.fit["rows"].append(row)
        if self.sign * row["selection"] > self.fit["best_score"]:
            self.fit["best_score"] = self.sign * row["selection"]
            self.fit["best"] = {
                "step": self.fit["step"],
                "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            }

    def save(self) -> None:
        params = {k: v.detach().cpu() for k, v in self.params.items()}
        save_torch(
            {
                "config": dict(self.run.config),
                "digest": checkpoint_digest(self.run.config, params, self.fit["step"]),
                "params": params,
                "optimizer": {"momentum": {k: v.cpu() for k, v in self.momentum.items()}},
                "generator": self.generator.get_state(),
                "estimator": self.estimator.state_dict(),
                "state": self.fit,
            },
            self.path,
        )

    def module(self) -> nn.Module:
        """A copy of the run's model holding its current parameters."""
        model = copy.deepcopy(self.run.model)
        with torch.no_grad():
            for name, value in model.named_parameters():
                value.copy_(self.params[name])
        return model

    def result(self) -> dict[str, Any] | TrainingDiverged:
        if self.diverged is not None:
            return self.diverged
        return {
            "rows": self.fit["rows"],
            "best": self.fit["best"],
            "best_score": self.sign * self.fit["best_score"],
            "initial_score": self.fit["initial"],
        }


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _evaluate_row(state: _RunState, steps: Steps, score: float) -> dict[str, float]:
    row = {
        "step": state.fit["step"],
        "train_loss": sum(state.losses) / len(state.losses),
        steps.selection: score,
        "selection": score,
    }
    state.losses.clear()
    if steps.variance is not None and steps.variance_every:
        if state.fit["step"] % steps.variance_every == 0 or state.fit["step"] == steps.steps:
            # Its own generator, seeded by the run and the step: measuring takes nothing from
            # the training stream, so curves with and without it train alike.
            seed = np.random.SeedSequence([state.run.seed, state.fit["step"]]).generate_state(1)
            generator = torch.Generator(device=state.generator.device).manual_seed(int(seed[0]))
            v, se = steps.variance(state.run, state.module(), state.estimator, generator)
            row["gradient_variance"], row["gradient_variance_se"] = v, se
    return row


def _due(state: _RunState, steps: Steps) -> bool:
    step = state.fit["step"]
    return step % steps.eval_every == 0 or step == steps.steps


# -- the vectorised path ------------------------------------------------------------------


def _fit_vectorised(members: list[_RunState], steps: Steps, bar: tqdm) -> None:
    live = [m for m in members if m.fit["step"] < steps.steps]
    if not live:
        return
    template = live[0].run.model
    first = live[0]
    spare = _Spare(first)
    keys = per_run_state(first.estimator) or ()
    while live:
        before = _Snapshot(live, spare)
        try:
            batches = [m.batch(steps.batch_size) for m in live]
            grads, surrogates, moves = _vectorised_step(live, batches, spare, steps, template, keys)
        except PoolExhausted as short:
            # A pool size follows from the step's needs alone (the same for every run of
            # the group, alone or not), so growing it keeps every run's numbers its own.
            before.restore()
            size = _grown(live[0].fit["data"].get("pool", INITIAL_POOL), short.needed)
            for member in live:
                member.fit["data"]["pool"] = size
            continue
        except _NotVectorisable:
            # The estimator cannot run under vmap here (it branches on values, or calls
            # .item()): the same for every run and every step, so each run goes on alone from
            # the state it had before this step, and draws what it would have drawn alone.
            before.restore()
            for member in live:
                _fit_alone(member, steps, bar)
            return
        # Read back once each (on an accelerator, every read waits for the step to finish).
        losses = surrogates.mean(1).tolist()
        norms = _norms([[g[r] for g in grads.values()] for r in range(len(live))]).tolist()
        survivors, updates = [], []
        for index, member in enumerate(live):
            loss, norm = losses[index], norms[index]
            if not (math.isfinite(loss) and math.isfinite(norm)):
                member.diverge(f"loss {loss:g}, gradient norm {norm:g}")
                continue
            moves[index](surrogates[index])  # its state (a baseline), by its own losses
            clip = min(1.0, MAX_GRADIENT_NORM / (norm + 1e-6))
            updates.append((member, {n: g[index] for n, g in grads.items()}, clip))
            member.losses.append(loss)
            member.fit["step"] += 1
            survivors.append(member)
        _sgd(updates)
        bar.update(len(live))
        live = survivors
        _evaluate_due(live, steps, template, bar)
        live = [m for m in live if m.fit["step"] < steps.steps]


class _Snapshot:
    """The generators and data orders of a group before a step, to undo a step that failed."""

    def __init__(self, live: list[_RunState], spare: _Spare) -> None:
        self.live, self.spare = live, spare
        self.states = [(m.generator.get_state(), m.fit["data"].get("order")) for m in live]
        self.spare_state = spare.generator.get_state()

    def restore(self) -> None:
        """As if the step's batches and pools had not been drawn."""
        for member, (state, order) in zip(self.live, self.states, strict=True):
            member.generator.set_state(state)
            member.fit["data"]["order"] = order
        self.spare.generator.set_state(self.spare_state)


class _NotVectorisable(Exception):
    """vmap could not run the estimator on the model."""


class _Spare:
    """The spare run at the end of every stack (see the module's docstring)."""

    def __init__(self, first: _RunState) -> None:
        self.params = {n: p.clone() for n, p in first.params.items()}
        self.buffers = {n: b.clone() for n, b in first.buffers.items()}
        self.generator = torch.Generator(device=first.generator.device).manual_seed(0)


def _stack(values: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    return {name: torch.stack([v[name] for v in values]) for name in values[0]}


def _vectorised_step(
    live: list[_RunState],
    batches: list[tuple[Tensor, ...]],
    spare: _Spare,
    steps: Steps,
    template: nn.Module,
    keys: Sequence[str] = (),
) -> tuple[dict[str, Tensor], Tensor, list[Callable[[Tensor], None]]]:
    """Every live run's gradient and per-example surrogate losses, the spare's dropped, and
    the update that moves each run's state after the step. ``keys``: the estimator's options
    read per run (:func:`per_run_state`)."""
    params = _stack([*(m.params for m in live), spare.params])
    buffers = _stack([*(m.buffers for m in live), spare.buffers]) if spare.buffers else {}
    inputs = [torch.stack([*column, column[0]]) for column in zip(*batches, strict=True)]
    streams = RunStreams([*(m.generator for m in live), spare.generator])
    pools = streams.pools(max(m.fit["data"].get("pool", INITIAL_POOL) for m in live))
    taus = _temperatures(live, params)
    frozen = [m.estimator.frozen() for m in live]
    states = _states([e.options for e, _ in frozen], keys, live[0].generator.device)
    estimator = frozen[0][0]

    def mean_loss(
        p: dict[str, Tensor],
        b: dict[str, Tensor],
        pool: Tensor,
        tau: Tensor,
        state: dict[str, Tensor],
        *batch: Tensor,
    ) -> tuple[Tensor, Tensor]:
        def objective(sample: Any) -> Tensor:
            return steps.loss(
                functional_call(template, {**p, **b}, batch, {"sample": sample}), *batch
            )

        options = {**estimator.options, **state}
        if live[0].run.tau is not None:
            options["tau"] = tau
        run_estimator = dataclasses.replace(estimator, options=options)
        surrogate = run_estimator(objective, generator=RunStream(pool))
        return surrogate.mean(), surrogate.detach()

    checking = validate_args()
    set_validate_args(False)  # value checks are data-dependent control flow under vmap
    # vmap of the forward pass only, and one ordinary backward pass through the batched ops:
    # run r's gradient is d(Σ_s mean_s)/dθ_r = d mean_r/dθ_r exactly (the runs share no
    # parameter). Plain autograd over the stacked tensors, rather than a grad transform
    # wrapping every op under vmap, takes a fifth off a ListOps step.
    leaves = {n: p.requires_grad_() for n, p in params.items()}
    try:
        with torch.enable_grad():
            means, surrogates = vmap(mean_loss, randomness="error")(
                leaves, buffers, pools, taus, states, *inputs
            )
            found = torch.autograd.grad(means.sum(), list(leaves.values()), allow_unused=True)
        grads = {
            n: g if g is not None else torch.zeros_like(leaves[n])
            for n, g in zip(leaves, found, strict=True)
        }
    except PoolExhausted:
        raise
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
        if "vmap" in str(error) or "functorch" in str(error) or "batching rule" in str(error):
            raise _NotVectorisable(str(error)) from error
        raise
    finally:
        set_validate_args(checking)
    live_grads = {n: g[: len(live)] for n, g in grads.items()}
    return live_grads, surrogates[: len(live)], [move for _, move in frozen]


def _states(
    options: Sequence[Mapping[str, Any]], keys: Sequence[str], device: torch.device
) -> dict[str, Tensor]:
    """Each run's state read as a number for this step (see :func:`per_run_state`), the
    spare's (the first run's) last, in float64: the estimator rounds it to its loss's dtype
    once, as it rounds a number."""
    return {
        key: torch.tensor(
            [*(run[key] for run in options), options[0][key]], dtype=torch.float64, device=device
        )
        for key in keys
    }


def _temperatures(live: list[_RunState], params: Mapping[str, Tensor]) -> Tensor:
    """Each run's τ, the spare's (the first run's) last, in the precision it asks for (see
    :class:`Run`); zeros where the estimator takes no τ."""
    taus = [m.run.tau for m in live]
    device = live[0].generator.device
    if taus[0] is None:
        return torch.zeros(len(live) + 1, device=device)
    wide = any(p.dtype == torch.float64 for p in params.values()) or taus[0] > 1.0
    dtype = torch.float64 if wide else torch.float32
    return torch.tensor([*taus, taus[0]], dtype=dtype, device=device)


def _evaluate_due(live: list[_RunState], steps: Steps, template: nn.Module, bar: tqdm) -> None:
    """Score, record and checkpoint the runs at an evaluation step."""
    due = [m for m in live if _due(m, steps)]
    if not due:
        return
    scores = _scores(due, steps, template)
    for member, score in zip(due, scores, strict=True):
        member.record(_evaluate_row(member, steps, score))
        member.save()
    best = max(scores) if steps.higher_is_better else min(scores)
    bar.set_postfix({steps.selection: f"{best:.4g}"})


def _norms(runs: Sequence[Sequence[Tensor]]) -> Tensor:
    """The Euclidean norm of each run's gradient (its tensors), in float64, read where they lie.

    Each tensor is reduced on its own, whatever its strides (a weight's gradient comes back
    from the stacked backward pass transposed within its run): flattening the stack first
    copied every gradient twice, a float64 copy on top of a transposing one, and cost more
    than the SGD update (8 VAE runs of hidden 256: 33 ms a step against 1.8 ms). A run's
    slice has the same strides at any stack size, so its norm has the same bits.
    """
    sizes = [len(tensors) for tensors in runs]
    flat = torch._foreach_norm([g for tensors in runs for g in tensors], 2, dtype=torch.float64)
    norms, start = [], 0
    for size in sizes:
        norms.append(torch.linalg.vector_norm(torch.stack(flat[start : start + size])))
        start += size
    return torch.stack(norms)


def _sgd(
    updates: Sequence[tuple[_RunState, Mapping[str, Tensor], float]], foreach: bool | None = None
) -> None:
    """One SGD-with-momentum step of each run, its gradient scaled by its ``clip`` (≤ 1).

    ``foreach`` (by default: off the CPU, as ``torch.optim`` chooses) does each operation for
    every run's tensors in one ``torch._foreach_*`` call: on an accelerator one launch for all
    of them, where a run's update alone is some thirty. On the CPU the plain loop is faster
    (10-20 % for eight VAE runs): it finishes one tensor while it is in cache. Per tensor the
    two do the same arithmetic, so the bits are those of a run updated alone either way.
    """
    if not updates:
        return
    if foreach is None:
        foreach = next(iter(updates[0][1].values())).device.type != "cpu"
    with torch.no_grad():
        if not foreach:
            for member, grads, clip in updates:
                momentum, lr = member.run.momentum, member.run.lr
                for name, g in grads.items():
                    g = g * clip if clip < 1.0 else g
                    buffer = member.momentum[name].mul_(momentum).add_(g)
                    member.params[name] = member.params[name].add(buffer, alpha=-lr)
            return
        names = list(updates[0][1])
        clipped = [(g, clip) for _, grads, clip in updates if clip < 1.0 for g in grads.values()]
        scaled = iter(
            torch._foreach_mul([g for g, _ in clipped], [c for _, c in clipped]) if clipped else []
        )
        grads = [
            next(scaled) if clip < 1.0 else g
            for _, run_grads, clip in updates
            for g in run_grads.values()
        ]
        buffers = [member.momentum[n] for member, _, _ in updates for n in names]
        momenta = [member.run.momentum for member, _, _ in updates for _ in names]
        torch._foreach_mul_(buffers, momenta)
        torch._foreach_add_(buffers, grads)
        # add(θ, b, alpha=−η) rounds as one operation (a fused multiply-add where the
        # hardware has one), as the loop's does: runs are grouped by learning rate to keep it.
        by_lr: dict[float, list[_RunState]] = {}
        for member, _, _ in updates:
            by_lr.setdefault(member.run.lr, []).append(member)
        for lr, members in by_lr.items():
            params = [m.params[n] for m in members for n in names]
            moved = torch._foreach_add(
                params, [m.momentum[n] for m in members for n in names], alpha=-lr
            )
            for index, member in enumerate(members):
                for offset, name in enumerate(names):
                    member.params[name] = moved[index * len(names) + offset]


def _scores(members: list[_RunState], steps: Steps, template: nn.Module) -> list[float]:
    """Each run's mean validation score, all runs (and a spare) in one vmapped pass per chunk.

    Every run scores with a fresh generator of seed 0: hard samples, where the evaluation
    draws any, are the same from one evaluation to the next, so the curve moves only with
    the parameters.
    """
    size = INITIAL_POOL
    while True:
        try:
            return _scores_with_pools(members, steps, template, size)
        except PoolExhausted as short:
            size = _grown(size, short.needed)


def _scores_with_pools(
    members: list[_RunState], steps: Steps, template: nn.Module, pool: int
) -> list[float]:
    first = members[0]
    params = _stack([*(m.params for m in members), first.params])
    buffers = _stack([*(m.buffers for m in members), first.buffers]) if first.buffers else {}
    device = first.generator.device
    streams = RunStreams(
        [torch.Generator(device=device).manual_seed(0) for _ in range(len(members) + 1)]
    )

    def score(p: dict[str, Tensor], b: dict[str, Tensor], pool: Tensor, *batch: Tensor) -> Tensor:
        sample = steps.evaluation_sampler(RunStream(pool))
        output = functional_call(template, {**p, **b}, batch, {"sample": sample})
        return steps.score(output, *batch).double().sum()

    size = len(first.run.valid[0])
    totals = torch.zeros(len(members) + 1, dtype=torch.float64, device=device)
    checking = validate_args()
    set_validate_args(False)
    try:
        with torch.no_grad():
            for start in range(0, size, EVALUATION_CHUNK):
                part = slice(start, start + EVALUATION_CHUNK)
                columns = zip(*(m.run.valid for m in members), strict=True)
                chunk = [torch.stack([*(x[part] for x in c), c[0][part]]) for c in columns]
                pools = streams.pools(pool)
                totals += vmap(score, randomness="error")(params, buffers, pools, *chunk)
    finally:
        set_validate_args(checking)
    return [float(t) / size for t in totals[: len(members)]]


def _grown(size: int, needed: int) -> int:
    """The next pool size after one of ``size`` ran out with at least ``needed`` asked for.

    ``needed`` rounded up to a multiple of :data:`INITIAL_POOL`: drawing the pool is a large
    part of a step where an estimator draws much (GR-MC100), so it stays near the step's need
    rather than at a power of two above it; a step that needs more still grows it again.
    """
    return max(size + INITIAL_POOL, -(-needed // INITIAL_POOL) * INITIAL_POOL)


# -- one run per pass ---------------------------------------------------------------------


def _fit_alone(member: _RunState, steps: Steps, bar: tqdm) -> None:
    """A run whose estimator cannot be vectorised: plain forward and backward passes."""
    while member.fit["step"] < steps.steps:
        try:
            grads, loss = _plain_step(member, steps)
        except NonFiniteLogits as error:
            member.diverge(f"the model's logits stopped being finite ({error})")
            return
        norm = _norms([list(grads.values())]).item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            member.diverge(f"loss {loss:g}, gradient norm {norm:g}")
            return
        _sgd([(member, grads, min(1.0, MAX_GRADIENT_NORM / (norm + 1e-6)))])
        member.losses.append(loss)
        member.fit["step"] += 1
        bar.update()
        _evaluate_due([member], steps, member.run.model, bar)


def _plain_step(member: _RunState, steps: Steps) -> tuple[dict[str, Tensor], float]:
    """One run's gradient and mean surrogate loss from one forward and backward pass."""
    batch = member.batch(steps.batch_size)
    leaves = {n: p.detach().requires_grad_() for n, p in member.params.items()}
    state = {**leaves, **{n: b.clone() for n, b in member.buffers.items()}}

    def objective(sample: Any) -> Tensor:
        output = functional_call(member.run.model, state, batch, {"sample": sample})
        return steps.loss(output, *batch)

    surrogate = member.estimator(objective, generator=member.generator)
    grads = torch.autograd.grad(surrogate.mean(), list(leaves.values()), allow_unused=True)
    return {
        n: g if g is not None else torch.zeros_like(leaves[n])
        for n, g in zip(leaves, grads, strict=True)
    }, float(surrogate.detach().mean())
