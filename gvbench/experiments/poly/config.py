"""A polynomial-programming run's configuration, and the runs of a published protocol."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from gvbench.estimators.validation import check_real
from gvbench.experiments.poly.presets import Protocol
from gvbench.training import RunConfig, option


@dataclasses.dataclass(frozen=True)
class PolyConfig(RunConfig):
    """One run: ``variables`` binary variables, loss :math:`\\sum_i |z_i - c|^p / D`, Adam."""

    variables: int = option(128, "binary variables D (ReinMax: 128; the quadratic toy: 1)")
    power: float = option(2.0, "p of the loss |z − c|^p (ReinMax: 1.5, 2, 3)")
    target: float = option(0.45, "c of the loss |z − c|^p (ReinMax: 0.45; the toy: 0.499)")
    initial_probability: float = option(0.5, "P(z = 1) every variable starts at")
    init_scale: float = option(0.01, "s of the U(−s, s) jitter of the initial logits")
    batch_size: int = option(64, "draws of the variables per step")
    steps: int = 8000
    lr: float = option(1e-3, "Adam's learning rate")
    momentum: float = option(0.0, "not read: the runs train with Adam")
    eval_every: int = 200
    variance_every: int = 0

    COUNTS: ClassVar[dict[str, int]] = {**RunConfig.COUNTS, "variables": 1, "batch_size": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        power = check_real(self.power, "power")
        if not (0 < power < math.inf):
            raise ValueError(f"power must be a finite number > 0, got {self.power!r}")
        if not math.isfinite(check_real(self.target, "target")):
            raise ValueError(f"target must be a finite number, got {self.target!r}")
        if not 0 < check_real(self.initial_probability, "initial_probability") < 1:
            raise ValueError(
                f"initial_probability must lie in (0, 1), got {self.initial_probability!r}"
            )
        scale = check_real(self.init_scale, "init_scale")
        if not 0 <= scale < math.inf:
            raise ValueError(f"init_scale must be a finite number >= 0, got {self.init_scale!r}")

    def prefix(self) -> str:
        return f"D{self.variables}-p{self.power:g}-c{self.target:g}-B{self.batch_size}"


def protocol_configs(
    protocol: Protocol, seeds: Sequence[int]
) -> dict[tuple[str, float, float, int], PolyConfig]:
    """Every run of ``protocol``, keyed ``(label, power, target, seed)``, at its published
    learning rate and each run's τ."""
    return {
        (label, power, target, seed): protocol_config(
            protocol, estimator, k=k, tau=tau, power=power, target=target, seed=seed
        )
        for label, estimator, k, tau in protocol.runs
        for power in protocol.powers
        for target in protocol.targets
        for seed in seeds
    }


def protocol_config(protocol: Protocol, estimator: str, **fields: Any) -> PolyConfig:
    """One run of ``protocol`` with ``estimator``; ``fields`` override its sizes."""
    sizes = {
        "variables": protocol.variables,
        "power": protocol.powers[0],
        "target": protocol.targets[0],
        "initial_probability": protocol.initial_probability,
        "init_scale": protocol.init_scale,
        "batch_size": protocol.batch_size,
        "steps": protocol.steps,
        "lr": protocol.lr,
        "eval_every": protocol.eval_every,
    }
    return PolyConfig(estimator=estimator, **(sizes | fields))
