r"""One random stream per run: many training runs drawing their noise as if each were alone.

Runs trained as one are a ``torch.func.vmap`` over their stacked parameters. Under vmap,
``torch.rand(…, generator=g)`` draws every run's noise from the one ``g``, so a run's samples
would depend on which runs share its step. :class:`RunStreams` holds one ``torch.Generator``
per run. Before a step, each run draws a *pool* of uniforms from its own generator
(:meth:`RunStreams.pools`); the pools are vmapped with the parameters, and the estimator of
each run gets ``RunStream(pool)`` where it takes ``generator=``: every draw it makes is the
next slice of its own pool. A run's noise — and so its numbers — are the same in any group,
which is what lets a researcher train eight seeds at once and trust seed 3 to be seed 3.

A pool holds a fixed number of uniforms per step; a step that needs more raises
:class:`PoolExhausted` and is retried with a larger pool (the caller restores the generators
first), so the size follows the step's needs alone, whatever the group. Uniforms
asked for in a narrower type than float64 are rounded down below 1, so that ``1 − U`` never
vanishes; integers are ``⌊U · high⌋``.

Estimators draw through :func:`gvbench.estimators.sampling.uniform` and
:func:`~gvbench.estimators.sampling.randint`, which accept a :class:`RunStream` wherever
they accept a ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class PoolExhausted(RuntimeError):
    """A step asked a run's pool for more uniforms than it holds (``needed`` at least)."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the run's pool of uniforms ran out: {needed} needed")
        self.needed = needed


class RunStreams:
    """Independent random streams, one per run.

    Args:
        generators: one ``torch.Generator`` per run, in run order, all on one device.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError("generators must be a non-empty sequence of torch.Generator")
        if len({str(g.device) for g in generators}) != 1:
            raise ValueError("the generators of RunStreams must share one device")
        self.generators = generators

    def __len__(self) -> int:
        return len(self.generators)

    @property
    def device(self) -> torch.device:
        return self.generators[0].device

    def pools(self, size: int) -> Tensor:
        """``(R, size)`` float64 uniforms, row r from run r's generator: vmap over them."""
        # Filled in place, row by row: each row's uniforms are the same as
        # ``torch.rand(size, generator=g)`` would give, without a stacked copy of them all.
        pools = torch.empty(len(self.generators), size, dtype=torch.float64, device=self.device)
        for row, generator in zip(pools, self.generators, strict=True):
            row.uniform_(generator=generator)
        return pools

    def get_state(self) -> list[Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[Tensor]) -> None:
        for g, state in zip(self.generators, states, strict=True):
            g.set_state(state)

    def __repr__(self) -> str:
        return f"RunStreams({len(self.generators)} runs on {self.device})"


class RunStream:
    """One run's stream: successive slices of its pool (under vmap, each run's own pool)."""

    def __init__(self, pool: Tensor) -> None:
        self.pool, self.offset = pool, 0

    @property
    def device(self) -> torch.device:
        return self.pool.device

    def _next(self, shape: Sequence[int]) -> Tensor:
        count = math.prod(shape)
        if self.offset + count > self.pool.shape[-1]:
            raise PoolExhausted(self.offset + count)
        part = self.pool[self.offset : self.offset + count]
        self.offset += count
        return part.reshape(tuple(shape))

    def rand(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Uniforms on [0, 1) of ``shape`` (one run's shape)."""
        u = self._next(shape)
        if dtype == torch.float64:
            return u.clone()  # callers transform their draws in place
        return u.to(dtype).clamp_max_(1 - torch.finfo(dtype).eps / 2)

    def randint(self, high: int, shape: Sequence[int], device: torch.device) -> Tensor:
        """Integers uniform on [0, high) of ``shape``."""
        return (self._next(shape) * high).floor_().long().clamp_max_(high - 1)
