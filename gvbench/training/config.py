"""A training run's configuration, which runs may train as one, and what trains them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, overload

import torch

from gvbench.estimators.validation import check_count, check_real, check_tau
from gvbench.training.temperature import TemperatureSchedule

if TYPE_CHECKING:
    import xarray as xr

    from gvbench.training.runs import TrainingDiverged


def option(default: Any, help: str) -> Any:
    """A configuration field with its ``gvbench train NAME`` help: every field of a run's
    configuration is an option of that command, described by ``metadata["help"]``."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The fields every training run has; an experiment subclasses it with its own.

    Validated on construction (unknown estimator, τ ≤ 0, K below the estimator's minimum,
    counts below their least value, a learning rate or momentum out of range, a τ schedule that
    does not parse or does not keep τ > 0) so that a bad run fails before any work. ``threads`` fixes
    torch's intra-op threads for the run: the same configuration gives the same numbers however
    many runs share the machine. ``device`` is where it trains (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``); it is part of the run's name, since another device gives other (equally
    valid) numbers.

    ``tau_schedule`` anneals τ over the run (:mod:`gvbench.training.temperature`): give a
    :class:`~gvbench.training.TemperatureSchedule`, its string form or a module-level function
    of the step; ``tau`` is then its τ at step 0 (set from it), and the field holds the string
    form. Without one, τ stays at ``tau`` and the run is the one it always was; a constant
    schedule is that same run (the field ``None``, and left out of :meth:`as_dict`).
    """

    estimator: str = option("st_gumbel_softmax", "a registered estimator (see `gvbench list`)")
    tau: float = option(1.0, "temperature τ > 0")
    tau_schedule: str | None = option(
        None,
        "τ by training step: exp:1->0.1 (Jang et al. 2017) or linear:2->0.5, either with "
        "@STEP for the step it ends at, or call:MODULE:FUNCTION; none: τ stays at --tau",
    )
    k: int = option(1, "K for GR-MCK, RLOO or US-BL")
    steps: int = option(2000, "SGD steps")
    lr: float = option(0.05, "learning rate")
    momentum: float = option(0.9, "SGD momentum in [0, 1)")
    eval_every: int = option(100, "steps between validation evaluations")
    variance_every: int = option(500, "steps between gradient-variance measurements (0: never)")
    variance_reps: int = option(32, "gradient draws per variance measurement")
    seed: int = option(
        0,
        "seed of the data, the initialisation, the data order and the samples; several "
        "train as one vectorised loop (each seed's numbers as if it ran alone)",
    )
    threads: int = option(
        1, "torch threads of the run (fixed, so results do not depend on --workers)"
    )
    device: str = option(
        "cpu", "torch device to train on: cpu, cuda, cuda:1 (part of the run's name)"
    )

    # Fields left out of as_dict at their default: a field added later keeps every run that
    # does not use it at the name, checkpoint and provenance it always had.
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("tau_schedule",)

    # Integer fields and their least value.
    COUNTS: ClassVar[dict[str, int]] = {
        "steps": 1,
        "eval_every": 1,
        "variance_every": 0,
        "variance_reps": 2,
        "seed": 0,
        "threads": 1,
        "k": 1,
    }

    def __post_init__(self) -> None:
        from gvbench.estimators import get, info

        if not isinstance(self.estimator, str):
            raise TypeError(f"estimator must be a registered name, got {self.estimator!r}")
        if info(self.estimator).exact:
            raise ValueError(
                "estimator exact enumerates every joint outcome of the model's choices; it is a "
                "reference for the harness, not a training estimator"
            )
        if info(self.estimator).variable != "categorical":
            raise ValueError(
                f"estimator {self.estimator} samples k-subsets; the experiments' models make "
                "categorical choices: use a categorical estimator (see `gvbench list`)"
            )
        get(self.estimator, **self.estimator_options())  # KeyError / ValueError naming the option
        for name, least in self.COUNTS.items():
            check_count(getattr(self, name), name, least, 2**62)
        self._bind_schedule()
        check_tau(self.tau)  # even where the estimator takes none: a τ ≤ 0 is a mistake
        lr, momentum = check_real(self.lr, "lr"), check_real(self.momentum, "momentum")
        largest = float(torch.finfo(torch.float32).max)  # the optimiser holds it as float32
        if not (0 < lr <= largest):
            raise ValueError(f"lr must be a number in (0, {largest:.3g}], got {self.lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        from gvbench.tasks.base import check_device

        check_device(self.device)

    def _bind_schedule(self) -> None:
        """``tau_schedule`` as its string form and ``tau`` as its τ at step 0; ``None`` for
        a constant schedule (its τ in ``tau``), the run it always was."""
        given = self.tau_schedule
        if given is None:
            return
        if isinstance(given, str):
            schedule = TemperatureSchedule.parse(given)
        elif isinstance(given, TemperatureSchedule):
            schedule = given
        elif callable(given):
            schedule = TemperatureSchedule.function(given)
        else:
            raise TypeError(
                f"tau_schedule must be a TemperatureSchedule, its string form or a function of "
                f"the step, got {given!r}"
            )
        start = schedule.over(self.steps)(0)
        default = next(f.default for f in dataclasses.fields(self) if f.name == "tau")
        if self.tau not in (default, start):
            raise ValueError(
                f"tau {self.tau!r} disagrees with tau_schedule {schedule}, whose τ at step 0 is "
                f"{start!r}: give one of them"
            )
        if not schedule.is_constant and "tau" not in self.estimator_options():
            raise ValueError(
                f"tau_schedule anneals τ, but estimator {self.estimator} takes no τ; leave it out"
            )
        schedule.largest(self.steps)  # a function's τ checked at every step before any work
        object.__setattr__(self, "tau", start)
        object.__setattr__(self, "tau_schedule", None if schedule.is_constant else str(schedule))

    @property
    def temperature(self) -> TemperatureSchedule:
        """τ at each step of this run (a constant at ``tau`` without a schedule)."""
        if self.tau_schedule is None:
            return TemperatureSchedule.constant(self.tau)
        return TemperatureSchedule.parse(str(self.tau_schedule)).over(self.steps)

    @property
    def batch(self) -> int:
        """Examples per training step."""
        return getattr(self, "batch_size", 1)

    def work(self) -> float:
        """A rough relative cost of training this run: steps × batch × (1 + log K).

        Only the order of groups on an executor reads it (the costliest start first, so that
        the last one to finish is not a long one started late); it changes no number.
        """
        return self.steps * self.batch * (1.0 + math.log(self.k))

    def estimator_options(self) -> dict[str, Any]:
        """τ and K where the estimator takes them."""
        from gvbench.estimators import info

        return {h: getattr(self, h) for h in info(self.estimator).hyper}

    def as_dict(self) -> dict[str, Any]:
        """Every field but those of :attr:`OMITTED_AT_DEFAULT` at their default
        (``tau_schedule`` only where τ anneals)."""
        data = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in self.OMITTED_AT_DEFAULT:
            if data[name] == defaults[name]:
                del data[name]
        return data

    def prefix(self) -> str:
        """The experiment's part of the run's name."""
        return "run"

    def name(self) -> str:
        """Readable, and unique per configuration (a short hash of every field)."""
        options = "".join(f"-{k}{v:g}" for k, v in self.estimator_options().items())
        if self.tau_schedule is not None:  # -tau1 → -tau1exp0.1: where it starts, how, to where
            schedule = self.temperature
            if schedule.kind == "call":  # -tau1 → -tau1call-anneal: the function's name
                how = f"call-{str(schedule.reference).rsplit(':', 1)[-1].rsplit('.', 1)[-1]}"
            else:
                how = f"{schedule.kind}{schedule.end:g}"
            options = options.replace(f"-tau{self.tau:g}", f"-tau{self.tau:g}{how}", 1)
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.prefix()}-{self.estimator}{options}-seed{self.seed}-{digest}"


ConfigT = TypeVar("ConfigT", bound=RunConfig)
_Config = TypeVar("_Config", bound=RunConfig, contravariant=True)


class Train(Protocol[_Config]):
    """What trains runs: an experiment's :meth:`~gvbench.experiment.Experiment.train`.

    One configuration: its curves (``curves.nc``, with the run's figures as attrs), or a
    :class:`~gvbench.training.TrainingDiverged` raised. Several, trained as one: a list with
    each run's curves or the ``TrainingDiverged`` that ended it. Runs resume from their
    checkpoints in ``out_dir``; ``final_checkpoints`` (one path or ``None`` per run) receive
    each run's best parameters.
    """

    @overload
    def __call__(
        self,
        configs: _Config,
        out_dir: str | Path | None = ...,
        progress: bool = ...,
        final_checkpoints: Sequence[str | Path | None] | None = ...,
    ) -> xr.Dataset: ...

    @overload
    def __call__(
        self,
        configs: Sequence[_Config],
        out_dir: str | Path | None = ...,
        progress: bool = ...,
        final_checkpoints: Sequence[str | Path | None] | None = ...,
    ) -> list[xr.Dataset | TrainingDiverged]: ...


# Fields in which runs trained as one may differ; τ and its schedule too where the estimator
# takes one, on one side of τ = 1 (GR-MCK works in float64 above it).
PER_RUN = ("seed", "lr", "momentum")


def _shared(config: RunConfig) -> dict[str, Any]:
    shared = {k: v for k, v in config.as_dict().items() if k not in PER_RUN}
    if "tau" in config.estimator_options():
        shared.pop("tau_schedule", None)
        # A schedule's largest τ: a run that goes above 1 at any step works in float64 at all.
        largest = config.temperature.largest(config.steps)
        shared["tau"] = "above 1" if largest > 1.0 else "at most 1"
    return shared


def group_key(config: RunConfig) -> str:
    """What runs must share to train as one: every field but seed, lr, momentum, τ and its
    schedule (the side of τ = 1 of its largest value where the estimator takes a τ, all of it
    where it takes none)."""
    return json.dumps([type(config).__qualname__, _shared(config)], sort_keys=True, default=str)


def check_one_group(configs: Sequence[RunConfig]) -> None:
    """A ValueError naming the fields where ``configs`` cannot train as one."""
    if len({group_key(c) for c in configs}) > 1:
        first = _shared(configs[0])
        differ = sorted(
            {k for c in configs[1:] for k, v in _shared(c).items() if first.get(k) != v} or {"type"}
        )
        raise ValueError(
            "runs trained as one may differ only in seed, lr, momentum and τ (its schedule too; "
            "on one side of τ = 1, where the estimator takes one); these differ in "
            + ", ".join(differ)
        )
