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
that one type (defined, with the :class:`EstimatorInfo` a registration makes, in
:mod:`gvbench.estimators.estimator`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.estimator import (
    Choices,
    Estimator,
    EstimatorInfo,
    Evaluations,
    Footprint,
    Objective,
    Sampler,
    SubsetSampler,
    Variable,
)
from gvbench.estimators.validation import MAX_K, check_tau

__all__ = [
    "Choices",
    "Estimator",
    "EstimatorInfo",
    "Objective",
    "Sampler",
    "SubsetSampler",
    "UnknownEstimator",
    "available",
    "checked_k",
    "get",
    "info",
    "parse",
    "register",
    "variants",
]


# Hyper-parameters the harness sweeps; read from each function's signature.
SWEPT_HYPER = ("tau", "k")


_REGISTRY: dict[str, EstimatorInfo] = {}


class UnknownEstimator(KeyError):
    """A name no estimator is registered under. A ``KeyError`` whose message prints as one
    line, unquoted (a plain ``KeyError`` prints its message as a quoted string)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown estimator"


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
    footprint: Footprint = 1,
    variable: Variable = "categorical",
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register an estimator function under its own ``__name__``; returns it unchanged.

    Its kind, swept hyper-parameters (``tau``, ``k``) and options' defaults are read from its
    signature (see :func:`_signature`).

    Args:
        unbiased: whether its expectation is the exact gradient.
        label: its name in tables and figures (default: the function's name).
        relaxed: its forward value is a relaxed sample (the objective must take the simplex).
        binary_only: it takes one logit per Bernoulli variable (arity-2 choices only).
        exact: it computes the gradient itself, with no noise (enumeration).
        min_k: the least K (number of samples) it accepts.
        max_k: the largest K, beyond which one call runs for hours. Both bounds are declared
            here only: :func:`get`, sweeps and the function itself (:func:`checked_k`) read them.
        default: ``False`` keeps it out of sweeps that name no estimators (the exact
            reference, a reconstruction).
        state: makes its :class:`~gvbench.estimators.EstimatorState` options (a running-mean
            baseline) fresh for every :func:`get`, so two estimators never share state.
        sequential: ``False``: every choice's logits must be fixed in advance (not depending
            on earlier samples), e.g. as it runs the objective at coupled samples.
        without_replacement: its K samples are distinct, so K cannot exceed the outcomes.
        evaluations: objective runs per draw, a number or ``f(options, choices)`` (e.g.
            ``lambda o, c: o["k"]`` for RLOO): what comparisons at equal cost count.
        transforms: ``False``: it differentiates inside a call (∂f/∂D at its samples), so a
            module task measures it one draw per pass, not under ``torch.func`` transforms.
        footprint: its memory per example in runs of the objective beyond the K runs it keeps
            (a number or ``f(options)``), which bounds the draws per pass.
        variable: what it samples, ``"categorical"`` (one-hot rows) or ``"subset"`` (k-hot
            rows, ``fn(logits, size, tau=…, *, dim=-1, generator=None)``; see the k-subset law).

    Raises:
        ValueError: the name is already registered.
        TypeError: a signature that :func:`_signature` refuses.
    """
    flags = {
        "unbiased": unbiased,
        "relaxed": relaxed,
        "binary_only": binary_only,
        "exact": exact,
        "min_k": min_k,
        "max_k": max_k,
        "default": default,
        "state": state,
        "sequential": sequential,
        "without_replacement": without_replacement,
        "evaluations": evaluations,
        "transforms": transforms,
        "footprint": footprint,
        "variable": _checked_variable(variable, binary_only),
    }

    def decorate(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
        name = function.__name__
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} is already registered")
        described = {**_signature(function, variable), **flags, "label": label or name}
        _REGISTRY[name] = EstimatorInfo(name=name, function=function, **described)
        return function

    return decorate


def _checked_variable(variable: object, binary_only: bool) -> Variable:
    """``variable`` as :func:`register` takes it; ValueError naming it otherwise. A task
    samples one kind, and an estimator of the other is not applicable to it."""
    if variable not in ("categorical", "subset"):
        raise ValueError(f"variable must be 'categorical' or 'subset', got {variable!r}")
    if variable == "subset" and binary_only:
        raise ValueError("a k-subset estimator cannot be binary_only")
    return variable  # type: ignore[return-value]


def _signature(function: Callable[..., Tensor], variable: Variable) -> dict[str, Any]:
    """An estimator function's ``kind``, swept hyper-parameters (``hyper``) and the
    ``defaults`` of its options, as :class:`EstimatorInfo` takes them.

    A sampler's first parameter is ``logits`` (categorical, which also needs a ``dim``
    keyword) or ``logit`` (Bernoulli); an estimator that needs the objective's value takes
    ``objective``. Both take a ``generator`` keyword. A k-subset sampler's second parameter
    is ``size``, positional and never swept.
    """
    name = function.__name__
    parameters = inspect.signature(function).parameters
    first = next(iter(parameters))
    if first not in ("logits", "logit", "objective"):
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
    if variable == "subset" and first == "logits" and list(parameters)[1:2] != ["size"]:
        raise TypeError(
            f"{name}: a k-subset sampler takes the subset size second, e.g. "
            f"def {name}(logits, size, tau=1.0, *, dim=-1, generator=None)"
        )
    defaults = {
        p.name: p.default
        for p in parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in ("dim", "generator")
    }
    return {
        "kind": "objective" if first == "objective" else "sample",
        "hyper": tuple(h for h in SWEPT_HYPER if h in parameters),
        "defaults": defaults,
    }


def checked_k(function: Callable[..., Tensor], k: int) -> int:
    """``k`` checked against the bounds ``function`` was registered with (``min_k``,
    ``max_k`` of :func:`register`): how an estimator called directly checks its K, as
    :func:`get` does for it."""
    return _REGISTRY[function.__name__].check_k(k)


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
        raise UnknownEstimator(
            f"unknown estimator {base!r}; {_suggestion(base)}available: "
            f"{', '.join(sorted(_REGISTRY))}"
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
        size = (1,) if entry.variable == "subset" else ()
        entry.function(torch.zeros(shape, dtype=torch.float64), *size, **ordered)
    return dataclasses.replace(
        entry,
        name=f"{base}({text})",
        label=f"{entry.label} ({text})",
        defaults={**entry.defaults, **ordered},
    )


def _suggestion(name: str) -> str:
    """``"did you mean 'x'? "`` for the registered name closest to ``name`` (read against
    the names and the labels, whatever the case: "RLOO" finds rloo), or nothing."""
    spellings = {key.lower(): key for key in _REGISTRY}
    spellings.update({entry.label.lower(): key for key, entry in _REGISTRY.items()})
    close = difflib.get_close_matches(name.lower(), list(spellings), n=1, cutoff=0.6)
    return f"did you mean {spellings[close[0]]!r}? " if close else ""


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
    base, fixed = parse(name)
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise ValueError(
            f"{entry.name} takes no option(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(entry.defaults) or 'none'}"
        )
    bound = dict(entry.state() if entry.state else {})
    bound.update(fixed)
    bound.update(options)
    for option, value in bound.items():
        # a flag given as 0/1 or "False" would be read as truthy or falsy without a word
        if isinstance(_REGISTRY[base].defaults.get(option), bool) and not isinstance(value, bool):
            raise TypeError(f"{entry.name}: option {option} must be True or False, got {value!r}")
    if "tau" in bound:
        bound["tau"] = check_tau(bound["tau"])
    if "k" in bound:
        bound["k"] = entry.check_k(bound["k"])
    return Estimator(entry, bound)
