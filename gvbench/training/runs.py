"""What the loop trains: a run (:class:`Run`), what every run of a group shares
(:class:`Steps`), and a run's state between steps (:class:`RunState`, whose progress,
:class:`RunProgress`, is what its checkpoint keeps besides tensors).

A run may redraw each training batch it draws (:data:`BatchTransform`: dynamic binarization,
a fresh Bernoulli draw of every pixel at every step). That noise comes from a generator of the
run's own, seeded by :func:`batch_transform_seed` and kept in its checkpoint, apart from the
generator of its data order and samples: a run with a transform draws the same batches and
samples as without one, resumes bit for bit, and has the same numbers in any stack."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gvbench.atomic_files import save_torch
from gvbench.estimators import Estimator
from gvbench.training.adam import AdamUpdate
from gvbench.training.checkpoints import CheckpointError, checkpoint_digest, read_checkpoint
from gvbench.training.optimizers import Optimizer
from gvbench.training.sgd import RunUpdate
from gvbench.training.temperature import TemperatureSchedule

# ``transform(inputs, generator) -> inputs``: a training batch as the step sees it, from the
# batch as drawn (same shapes) and the run's batch-transform generator.
BatchTransform = Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]]
# Keeps the batch-transform stream apart from the variance measurements' ([seed, step]).
BATCH_TRANSFORM_STREAM = 1


def batch_transform_seed(seed: int) -> int:
    """The seed of a run's batch-transform generator: a stream of its own, derived from the
    run's ``seed`` by ``numpy.random.SeedSequence`` (spawn key ``(1,)``)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(BATCH_TRANSFORM_STREAM,))
    return int(sequence.generate_state(1)[0])


class TrainingDiverged(ValueError):
    """The training loss or gradient stopped being finite; the last checkpoint is kept."""


@dataclasses.dataclass
class Run:
    """One run of a group: its identity, its optimiser settings and its data.

    Args:
        directory: where its ``checkpoint.pt`` lives.
        config: its JSON-able configuration (a checkpoint of another is refused).
        seed: seeds its generator (data order and samples).
        optimizer: how its parameters move (built from its own configuration:
            ``Experiment.optimizer``).
        tau: its estimator's temperature (``None`` where the estimator takes none). Under
            vmap each run's τ is a tensor, float64 where τ > 1 or the parameters are float64
            (GR-MCK's working precision, read from it), float32 otherwise; runs on both sides
            of τ = 1 do not train as one.
        tau_schedule: τ step by step where it anneals (``tau`` is then its τ at step 0).
            Under vmap, a run that goes above τ = 1 at any step takes its τ in float64 at
            every step: its precision, like the rest of its numbers, is its own in any stack.
        model: its freshly initialised module (the template every run shares in shape); the
            loop trains a copy and leaves it as it is.
        train, valid: its input tensors (first dimension: examples), as the module takes them.
        transform: what becomes of each training batch it draws, before the step (see
            :data:`BatchTransform`); ``None``: the batch as drawn. Validation inputs are
            never transformed.
    """

    directory: Path
    config: Mapping[str, Any]
    seed: int
    optimizer: Optimizer
    model: nn.Module
    train: tuple[Tensor, ...]
    valid: tuple[Tensor, ...]
    tau: float | None = None
    tau_schedule: TemperatureSchedule | None = None
    transform: BatchTransform | None = None


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


@dataclasses.dataclass
class RunProgress:
    """How far a run has come: everything its checkpoint keeps besides its tensors' state.

    Args:
        step: steps taken.
        rows: its learning curve so far, one ``{"step", "train_loss", selection, …}`` per
            evaluation.
        best: ``{"step", "params"}`` of its best evaluation so far (``None`` before the first).
        best_score: that evaluation's selection figure, negated where lower is better (so
            that higher is always better here).
        order: ``(epoch, permutation)``, the shuffled order of the epoch it is in.
        pool: uniforms per run in a step's pool once a step has needed more than the first
            size (``None`` until then).
        initial: the selection figure before the first step.
    """

    step: int = 0
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None
    best_score: float = -math.inf
    order: tuple[int, Tensor] | None = None
    pool: int | None = None
    initial: float | None = None

    def as_checkpoint(self) -> dict[str, Any]:
        """As the checkpoint's ``state``: plain containers, since a checkpoint is read back
        with ``torch.load(weights_only=True)``, which builds no classes."""
        data: dict[str, Any] = {}
        if self.order is not None:
            data["order"] = self.order
        if self.pool is not None:
            data["pool"] = self.pool
        state = {"step": self.step, "rows": self.rows, "best": self.best}
        state |= {"best_score": self.best_score, "data": data}
        if self.initial is not None:
            state["initial"] = self.initial
        return state

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> RunProgress:
        data = state["data"]
        return cls(
            step=state["step"],
            rows=state["rows"],
            best=state["best"],
            best_score=state["best_score"],
            order=data.get("order"),
            pool=data.get("pool"),
            initial=state.get("initial"),
        )


class RunState:
    """A run between steps: its model (a copy of ``run.model`` that holds its current
    parameters), optimizer state, generators, estimator and progress.

    ``generator`` draws its data order and its samples; ``transform_generator``, where the run
    has a batch transform (``None`` otherwise), draws that transform's noise alone.

    Every parameter of the model trains, each by its own gradient (zero where the loss does
    not reach it).
    """

    def __init__(self, run: Run, steps: Steps) -> None:
        self.run = run
        self.path = Path(run.directory) / "checkpoint.pt"
        self.model = copy.deepcopy(run.model).requires_grad_()
        self.params = dict(self.model.named_parameters())
        self.buffers = dict(self.model.named_buffers())
        self.optimizer_state = run.optimizer.init(self.params)  # refuses one no rule covers
        self.generator = torch.Generator(device=_device(run.model)).manual_seed(run.seed)
        self.transform_generator = (
            None
            if run.transform is None
            else torch.Generator(device=_device(run.model)).manual_seed(
                batch_transform_seed(run.seed)
            )
        )
        self.estimator = steps.estimator(**({} if run.tau is None else {"tau": run.tau}))
        schedule = run.tau_schedule
        # The τ its precision follows (see Run): its largest over the run.
        self.largest_tau = run.tau if schedule is None else schedule.largest(steps.steps)
        self.sign = 1.0 if steps.higher_is_better else -1.0
        self.progress = RunProgress()
        self.losses: list[float] = []
        self.diverged: TrainingDiverged | None = None

    @classmethod
    def start(cls, run: Run, steps: Steps) -> RunState:
        """The run as its checkpoint left it, or fresh where it has none."""
        state = cls(run, steps)
        if state.path.exists():
            state.resume()
        return state

    def resume(self) -> None:
        saved = read_checkpoint(self.path, self.run.config, self.params)
        fix = "remove it to train this run afresh, or choose another folder"
        if self.transform_generator is not None and "transform_generator" not in saved:
            raise CheckpointError(
                f"{self.path} has no batch-transform generator, which this run draws from; {fix}"
            )
        if self.transform_generator is None and "transform_generator" in saved:
            raise CheckpointError(
                f"{self.path} holds a batch-transform generator, but this run has no batch "
                f"transform; {fix}"
            )
        try:
            optimizer = self.run.optimizer.restore(saved["optimizer"], self.params)
        except ValueError as error:
            raise CheckpointError(f"{self.path} {error}; {fix}") from None
        with torch.no_grad():
            for name, value in saved["params"].items():
                self.params[name].copy_(value)
        self.optimizer_state = optimizer
        self.generator.set_state(saved["generator"])
        if self.transform_generator is not None:
            self.transform_generator.set_state(saved["transform_generator"])
        self.estimator.load_state_dict(saved.get("estimator", {}))
        self.progress = RunProgress.from_checkpoint(saved["state"])

    @property
    def tau(self) -> float | None:
        """The run's τ at its current step (``None`` where its estimator takes none)."""
        schedule = self.run.tau_schedule
        return self.run.tau if schedule is None else schedule(self.progress.step)

    def tempered(self) -> Estimator:
        """The run's estimator at its current step's τ (the estimator itself where τ does not
        anneal); any state it keeps is the run's own, shared with it."""
        if self.run.tau_schedule is None:
            return self.estimator
        return dataclasses.replace(
            self.estimator, options={**self.estimator.options, "tau": self.tau}
        )

    def batch(self, batch_size: int) -> tuple[Tensor, ...]:
        """The run's next batch: shuffled epochs from its own generator, then its transform
        (if any) with its transform generator."""
        size = len(self.run.train[0])
        per_epoch = max(1, size // batch_size)
        epoch, position = divmod(self.progress.step, per_epoch)
        order = self.progress.order
        if order is None or order[0] != epoch:
            permutation = torch.randperm(
                size, generator=self.generator, device=self.generator.device
            )
            order = self.progress.order = (epoch, permutation.cpu())
        index = order[1][position * batch_size : (position + 1) * batch_size]
        drawn = tuple(x[index.to(x.device)] for x in self.run.train)
        if self.run.transform is None:
            return drawn
        return self.run.transform(drawn, self.transform_generator)  # type: ignore[arg-type]

    def update(self, grads: Mapping[str, Tensor], norm: float) -> list[RunUpdate | AdamUpdate]:
        """The optimizer's step that moves this run by ``grads`` (of norm ``norm``), counted
        in its state; apply it with :func:`~gvbench.training.optimizers.apply`."""
        return self.run.optimizer.updates(self.params, self.optimizer_state, grads, norm)

    def diverge(self, message: str) -> None:
        rules = [rule for _, rule in self.run.optimizer.rules]
        momentum = " or the momentum" if any(getattr(r, "momentum", 0) for r in rules) else ""
        self.diverged = TrainingDiverged(
            f"{Path(self.run.directory).name}: training diverged at step "
            f"{self.progress.step + 1}: {message} ({self.run.optimizer}); the last checkpoint "
            f"is kept: lower the learning rate{momentum}"
        )

    def record(self, row: dict[str, float]) -> None:
        """Add an evaluation to the curve, and keep the parameters where it is the best."""
        self.progress.rows.append(row)
        if self.sign * row["selection"] > self.progress.best_score:
            self.progress.best_score = self.sign * row["selection"]
            self.progress.best = {
                "step": self.progress.step,
                "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            }

    def save(self) -> None:
        params = {k: v.detach().cpu() for k, v in self.params.items()}
        saved = {
            "config": dict(self.run.config),
            "digest": checkpoint_digest(self.run.config, params, self.progress.step),
            "params": params,
            "optimizer": self.optimizer_state.as_checkpoint(),
            "generator": self.generator.get_state(),
            "estimator": self.estimator.state_dict(),
            "state": self.progress.as_checkpoint(),
        }
        if self.transform_generator is not None:  # a run without a transform saves as it did
            saved["transform_generator"] = self.transform_generator.get_state()
        save_torch(saved, self.path)

    def module(self) -> nn.Module:
        """A copy of the run's model holding its current parameters."""
        model = copy.deepcopy(self.run.model)
        with torch.no_grad():
            for name, value in model.named_parameters():
                value.copy_(self.params[name])
        return model

    def result(self) -> dict[str, Any] | TrainingDiverged:
        """``{"rows", "best", "best_score", "initial_score"}``, or how it diverged."""
        if self.diverged is not None:
            return self.diverged
        return {
            "rows": self.progress.rows,
            "best": self.progress.best,
            "best_score": self.sign * self.progress.best_score,
            "initial_score": self.progress.initial,
        }


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
