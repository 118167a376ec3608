r"""Temperature schedules: the τ a training run's estimator takes at each step.

A :class:`TemperatureSchedule` is a function of the step :math:`t = 0, 1, \ldots` (the steps
taken before the one it sets), with a string form that the command line, presets, a run's
name and its curves' provenance share:

==============================  =============================================================
``constant:TAU``                :math:`\tau_t = \tau` (a run without a schedule)
``exp:START->END[@STEP]``       :math:`\tau_t = \tau_0\,(\tau_1/\tau_0)^{\min(t, N)/N}`
``linear:START->END[@STEP]``    :math:`\tau_t = \tau_0 + (\tau_1 - \tau_0)\min(t, N)/N`
``call:MODULE:FUNCTION``        :math:`\tau_t` = ``FUNCTION(t)``, imported from ``MODULE``
==============================  =============================================================

:math:`\tau_0` is START, :math:`\tau_1` END and :math:`N` STEP, the step at which τ reaches
END and stays there; without ``@STEP``, the run's last step (a run of T steps anneals over
:math:`N = T - 1`, so that it trains at both ends).

The exponential form is the annealing of Jang, Gu & Poole, "Categorical Reparameterization
with Gumbel-Softmax" (ICLR 2017): :math:`\tau_t = \max(\tau_1, \tau_0 e^{-rt})` with the rate
:math:`r = \ln(\tau_0/\tau_1)/N` that reaches END at step N (they anneal from 1 with r of
1e-5 or 1e-4 to a floor of 0.5, updating τ every 500 or 1000 steps; here it moves every step).
Written as a geometric interpolation it also heats (END > START). The linear form is
``optax.linear_schedule``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import re
from collections.abc import Callable
from typing import Literal

from gvbench.estimators.validation import check_count, check_real

Kind = Literal["constant", "exp", "linear", "call"]

FORMS = "constant:TAU, exp:START->END[@STEP], linear:START->END[@STEP] or call:MODULE:FUNCTION"
_ANNEALING = re.compile(r"(exp|linear):(.+?)->(.+?)(?:@(\d+))?")
_REFERENCE = re.compile(r"call:([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)")


@dataclasses.dataclass(frozen=True)
class TemperatureSchedule:
    """τ at step ``t``: ``schedule(t)`` (see the module's docstring for the formulas).

    Make one with :meth:`constant`, :meth:`exponential`, :meth:`linear`, :meth:`function` or
    :meth:`parse`; ``str(schedule)`` is its string form, and ``parse(str(s)) == s``. Values
    are checked at the door: START and END finite numbers > 0, STEP an integer >= 1, and a
    function's τ a finite number > 0 at every step it is asked for.

    Args:
        kind: ``"constant"``, ``"exp"``, ``"linear"`` or ``"call"``.
        start, end: τ at step 0 and from step ``end_step`` on (equal for a constant).
        end_step: the step at which τ reaches ``end``; ``None``: the run's last step
            (:meth:`over` sets it).
        reference: ``"module:qualified_name"``, the function of ``kind="call"``.
    """

    kind: Kind
    start: float = math.nan
    end: float = math.nan
    end_step: int | None = None
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "call":
            if not isinstance(self.reference, str):
                raise TypeError(
                    f"a call schedule names its function as 'module:name', got {self.reference!r}"
                )
            _resolve(self.reference)
            return
        if self.kind not in ("constant", "exp", "linear"):
            raise ValueError(
                f"tau_schedule kind must be one of constant, exp, linear, call, got {self.kind!r}"
            )
        for name in ("start", "end"):
            value = check_real(getattr(self, name), f"tau_schedule {name}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(
                    f"tau_schedule {name} must be a finite number > 0, got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, value)
        if self.kind == "constant" and self.start != self.end:
            raise ValueError(
                f"a constant schedule has one τ, got start {self.start!r} and end {self.end!r}"
            )
        if self.end_step is not None:
            object.__setattr__(
                self, "end_step", check_count(self.end_step, "tau_schedule end_step", 1, 2**62)
            )

    # -- making one -----------------------------------------------------------------------
    @classmethod
    def constant(cls, tau: float) -> TemperatureSchedule:
        """τ at every step."""
        return cls("constant", tau, tau)

    @classmethod
    def exponential(
        cls, start: float, end: float, end_step: int | None = None
    ) -> TemperatureSchedule:
        """From ``start`` to ``end`` geometrically (Jang et al. 2017), reached at ``end_step``."""
        return cls("exp", start, end, end_step)

    @classmethod
    def linear(cls, start: float, end: float, end_step: int | None = None) -> TemperatureSchedule:
        """From ``start`` to ``end`` in equal steps, reached at ``end_step``."""
        return cls("linear", start, end, end_step)

    @classmethod
    def function(cls, function: Callable[[int], float]) -> TemperatureSchedule:
        """τ at step t is ``function(t)``. It must be importable by its module and qualified
        name (a module-level function): the run's name, checkpoint and provenance name it so,
        and a worker process imports it so."""
        module = getattr(function, "__module__", None)
        name = getattr(function, "__qualname__", None)
        reference = f"{module}:{name}"
        try:
            found = _resolve(reference) if module and name else None
        except ValueError:
            found = None
        if found is not function:
            raise ValueError(
                f"a schedule's function must be importable as module:name (a module-level "
                f"function), so that a run's name and provenance can name it; got {function!r}"
            )
        return cls("call", reference=reference)

    @classmethod
    def parse(cls, text: str) -> TemperatureSchedule:
        """The schedule a string names (see the module's docstring); a ValueError naming the
        forms there are otherwise."""
        if not isinstance(text, str):
            raise TypeError(f"tau_schedule must be a string such as 'exp:1->0.1', got {text!r}")
        text = text.strip()
        if text.startswith("constant:"):
            return cls.constant(_number(text.removeprefix("constant:"), text))
        found = _ANNEALING.fullmatch(text)
        if found:
            kind, start, end, step = found.groups()
            end_step = None if step is None else int(step)
            return cls(kind, _number(start, text), _number(end, text), end_step)
        found = _REFERENCE.fullmatch(text)
        if found:
            return cls("call", reference=f"{found[1]}:{found[2]}")
        raise ValueError(f"tau_schedule must be one of {FORMS}; got {text!r}")

    def __str__(self) -> str:
        if self.kind == "call":
            return f"call:{self.reference}"
        if self.kind == "constant":
            return f"constant:{self.start!r}"
        step = "" if self.end_step is None else f"@{self.end_step}"
        return f"{self.kind}:{self.start!r}->{self.end!r}{step}"

    # -- using one ------------------------------------------------------------------------
    @property
    def is_constant(self) -> bool:
        return self.kind == "constant"

    def over(self, steps: int) -> TemperatureSchedule:
        """This schedule for a run of ``steps`` steps: an annealing without ``end_step``
        reaches its end at the run's last step, ``steps - 1``."""
        if self.kind in ("constant", "call") or self.end_step is not None:
            return self
        return dataclasses.replace(self, end_step=max(1, check_count(steps, "steps", 1) - 1))

    def __call__(self, step: int) -> float:
        """τ at ``step`` (steps taken before the one it sets; 0 is the first)."""
        step = check_count(step, "step", 0, 2**62)
        if self.kind == "constant":
            return self.start
        if self.kind == "call":
            return _checked(_resolve(self.reference)(step), self.reference, step)
        if self.end_step is None:
            raise ValueError(
                f"{self} anneals over the run: give the run's length with .over(steps)"
            )
        if step >= self.end_step:
            return self.end  # exactly the value it names, not a rounding of it
        fraction = step / self.end_step
        if self.kind == "exp":
            value = self.start * (self.end / self.start) ** fraction
        else:
            value = self.start + (self.end - self.start) * fraction
        # Rounding must not carry τ past either end (nor below a start ≤ 1 into the other side).
        return min(max(value, min(self.start, self.end)), max(self.start, self.end))

    def largest(self, steps: int) -> float:
        """The largest τ of a run of ``steps`` steps (whether it goes above τ = 1 decides a
        run's precision: see :class:`~gvbench.training.Run`); a ValueError naming the step
        where a function's τ is not a finite number > 0."""
        if self.kind != "call":
            return max(self.start, self.end)
        return _largest_called(self, check_count(steps, "steps", 1))


@functools.lru_cache(maxsize=64)
def _largest_called(schedule: TemperatureSchedule, steps: int) -> float:
    # Cached: every grouping of a run asks, and a function is called once per step.
    return max(schedule(step) for step in range(steps))


def _number(text: str, whole: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"tau_schedule must be one of {FORMS}; got {whole!r}") from None


@functools.lru_cache(maxsize=64)
def _resolve(reference: str) -> Callable[[int], float]:
    """The function ``"module:qualified.name"`` names, or a ValueError saying what is missing."""
    module_name, _, name = reference.partition(":")
    try:
        found: object = importlib.import_module(module_name)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"tau_schedule call:{reference} names no importable function ({error})"
        ) from None
    if not callable(found):
        raise ValueError(f"tau_schedule call:{reference} is not a function")
    return found  # type: ignore[return-value]


def _checked(value: object, reference: str | None, step: int) -> float:
    tau = check_real(value, f"tau_schedule call:{reference} at step {step}")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(
            f"tau_schedule call:{reference} gives τ = {value!r} at step {step}; τ must be a "
            "finite number > 0"
        )
    return tau
