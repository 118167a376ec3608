"""What an estimator is: its description (:class:`EstimatorInfo`) and the estimator with its
hyper-parameters bound (:class:`Estimator`), the one type the harness and benchmarks see.

An :class:`Estimator` maps an *objective* (a function of a sampler returning per-example
losses) to a *surrogate* of the same shape whose value is the loss and whose gradient is the
estimate. :mod:`gvbench.estimators.registry` makes them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from gvbench.estimators.adapters import categorical_from_bernoulli
from gvbench.estimators.state import EstimatorState
from gvbench.estimators.streams import NoiseStream
from gvbench.estimators.validation import (
    MAX_K,
    check_count,
    check_losses,
    check_objective,
    refuse_subset_size,
)

__all__ = [
    "Choices",
    "Estimator",
    "EstimatorInfo",
    "Evaluations",
    "Footprint",
    "Objective",
    "Sampler",
    "SubsetSampler",
    "Variable",
]


class Sampler(Protocol):
    """Draws a sample from categorical logits; its gradient w.r.t. the logits is an estimator."""

    def __call__(self, logits: Tensor, *, dim: int = -1) -> Tensor: ...


class SubsetSampler(Protocol):
    """Draws a k-hot sample (``size`` of the n items along ``dim``) from logits; its gradient
    w.r.t. the logits is an estimator (see :mod:`gvbench.estimators.subset_law`)."""

    def __call__(self, logits: Tensor, size: int, *, dim: int = -1) -> Tensor: ...


Variable = Literal["categorical", "subset"]
"""What an estimator's samples are: one-hot categorical rows, or k-hot k-subsets."""

Objective = Callable[[Sampler], Tensor]
"""A model's loss as a function of the sampler it calls at every discrete choice.

It returns per-example losses (any shape, e.g. ``(batch,)``); each sampler call's logits
must have that shape as their leading dimensions, the rest being the variables of one example;
a leading dimension of size 1 is a choice shared by the examples along it (broadcast).
A k-subset objective calls a :class:`SubsetSampler`, ``sample(logits, size)``.
"""


@dataclasses.dataclass(frozen=True)
class Choices:
    """The discrete choices of one example: ``(variables, arity)`` per sampler call.

    What an estimator's cost can depend on: exact enumeration runs the objective once per
    joint outcome, IndeCateR once per variable and category. A k-subset variable's arity is
    its number of subsets, C(n, k).
    """

    calls: tuple[tuple[int, int], ...]

    @property
    def variables(self) -> int:
        return sum(count for count, _ in self.calls)

    @property
    def outcomes(self) -> int:
        """Joint outcomes as enumeration visits them (every category of every variable)."""
        return math.prod(arity**count for count, arity in self.calls)

    @property
    def categories(self) -> int:
        """Σ over variables of their arity (one run per variable and category)."""
        return sum(count * arity for count, arity in self.calls)


Evaluations = int | Callable[[Mapping[str, Any], Choices], int]
Footprint = int | Callable[[Mapping[str, Any]], int]


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What a user (and the harness) needs to know about a registered estimator.

    Its flags are the arguments of :func:`gvbench.estimators.register`, described there; the
    kind, ``hyper`` and ``defaults`` are read from the function's signature.
    """

    name: str
    function: Callable[..., Tensor]
    kind: Literal["sample", "objective"]
    unbiased: bool
    relaxed: bool
    binary_only: bool
    exact: bool
    hyper: tuple[str, ...]
    defaults: Mapping[str, Any]
    min_k: int
    label: str
    max_k: int = MAX_K
    default: bool = True
    state: Callable[[], dict[str, Any]] | None = None
    sequential: bool = True
    without_replacement: bool = False
    evaluations: Evaluations = 1
    transforms: bool = True
    footprint: Footprint = 1
    variable: Variable = "categorical"

    def memory_factor(self, options: Mapping[str, Any]) -> int:
        """Memory of one draw per example, in units of one run of the objective, beyond
        the K runs it keeps (RODEO's network over every pair of draws)."""
        if callable(self.footprint):
            return max(1, int(self.footprint({**self.defaults, **options})))
        return max(1, int(self.footprint))

    def evaluations_per_draw(self, options: Mapping[str, Any], choices: Choices) -> int:
        """How many times one draw runs the objective, with ``options`` bound (e.g. K)."""
        if callable(self.evaluations):
            return int(self.evaluations({**self.defaults, **options}, choices))
        return int(self.evaluations)

    def check_k(self, k: int) -> int:
        """``k`` as an integer within ``[min_k, max_k]``; ``TypeError``/``ValueError`` naming
        the bounds otherwise."""
        return check_count(k, "k", self.min_k, self.max_k)

    @property
    def needs_value(self) -> bool:
        """Whether the estimator needs the objective's value (score-function, enumeration)."""
        return self.kind == "objective"

    def summary(self) -> dict[str, Any]:
        """A plain-dict description (for tables and the CLI)."""
        return {
            "name": self.name,
            "label": self.label,
            "unbiased": self.unbiased,
            "needs_value": self.needs_value,
            "relaxed": self.relaxed,
            "binary_only": self.binary_only,
            "exact": self.exact,
            "default": self.default,
            "sequential": self.sequential,
            "variable": self.variable,
            "hyper": ",".join(self.hyper) or "-",
        }


def _subset_sampler(
    info: EstimatorInfo, function: Callable[..., Tensor], generator: torch.Generator | None
) -> SubsetSampler:
    """``sample(logits, size, *, dim=-1)``; called without ``size`` (by an objective written
    for categorical samplers), one line says so."""

    def sample(logits: Tensor, size: int | None = None, *, dim: int = -1) -> Tensor:
        if size is None:
            raise TypeError(
                f"{info.name} samples k-subsets: call sample(logits, size) with the number of "
                "items to choose; categorical logits need a categorical estimator"
            )
        return function(logits, size, dim=dim, generator=generator)

    return sample


@dataclasses.dataclass
class Estimator:
    """An estimator with its hyper-parameters bound: ``objective -> surrogate``.

    ``estimator(objective, generator=g)`` returns per-example surrogate losses whose value is
    the objective's and whose gradient is the estimate. ``estimator.sampler(g)`` gives the
    drop-in sampler of a sample-type estimator.
    """

    info: EstimatorInfo
    options: dict[str, Any]
    # The state's summary when it was frozen (a frozen baseline is a plain number).
    frozen_state: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    def sampler(self, generator: torch.Generator | None = None) -> Sampler | SubsetSampler:
        """The sampler (sample-type estimators only) with hyper-parameters and generator bound:
        ``sample(logits, *, dim=-1)``, or ``sample(logits, size, *, dim=-1)`` for k-subsets."""
        if self.info.kind != "sample":
            raise TypeError(
                f"{self.name} needs the objective's value and has no stand-alone sampler; "
                "call the estimator on an objective instead"
            )
        function, options = self.info.function, self.options
        if self.info.variable == "subset":
            return _subset_sampler(self.info, functools.partial(function, **options), generator)
        if self.info.binary_only:
            return categorical_from_bernoulli(
                functools.partial(function, generator=generator, **options)
            )

        def sample(logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
            refuse_subset_size(size)
            return function(logits, dim=dim, generator=generator, **options)

        return sample

    def __call__(self, objective: Objective, *, generator: torch.Generator | None = None) -> Tensor:
        check_objective(objective)
        if generator is not None and not isinstance(generator, torch.Generator | NoiseStream):
            raise TypeError(
                "generator must be a torch.Generator, a DrawRow, a RunStream or None, got "
                f"{generator!r}"
            )
        if self.info.kind == "sample":
            return check_losses(objective(self.sampler(generator)))
        return self.info.function(objective, generator=generator, **self.options)

    def frozen(self) -> tuple[Estimator, Callable[[Tensor], None]]:
        """This estimator with its state read as constants, and the update to apply after.

        For function transforms (``torch.func.vmap``), under which state cannot change in
        the middle of a call: a state that adapts ``"from_losses"`` (a running-mean
        baseline) is read as its :meth:`~EstimatorState.frozen` value, and
        ``update(losses)`` moves it once the call is over, as the call itself would have.
        TypeError for state that adapts ``"within_call"`` (REBAR's and RELAX's control
        variate, unless frozen); see :class:`~gvbench.estimators.EstimatorState`.
        """
        options, updates = {}, []
        for key, value in self.options.items():
            adaptation = value.adaptation if isinstance(value, EstimatorState) else "fixed"
            if adaptation == "from_losses":
                options[key] = value.frozen()
                updates.append(value.update)
            elif adaptation == "within_call":
                raise TypeError(
                    f"{self.name}'s {key} ({type(value).__name__}) changes during a call and "
                    "cannot be read as a constant"
                )
            else:
                options[key] = value

        def update(losses: Tensor) -> None:
            for state_update in updates:
                state_update(losses)

        return Estimator(self.info, options), update

    def freeze(self) -> Estimator:
        """This estimator with its state fixed where it is (a baseline's value, a control
        variate that no longer trains), so that its draws are i.i.d.: how the harness measures
        an adapted estimator."""
        return Estimator(
            self.info,
            {
                k: v.frozen() if isinstance(v, EstimatorState) else v
                for k, v in self.options.items()
            },
            self.summary(),
        )

    def states(self) -> dict[str, EstimatorState]:
        """The options that are state (see :class:`~gvbench.estimators.EstimatorState`)."""
        return {k: v for k, v in self.options.items() if isinstance(v, EstimatorState)}

    def summary(self) -> dict[str, float]:
        """Numbers that describe the estimator's state (η, λ, a baseline), by name."""
        found = dict(self.frozen_state)
        for value in self.states().values():
            found.update(value.summary())
        return found

    def state_dict(self) -> dict[str, Any]:
        """The estimator's own state (e.g. a running-mean baseline), for a checkpoint."""
        return {k: v.state_dict() for k, v in self.states().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run replays bit for bit)."""
        for key, value in state.items():
            self.options[key].load_state_dict(value)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Estimator({self.name}{', ' if options else ''}{options})"
