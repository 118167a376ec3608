"""The estimator registry: one decorator, one lookup, one small common interface.

Two kinds of estimator function are registered:

- **sample** estimators, ``fn(logits, tau=…, *, dim=-1, generator=None, …) -> y``: drop-in
  samplers whose forward value is the sample and whose gradient is the estimator
  (``torch.nn.functional.gumbel_softmax(hard=True)`` style);
- **objective** estimators, ``fn(objective, *, generator=None, …) -> surrogate``: they need
  the objective's value (REINFORCE, RLOO, exact enumeration) and so take the whole objective.

:func:`get` wraps either kind into an :class:`Estimator`, which maps an *objective* (a
function of a sampler returning per-example losses) to a *surrogate* of the same shape whose
value is the loss and whose gradient is the estimate. The harness and the benchmarks only see
that one type.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from gvbench.estimators.streams import RunStream
from gvbench.estimators.validation import (
    MAX_K,
    check_count,
    check_losses,
    check_objective,
    check_tau,
)

__all__ = [
    "Choices",
    "Estimator",
    "EstimatorInfo",
    "Objective",
    "Sampler",
    "available",
    "get",
    "info",
    "parse",
    "register",
    "variants",
]


class Sampler(Protocol):
    """Draws a sample from categorical logits; its gradient w.r.t. the logits is an estimator."""

    def __call__(self, logits: Tensor, *, dim: int = -1) -> Tensor: ...


Objective = Callable[[Sampler], Tensor]
"""A model's loss as a function of the sampler it calls at every discrete choice.

It returns per-example losses (any shape, e.g. ``(batch,)``); each sampler call's logits
must have that shape as their leading dimensions, the rest being the variables of one example.
"""

# Hyper-parameters the harness sweeps; read from each function's signature.
SWEPT_HYPER = ("tau", "k")


@dataclasses.dataclass(frozen=True)
class Choices:
    """The discrete choices of one example: ``(variables, arity)`` per sampler call.

    What an estimator's cost can depend on: exact enumeration runs the objective once per
    joint outcome, IndeCateR once per variable and category.
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


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What a user (and the harness) needs to know about a registered estimator."""

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
    footprint: int | Callable[[Mapping[str, Any]], int] = 1

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
            "hyper": ",".join(self.hyper) or "-",
        }


_REGISTRY: dict[str, EstimatorInfo] = {}


def register(
    *,
    unbiased: bool,
    label: str | None = None,
    relaxed: bool = False,
    binary_only: bool = False,
    exact: bool = False,
    min_k: int = 1,
    max_k: int = MAX_K,
    default: bool = True,
    state: Callable[[], dict[str, Any]] | None = None,
    sequential: bool = True,
    without_replacement: bool = False,
    evaluations: Evaluations = 1,
    transforms: bool = True,
    footprint: int | Callable[[Mapping[str, Any]], int] = 1,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register an estimator function under its own ``__name__``; returns it unchanged.

    The kind is read from the first parameter's name (``logits`` or ``logit``: sample;
    ``objective``: objective); the swept hyper-parameters (``tau``, ``k``) and their defaults
    from the signature. ``state`` makes fresh keyword values (e.g. a running-mean baseline)
    for every :func:`get`, so two estimators never share state. ``default=False`` keeps an
    estimator out of sweeps that name no estimators (the exact reference, a reconstruction).
    ``sequential=False``: the estimator needs every choice's logits fixed in advance (not
    depending on earlier samples), e.g. because it evaluates the objective at coupled samples.
    ``without_replacement=True``: its K samples are distinct, so K cannot exceed the outcomes.
    ``evaluations``: objective runs per draw, a number or ``f(options, choices)`` (e.g.
    ``lambda o, c: o["k"]`` for RLOO): what comparisons at equal cost count.
    ``transforms=False``: the estimator differentiates inside a call (∂f/∂D at its samples)
    and so cannot run under ``torch.func`` transforms; a module task measures it one draw per
    pass. ``footprint``: its memory per example in runs of the objective, beyond the K runs
    it keeps (a number or ``f(options)``), which bounds the draws per pass.
    """

    def decorate(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
        name = function.__name__
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} is already registered")
        parameters = inspect.signature(function).parameters
        first = next(iter(parameters))
        if first in ("logits", "logit"):
            kind = "sample"
        elif first == "objective":
            kind = "objective"
        else:
            raise TypeError(
                f"{name}: the first parameter must be 'logits' (a sampler) or 'objective', "
                f"got {first!r}"
            )
        if "generator" not in parameters:
            raise TypeError(f"{name}: an estimator must accept a 'generator' keyword")
        if first == "logits" and "dim" not in parameters:
            # Tasks call samplers with the category axis named; without it the first call fails.
            raise TypeError(
                f"{name}: a sampler of categorical logits must accept a 'dim' keyword (the "
                f"category axis), e.g. def {name}(logits, tau=1.0, *, dim=-1, generator=None)"
            )
        hyper = tuple(h for h in SWEPT_HYPER if h in parameters)
        defaults = {
            p.name: p.default
            for p in parameters.values()
            if p.default is not inspect.Parameter.empty and p.name not in ("dim", "generator")
        }
        _REGISTRY[name] = EstimatorInfo(
            name=name,
            function=function,
            kind=kind,
            unbiased=unbiased,
            relaxed=relaxed,
            binary_only=binary_only,
            exact=exact,
            hyper=hyper,
            defaults=defaults,
            min_k=min_k,
            max_k=max_k,
            default=default,
            label=label or name,
            state=state,
            sequential=sequential,
            without_replacement=without_replacement,
            evaluations=evaluations,
            transforms=transforms,
            footprint=footprint,
        )
        return function

    return decorate


def available() -> dict[str, EstimatorInfo]:
    """All registered estimators by name, in registration order."""
    return dict(_REGISTRY)


def parse(spec: str) -> tuple[str, dict[str, Any]]:
    """A registered name, or a variant with options fixed: ``"name(key=value, …)"``.

    ``"decoupled_straight_through(forward_tau=0.5)"`` gives
    ``("decoupled_straight_through", {"forward_tau": 0.5})``; values are Python literals.
    """
    if not isinstance(spec, str):
        raise TypeError(f"an estimator is named by a string, got {type(spec).__name__}")
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        node = None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args):
        raise ValueError(
            f"an estimator is a registered name or 'name(option=value, ...)', got {spec!r}"
        )
    options = {}
    for keyword in node.keywords:
        try:
            options[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(
                f"option {keyword.arg} of {spec!r} must be a literal (a number, string or boolean)"
            ) from None
    return node.func.id, options


def info(name: str) -> EstimatorInfo:
    """The :class:`EstimatorInfo` of ``name``; ``KeyError`` listing the known names otherwise.

    A variant ``"name(option=value, …)"`` (see :func:`parse`) is its own estimator: its
    options are fixed, its name is written canonically and its label says them. Options
    swept by the grid (τ, K) cannot be fixed this way.
    """
    base, options = parse(name)
    try:
        entry = _REGISTRY[base]
    except KeyError:
        raise KeyError(
            f"unknown estimator {base!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    if not options:
        return entry
    fixed = set(options) & set(SWEPT_HYPER)
    if fixed:
        raise ValueError(
            f"{base}: {', '.join(sorted(fixed))} is swept by the grid, not fixed in a variant"
        )
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise ValueError(
            f"{base} takes no option(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(k for k in entry.defaults if k not in SWEPT_HYPER) or 'none'}"
        )
    ordered = dict(sorted(options.items()))
    text = ", ".join(f"{k}={v!r}" for k, v in ordered.items())
    if entry.kind == "sample":
        # a bad value is named now, not in every cell of a sweep
        shape = (1,) if entry.binary_only else (1, 2)
        entry.function(torch.zeros(shape, dtype=torch.float64), **ordered)
    return dataclasses.replace(
        entry,
        name=f"{base}({text})",
        label=f"{entry.label} ({text})",
        defaults={**entry.defaults, **ordered},
    )


def variants(name: str, **grids: Any) -> list[str]:
    """Every combination of the options' values as variant names (see :func:`info`):
    ``variants("decoupled_straight_through", forward_tau=[0.5, 1, 2])``."""
    keys = list(grids)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grids.values()]
    combos = itertools.product(*values)
    return [
        info(f"{name}({', '.join(f'{k}={v!r}' for k, v in zip(keys, combo, strict=True))})").name
        for combo in combos
    ]


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

    def sampler(self, generator: torch.Generator | None = None) -> Sampler:
        """The sampler (sample-type estimators only) with hyper-parameters and generator bound."""
        if self.info.kind != "sample":
            raise TypeError(
                f"{self.name} needs the objective's value and has no stand-alone sampler; "
                "call the estimator on an objective instead"
            )
        function, options = self.info.function, self.options
        if self.info.binary_only:
            from gvbench.estimators.binary import categorical_from_bernoulli

            return categorical_from_bernoulli(
                functools.partial(function, generator=generator, **options)
            )

        def sample(logits: Tensor, *, dim: int = -1) -> Tensor:
            return function(logits, dim=dim, generator=generator, **options)

        return sample

    def __call__(self, objective: Objective, *, generator: torch.Generator | None = None) -> Tensor:
        check_objective(objective)
        if generator is not None and not isinstance(generator, torch.Generator | RunStream):
            raise TypeError(
                f"generator must be a torch.Generator, a RunStream or None, got {generator!r}"
            )
        if self.info.kind == "sample":
            return check_losses(objective(self.sampler(generator)))
        return self.info.function(objective, generator=generator, **self.options)

    def frozen(self) -> tuple[Estimator, Callable[[Tensor], None]]:
        """This estimator with its state read as constants, and the update to apply after.

        For function transforms (``torch.func.vmap``), under which state cannot change in
        the middle of a call: a running-mean baseline is read as its current value, and
        ``update(losses)`` moves it once the call is over, as the call itself would have.
        TypeError for state that trains inside the call (REBAR's and RELAX's control variate,
        unless frozen).
        """
        options, updates = {}, []
        for key, value in self.options.items():
            if hasattr(value, "frozen") and hasattr(value, "update"):
                options[key] = value.frozen()
                updates.append(value.update)
            elif getattr(value, "changes_during_call", False):
                raise TypeError(
                    f"{self.name}'s {key} ({type(value).__name__}) changes during a call and "
                    "cannot be read as a constant"
                )
            else:
                options[key] = value

        def update(losses: Tensor) -> None:
            for step in updates:
                step(losses)

        return Estimator(self.info, options), update

    def freeze(self) -> Estimator:
        """This estimator with its state fixed where it is (a baseline's value, a control
        variate that no longer trains), so that its draws are i.i.d.: how the harness measures
        an adapted estimator."""
        return Estimator(
            self.info,
            {k: v.frozen() if hasattr(v, "frozen") else v for k, v in self.options.items()},
            self.summary(),
        )

    def summary(self) -> dict[str, float]:
        """Numbers that describe the estimator's state (η, λ, a baseline), by name."""
        found = dict(self.frozen_state)
        for value in self.options.values():
            if hasattr(value, "summary"):
                found.update(value.summary())
        return found

    def state_dict(self) -> dict[str, Any]:
        """The estimator's own state (e.g. a running-mean baseline), for a checkpoint."""
        return {k: v.state_dict() for k, v in self.options.items() if hasattr(v, "state_dict")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run replays bit for bit)."""
        for key, value in state.items():
            self.options[key].load_state_dict(value)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Estimator({self.name}{', ' if options else ''}{options})"


def get(name: str, **options: Any) -> Estimator:
    """The estimator ``name`` with its hyper-parameters bound.

    Args:
        name: a registered name (see :func:`available`), or a variant
            ``"name(option=value, …)"`` (see :func:`info`).
        **options: hyper-parameters the estimator takes (``tau``, ``k``, and its own keywords).

    Raises:
        KeyError: unknown name.
        ValueError: an option the estimator does not take, or out of range (τ ≤ 0, K < min).
    """
    entry = info(name)
    _, fixed = parse(name)
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise ValueError(
            f"{entry.name} takes no option(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(entry.defaults) or 'none'}"
        )
    bound = dict(entry.state() if entry.state else {})
    bound.update(fixed)
    bound.update(options)
    if "tau" in bound:
        bound["tau"] = check_tau(bound["tau"])
    if "k" in bound:
        bound["k"] = check_count(bound["k"], "k", entry.min_k, entry.max_k)
    return Estimator(entry, bound)
