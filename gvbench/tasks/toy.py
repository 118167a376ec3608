r"""The toy problem of Paulus et al. (2021, §5.1): a quadratic loss of categorical variables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.tasks.base import Parameters, Task


def floating_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A floating dtype given as a torch dtype or its name (``"float32"``, ``"float64"``)."""
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or value not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return value


class Toy(Task):
    r"""Quadratic loss of m independent categorical variables of arity n.

    .. math::
        L(\theta) = \mathbb{E}_D\Big[\sum_{v=1}^m (D_v - c)^\top Q (D_v - c)\Big],\qquad
        D_v \sim \mathrm{Cat}(\mathrm{softmax}\,\theta_v),

    with :math:`Q_{ij} = \exp(-2|i - j|)` and :math:`c_i = 1/3` (the paper's choice; m = 1,
    n = 3). The loss accepts relaxed inputs, so every estimator applies; the exact gradient is
    autograd of the enumerated expectation while :math:`n^m` is small.

    Args:
        n: categories per variable (>= 2).
        m: number of variables (>= 1).
        theta: logits, shape (m, n) or (n,) when m = 1; default: seeded standard normal draws
            (seed ``seed``), written into :meth:`config` so a result file records them.
        centre: the vector c (default 1/3 in every coordinate).
        seed: seed of the default θ.
        dtype: floating dtype of the parameters and the loss.
    """

    name = "toy"
    relaxed_inputs = True

    def __init__(
        self,
        n: int = 3,
        m: int = 1,
        theta: Sequence[float] | Sequence[Sequence[float]] | Tensor | None = None,
        centre: float | Sequence[float] = 1 / 3,
        seed: int = 0,
        dtype: str | torch.dtype = torch.float64,
    ) -> None:
        self.n = check_count(n, "n (categories)", 2)
        self.m = check_count(m, "m (variables)", 1)
        self.seed = check_count(seed, "seed", 0, 2**63 - 1)
        self.dtype = floating_dtype(dtype)
        if theta is None:
            generator = torch.Generator().manual_seed(self.seed)
            theta = torch.randn(self.m, self.n, generator=generator, dtype=torch.float64)
        try:
            theta = torch.as_tensor(theta, dtype=self.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"theta must be numbers (m × n logits), got {theta!r}") from None
        if theta.numel() != self.m * self.n:
            raise ValueError(
                f"theta must have m × n = {self.m} × {self.n} values, got shape {tuple(theta.shape)}"
            )
        theta = theta.reshape(self.m, self.n).clone()
        if not torch.isfinite(theta).all():
            raise ValueError("theta must be finite")
        self.theta = theta
        try:
            centre = torch.as_tensor(centre, dtype=self.dtype)
            self.centre = torch.broadcast_to(centre, (self.n,)).clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"centre must be a number or {self.n} numbers (one per category), got {centre!r}"
            ) from None
        if not torch.isfinite(self.centre).all():
            raise ValueError("centre must be finite")
        index = torch.arange(self.n, dtype=self.dtype)
        self.q = torch.exp(-2 * (index[:, None] - index[None, :]).abs())

    @property
    def arity(self) -> int:
        return self.n

    @property
    def outcomes(self) -> int:
        return self.n**self.m

    def parameters(self) -> dict[str, Tensor]:
        return {"theta": self.theta}

    def loss(self, params: Parameters, sample: Sampler, batch_size: int) -> Tensor:
        theta = params["theta"]  # (R, m, n)
        logits = theta[:, None].expand(theta.shape[0], batch_size, self.m, self.n)
        x = sample(logits) - self.centre
        return torch.einsum("rbvi,ij,rbvj->rb", x, self.q, x)

    def enumerable(self, batch_size: int) -> bool:
        del batch_size  # examples are independent: enumeration is per example
        return self.n**self.m <= 100_000

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "n": self.n,
            "m": self.m,
            "theta": self.theta.tolist(),
            "centre": self.centre.tolist(),
            "seed": self.seed,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def simplex_points(resolution: int) -> list[tuple[float, float, float]]:
    """Interior points of the probability simplex on a triangular grid: p = (i, j, l)/resolution
    with i + j + l = resolution and every coordinate >= 1 (the paper's Figure 1 covers the simplex)."""
    if resolution < 3:
        raise ValueError(f"resolution must be an integer >= 3, got {resolution}")
    return [
        (i / resolution, j / resolution, (resolution - i - j) / resolution)
        for i in range(1, resolution - 1)
        for j in range(1, resolution - i)
    ]
