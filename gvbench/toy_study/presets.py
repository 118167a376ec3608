"""The toy study's presets and the estimators and tasks each of its sweeps measures."""

from __future__ import annotations

import dataclasses

from gvbench.estimators import variants
from gvbench.harness.sweep import DEFAULT_K, DEFAULT_TAU

# The paper's toy comparison: the estimators of §5.1.
TOY_ESTIMATORS = (
    "straight_through",
    "st_gumbel_softmax",
    "gumbel_softmax",
    "gumbel_rao",
    "reinforce",
)
# Beyond the paper: the field's estimators since 2017, on the paper's toy (one ternary
# variable) and on a binary toy (four Bernoulli variables), where the binary-only ones apply.
# The binary toy's centre is not uniform: with c = (½, ½) both outcomes would cost the same
# and every gradient would be 0. Both losses are separable, on which IndeCateR is exact.
FIELD_TASKS = {
    "field-toy": {"n": 3, "m": 1},
    "field-binary": {"n": 2, "m": 4, "centre": (0.2, 0.7)},
}
FIELD_TITLES = {
    "field-toy": "the paper's toy (one ternary variable)",
    "field-binary": "a binary toy (four Bernoulli variables)",
}
FIELD_ESTIMATORS = (
    *variants("decoupled_straight_through", forward_tau=[0.5, 1.0, 2.0]),
    "reinforce",
    "rloo",
    "unordered_set",
    "indecater",
    "carms",
    "categorical_disarm",
    "rebar",
    "relax",
    "arms",
    "arm",
    "disarm",
    "double_cv",
    "rodeo",
)
FIELD_TAU = (0.5, 1.0)
FIELD_K = (2, 4)


@dataclasses.dataclass(frozen=True)
class ToyPreset:
    tau: tuple[float, ...]
    k: tuple[int, ...]
    reps: int
    simplex_resolution: int
    simplex_tau: tuple[float, ...]
    simplex_k: int
    simplex_reps: int
    field_warmup: int  # adaptation steps of the stateful estimators (see `sweep`'s warmup)


PRESETS = {
    "tiny": ToyPreset((0.01, 0.1, 1.0), (1, 10, 100), 400, 4, (0.1, 1.0), 100, 200, 50),
    "small": ToyPreset(DEFAULT_TAU, DEFAULT_K, 10_000, 12, (0.1, 0.5, 1.0), 1000, 2000, 1000),
    # The toy's claims are decided at small; medium trains further, not the toy.
    "medium": ToyPreset(DEFAULT_TAU, DEFAULT_K, 10_000, 12, (0.1, 0.5, 1.0), 1000, 2000, 1000),
    "paper": ToyPreset(DEFAULT_TAU, DEFAULT_K, 100_000, 30, (0.1, 0.5, 1.0), 1000, 10_000, 1000),
}
