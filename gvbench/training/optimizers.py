r"""How a run's parameters move: update rules (:class:`SGD`, :class:`Adam`) assigned to
parameters by name prefix, after clipping the run's whole gradient (:class:`Optimizer`).

An experiment chooses its runs' optimizer in ``Experiment.optimizer(config)``, by default
``Optimizer((("", SGD(config.lr, config.momentum)),), max_norm=5.0)``. Another, DisARM's
binary VAE (Dong, Mnih & Tucker, 2020; ``google-research/disarm``, ``binary_vae_experiment.py``):
Adam at 1e-4 for the networks, SGD at 1e-2 for the prior's logits, no clipping::

    Optimizer((("prior", SGD(1e-2)), ("", Adam(1e-4))), max_norm=None)

Each run has its own optimizer, built from its own configuration, and its own state
(:class:`OptimizerState`); a run's steps are those it would take alone, bit for bit, in any
stack (:mod:`gvbench.training.sgd`, :mod:`gvbench.training.adam`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from gvbench.training.adam import AdamUpdate, adam
from gvbench.training.sgd import RunUpdate, clipping, sgd


def _check_rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class SGD:
    """SGD with momentum (``torch.optim.SGD``'s, no dampening, no weight decay, not
    Nesterov): :math:`b \\leftarrow \\mu b + g,\\ \\theta \\leftarrow \\theta - \\eta b`."""

    lr: float
    momentum: float = 0.0
    slots: ClassVar[tuple[str, ...]] = ("momentum",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _check_rate(self.lr, "lr"))
        object.__setattr__(self, "momentum", _check_fraction(self.momentum, "momentum"))

    def __str__(self) -> str:
        return f"SGD(lr={self.lr:g}, momentum={self.momentum:g})"


@dataclasses.dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba, 2015) as ``torch.optim.Adam`` computes it: bias-corrected, no weight
    decay, not AMSGrad (see :mod:`gvbench.training.adam`)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq")

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _check_rate(self.lr, "lr"))
        betas = self.betas
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        checked = tuple(_check_fraction(b, f"betas[{i}]") for i, b in enumerate(betas))
        object.__setattr__(self, "betas", checked)
        object.__setattr__(self, "eps", _check_rate(self.eps, "eps"))

    def __str__(self) -> str:
        beta1, beta2 = self.betas
        return f"Adam(lr={self.lr:g}, betas=({beta1:g}, {beta2:g}), eps={self.eps:g})"


Rule = SGD | Adam


@dataclasses.dataclass
class OptimizerState:
    """A run's optimizer state: per slot (``momentum`` for SGD's parameters, ``exp_avg`` and
    ``exp_avg_sq`` for Adam's) a tensor per parameter name, and the steps taken."""

    slots: dict[str, dict[str, Tensor]]
    step: int = 0

    def as_checkpoint(self) -> dict[str, Any]:
        """As a checkpoint's ``optimizer``: ``{slot: {name: tensor}, "step": n}`` on the CPU.
        An SGD run's is ``{"momentum": …}`` as checkpoints have always held it."""
        state: dict[str, Any] = {
            slot: {name: value.cpu() for name, value in values.items()}
            for slot, values in self.slots.items()
        }
        return state | {"step": self.step}


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A run's optimizer: each parameter moves by the rule of the first prefix its name starts
    with (``""`` matches every name), after the run's whole gradient :math:`g` is scaled by
    :math:`\\min(1, \\text{max\\_norm} / (\\lVert g \\rVert_2 + 10^{-6}))`
    (``torch.nn.utils.clip_grad_norm_``; ``max_norm=None``: no clipping).

    Args:
        rules: ``(prefix, SGD(…) | Adam(…))`` pairs, first match wins.
        max_norm: the norm the run's gradient is clipped to, or ``None``.
    """

    rules: tuple[tuple[str, Rule], ...]
    max_norm: float | None = 5.0

    def __post_init__(self) -> None:
        rules = self.rules
        if not isinstance(rules, tuple | list) or not rules:
            raise ValueError(
                f"rules must be (prefix, SGD | Adam) pairs, at least one; got {rules!r}"
            )
        for pair in rules:
            if not (
                isinstance(pair, tuple | list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], SGD | Adam)
            ):
                raise ValueError(f"rules must be (prefix, SGD | Adam) pairs, got {pair!r}")
        object.__setattr__(self, "rules", tuple((prefix, rule) for prefix, rule in rules))
        if self.max_norm is not None:
            object.__setattr__(self, "max_norm", _check_rate(self.max_norm, "max_norm"))

    def __str__(self) -> str:
        if len(self.rules) == 1 and self.rules[0][0] == "":
            rules = str(self.rules[0][1])
        else:
            rules = ", ".join(f"prefix {prefix!r}: {rule}" for prefix, rule in self.rules)
        clipped = "no clipping" if self.max_norm is None else f"max_norm {self.max_norm:g}"
        return f"{rules}; {clipped}"

    def rule(self, name: str) -> Rule:
        """The rule parameter ``name`` moves by; a ``ValueError`` naming it where none does."""
        return self.rules[self._index(name)][1]

    def _index(self, name: str) -> int:
        for index, (prefix, _) in enumerate(self.rules):
            if name.startswith(prefix):
                return index
        prefixes = ", ".join(repr(prefix) for prefix, _ in self.rules)
        raise ValueError(
            f"parameter {name!r} matches no rule of the optimizer (prefixes {prefixes}); add a "
            "rule for it, or one with prefix '' for every parameter"
        )

    def groups(self, names: Sequence[str]) -> list[tuple[Rule, list[str]]]:
        """``names`` by the rule each moves by, in the rules' order (names in theirs)."""
        chosen = {name: self._index(name) for name in names}
        return [
            (rule, [n for n in names if chosen[n] == index])
            for index, (_, rule) in enumerate(self.rules)
            if index in chosen.values()
        ]

    def init(self, params: Mapping[str, Tensor]) -> OptimizerState:
        """A fresh state for ``params``: zeros in every slot of every parameter's rule."""
        slots: dict[str, dict[str, Tensor]] = {}
        for rule, names in self.groups(list(params)):
            for slot in rule.slots:
                slots.setdefault(slot, {}).update({n: torch.zeros_like(params[n]) for n in names})
        return OptimizerState(slots)

    def restore(self, saved: Any, params: Mapping[str, Tensor]) -> OptimizerState:
        """The state a checkpoint's ``optimizer`` holds, on ``params``' devices; a
        ``ValueError`` saying what does not fit where it was written for another optimizer
        or model (a checkpoint of SGD alone, ``{"momentum": …}``, from any gvbench)."""
        fresh = self.init(params)
        if not isinstance(saved, dict):
            raise ValueError("holds no optimizer state")
        slots = {slot for rule in (SGD, Adam) for slot in rule.slots}
        if (set(saved) & slots) - set(fresh.slots):
            raise ValueError(
                f"holds optimizer state for {', '.join(sorted(set(saved) & slots))}; this "
                f"run's optimizer ({self}) keeps {', '.join(sorted(fresh.slots))}"
            )
        for slot, expected in fresh.slots.items():
            values = saved.get(slot)
            if not isinstance(values, dict):
                older = " (written by an older gvbench: no per-run momentum)"
                raise ValueError(f"holds no {slot}{older * (slot == 'momentum')}")
            if set(values) != set(expected):
                differ = sorted(set(values) ^ set(expected))
                raise ValueError(
                    f"holds {slot} for other parameters than this run's optimizer ({self}) "
                    f"keeps it for (they differ in {', '.join(differ)})"
                )
            for name, value in values.items():
                if not isinstance(value, Tensor) or value.shape != expected[name].shape:
                    raise ValueError(f"holds a {slot} of another shape for {name}")
                expected[name] = value.to(expected[name])
        # A checkpoint of SGD alone from an older gvbench counts no steps; SGD reads none.
        step = saved.get("step", 0)
        if not isinstance(step, int) or ("exp_avg" in fresh.slots and "step" not in saved):
            raise ValueError("holds no step count of its optimizer")
        fresh.step = step
        return fresh

    def updates(
        self,
        params: Mapping[str, Tensor],
        state: OptimizerState,
        grads: Mapping[str, Tensor],
        norm: float,
    ) -> list[RunUpdate | AdamUpdate]:
        """The step that moves ``params`` by ``grads`` (whose norm is ``norm``), one update per
        rule; counts it in ``state``. Apply them, with other runs', by :func:`apply`."""
        clip = clipping(norm, self.max_norm)
        state.step += 1
        groups = self.groups(list(grads))
        moves: list[RunUpdate | AdamUpdate] = []
        for rule, names in groups:
            if len(groups) == 1:
                mine, given = params, grads
            else:
                mine, given = {n: params[n] for n in names}, {n: grads[n] for n in names}
            if isinstance(rule, SGD):
                buffers = state.slots["momentum"]
                moves.append(RunUpdate(mine, buffers, given, rule.lr, rule.momentum, clip))
            else:
                first, second = state.slots["exp_avg"], state.slots["exp_avg_sq"]
                moves.append(
                    AdamUpdate(
                        mine, first, second, given, rule.lr, rule.betas, rule.eps, state.step, clip
                    )
                )
        return moves


def apply(updates: Sequence[RunUpdate | AdamUpdate], foreach: bool | None = None) -> None:
    """Every update in place: each rule's together (see :func:`~gvbench.training.sgd.sgd`,
    :func:`~gvbench.training.adam.adam`)."""
    sgd([u for u in updates if isinstance(u, RunUpdate)], foreach)
    adam([u for u in updates if isinstance(u, AdamUpdate)], foreach)
