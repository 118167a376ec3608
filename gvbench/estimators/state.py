"""What an estimator keeps from call to call: a baseline, a control variate, a control weight.

Such state is one of the estimator's keyword options, made fresh for every
:func:`gvbench.estimators.get` by the registration's ``state`` factory, and it adapts as the
estimator is used. How it adapts decides where the estimator can run:

- ``"from_losses"``: only from the call's per-example losses, after the call (REINFORCE's
  running mean). Under a function transform (``torch.func.vmap``), where nothing can change in
  the middle of a call, the estimator reads it as the constant :meth:`EstimatorState.frozen`
  returns and :meth:`EstimatorState.update` is applied with the losses once the call is over
  (:meth:`gvbench.estimators.Estimator.frozen`).
- ``"within_call"``: from what only the call sees (REBAR's and RELAX's control variate and
  RODEO's Stein control take an optimiser step on the estimate; Double CV's weight folds in
  moments of its terms). It cannot be read as a constant while it adapts.
- ``"fixed"``: it does not change (a frozen copy, or one with its learning switched off).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

Adaptation = Literal["fixed", "from_losses", "within_call"]

__all__ = ["Adaptation", "EstimatorState"]


@runtime_checkable
class EstimatorState(Protocol):
    """State that an estimator keeps from call to call (see the module's docstring).

    The harness measures an adapted estimator with its state :meth:`frozen` (its draws are
    then i.i.d.), reports its :meth:`summary` beside the metrics, and a training checkpoint
    holds its :meth:`state_dict`.
    """

    @property
    def adaptation(self) -> Adaptation:
        """How it changes as the estimator is used: ``"fixed"``, ``"from_losses"`` or
        ``"within_call"``."""
        ...

    def update(self, *observed: Tensor) -> None:
        """Adapt once, from what one call observed: the per-example losses for a
        ``"from_losses"`` state; the estimator's own terms otherwise."""
        ...

    def frozen(self) -> Any:
        """The state as a constant: a number, or a copy that no longer adapts (this one goes
        on as it was)."""
        ...

    def summary(self) -> dict[str, float]:
        """Numbers that describe it (a baseline, η, λ, α), by name."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume it bit for bit."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...
