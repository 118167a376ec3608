r"""A toy k-subset problem: choose k of n items so that their weights sum to a target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators import SubsetSampler
from gvbench.estimators.subset_law import check_subset_size
from gvbench.estimators.validation import check_count, check_real
from gvbench.tasks.base import Parameters, Task
from gvbench.tasks.toy import floating_dtype


class SubsetToy(Task):
    r"""Quadratic loss of m independent k-subsets of n items.

    .. math::
        L(\theta) = \mathbb{E}_z\Big[\sum_{v=1}^m (w^\top z_v - t)^2\Big],\qquad
        z_v \sim p_{\theta_v}(z) \propto e^{\theta_v^\top z},\ z \in \{0,1\}^n,\
        \textstyle\sum_i z_i = k,

    the exponential-family k-subset law (:mod:`gvbench.estimators.subset_law`). The loss is
    a quadratic :math:`z^\top w w^\top z - 2t\,w^\top z + t^2` whose items interact (the
    value of one depends on which others are chosen); it accepts relaxed k-hots, so relaxed
    estimators apply. The exact gradient is autograd of the expectation over the
    :math:`\binom{n}{k}^m` subsets while they are few.

    Args:
        n: items per subset (>= 2).
        size: k, the items chosen, in ``[1, n − 1]``.
        m: number of subsets (>= 1).
        theta: logits, shape (m, n) or (n,) when m = 1; default: seeded standard normal draws
            (seed ``seed``), written into :meth:`config`.
        weights: :math:`w`, n numbers; default evenly spaced on [0, 1].
        target: :math:`t`; default ``size / 2``, the mean weight of k items, which several
            subsets come close to.
        seed: seed of the default θ.
        dtype: floating dtype of the parameters and the loss.
    """

    name = "subset_toy"
    relaxed_inputs = True
    variable = "subset"

    def __init__(
        self,
        n: int = 6,
        size: int = 3,
        m: int = 1,
        theta: Sequence[float] | Sequence[Sequence[float]] | Tensor | None = None,
        weights: Sequence[float] | Tensor | None = None,
        target: float | None = None,
        seed: int = 0,
        dtype: str | torch.dtype = torch.float64,
    ) -> None:
        self.n = check_count(n, "n (items)", 2)
        self.size = check_subset_size(size, self.n)
        self.m = check_count(m, "m (subsets)", 1)
        self.seed = check_count(seed, "seed", 0, 2**63 - 1)
        self.dtype = floating_dtype(dtype)
        if theta is None:
            generator = torch.Generator().manual_seed(self.seed)
            theta = torch.randn(self.m, self.n, generator=generator, dtype=torch.float64)
        self.theta = _finite(theta, (self.m, self.n), "theta", self.dtype)
        if weights is None:
            weights = torch.linspace(0.0, 1.0, self.n, dtype=torch.float64)
        self.weights = _finite(weights, (self.n,), "weights", self.dtype)
        self.target = self.size / 2 if target is None else check_real(target, "target")
        if not math.isfinite(self.target):
            raise ValueError(f"target must be finite, got {target!r}")

    @property
    def outcomes(self) -> int:
        return math.comb(self.n, self.size) ** self.m

    def parameters(self) -> dict[str, Tensor]:
        return {"theta": self.theta}

    def loss(self, params: Parameters, sample: SubsetSampler, batch_size: int) -> Tensor:
        theta = params["theta"]  # (R, m, n)
        logits = theta[:, None].expand(theta.shape[0], batch_size, self.m, self.n)
        chosen = sample(logits, self.size) @ self.weights  # (R, B, m)
        return (chosen - self.target).square().sum(-1)

    def enumerable(self, batch_size: int) -> bool:
        del batch_size  # examples are independent: enumeration is per example
        return self.outcomes <= 100_000

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "n": self.n,
            "size": self.size,
            "m": self.m,
            "theta": self.theta.tolist(),
            "weights": self.weights.tolist(),
            "target": self.target,
            "seed": self.seed,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def _finite(values: Any, shape: tuple[int, ...], name: str, dtype: torch.dtype) -> Tensor:
    """``values`` as a finite tensor of ``shape`` (any layout of that many numbers)."""
    try:
        tensor = torch.as_tensor(values, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be numbers, {' × '.join(map(str, shape))}") from None
    if tensor.numel() != math.prod(shape):
        raise ValueError(
            f"{name} must have {math.prod(shape)} values ({' × '.join(map(str, shape))}), got "
            f"shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite")
    return tensor.reshape(shape).clone()
