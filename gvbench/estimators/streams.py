r"""Noise streams in place of a ``torch.Generator``: one per run, one per draw of a pass.

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

The same device serves a second need: R gradient draws of a module made one forward and
backward pass at a time must draw the noise that a ``vmap`` over the same R draws draws, so
that which way is faster does not decide the draws (:class:`DrawAxis`).

Estimators draw through :func:`gvbench.estimators.sampling.uniform` and
:func:`~gvbench.estimators.sampling.randint`, which accept a :class:`NoiseStream` (a
:class:`RunStream`, a :class:`DrawRow`) wherever they accept a ``torch.Generator``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

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


class NoiseStream(ABC):
    """What an estimator draws from where it takes ``generator=``, in place of a
    ``torch.Generator``: uniforms and integers of one draw's (or one run's) shape."""

    @abstractmethod
    def rand(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Uniforms on [0, 1) of ``shape``."""

    @abstractmethod
    def randint(self, high: int, shape: Sequence[int], device: torch.device) -> Tensor:
        """Integers uniform on [0, high) of ``shape``."""


class RunStream(NoiseStream):
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


def rewinder(generator: torch.Generator | None, device: torch.device) -> Callable[[], None]:
    """A function that puts ``generator`` (``None``: torch's global generator on ``device``)
    back in its present state: an attempt that fails, or a probe, then moves no stream."""
    if generator is not None:
        state = generator.get_state()
        return lambda: generator.set_state(state)
    if device.type == "cuda":
        state = torch.cuda.get_rng_state(device)
        return lambda: torch.cuda.set_rng_state(state, device)
    state = torch.get_rng_state()
    return lambda: torch.set_rng_state(state)


# A request for noise, as a draw axis serves it: kind ("rand", "randint"), shape, dtype or
# high, device.
Request = tuple[str, tuple[int, ...], object, str]


class DrawAxis:
    r"""The noise of one pass of R draws made one at a time, as a draw axis gives it.

    Under ``torch.func.vmap(..., randomness="different")`` over R draws, as in a task whose
    parameters carry a draw axis, a draw's request for noise of shape S is one call
    ``torch.rand((R, *S), generator=g)`` made for all R draws, draw r taking row r. Draws
    made one forward and backward pass at a time would instead take S values each in turn,
    and as soon as a draw makes two requests (an estimator that samples twice, a module
    with two sampler calls, GR-MCK's draws in the backward pass) the two ways interleave
    the stream differently. Here the first draw to make its k-th request draws that
    request's block of R rows from ``g``, and every draw's k-th request takes its own row
    (:meth:`row`): the same noise, bit for bit and on any device, as the vmapped pass.

    A draw's k-th request that differs from the block's (another kind, shape or dtype) has
    no vmapped counterpart, since vmap's draws make the same requests; it draws its own
    noise from ``g`` when it is made. The blocks are kept until all R draws have taken
    their rows: at most R draws' noise.

    Args:
        generator: the pass's generator (``None``: torch's global one, as vmap would use).
        draws: R, the draws of the pass.
    """

    def __init__(self, generator: torch.Generator | None, draws: int) -> None:
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.generator, self.draws = generator, draws
        self._requests: list[Request] = []
        self._blocks: list[Tensor | None] = []
        self._taken: list[int] = []

    def row(self, draw: int) -> DrawRow:
        """The stream of draw ``draw`` (0 ≤ draw < R), to pass as its ``generator``."""
        if not 0 <= draw < self.draws:
            raise ValueError(f"draw must lie in [0, {self.draws}), got {draw}")
        return DrawRow(self, draw)

    def take(
        self, draw: int, index: int, request: Request, make: Callable[[tuple[int, ...]], Tensor]
    ) -> Tensor:
        """Draw ``draw``'s ``index``-th request: its row of the block (drawn by
        ``make((R,))`` if it is the first to ask), or its own noise (``make(())``)."""
        if index == len(self._requests):
            self._requests.append(request)
            self._blocks.append(make((self.draws,)))
            self._taken.append(0)
        block = self._blocks[index] if self._requests[index] == request else None
        if block is None:
            return make(())
        self._taken[index] += 1
        if self._taken[index] == self.draws:
            self._blocks[index] = None  # every draw has its row
        # A copy of its own: the caller may transform it in place, or keep it for backward.
        return block[draw].clone()


class DrawRow(NoiseStream):
    """One draw's share of a :class:`DrawAxis`: row ``draw`` of each of its requests' blocks."""

    def __init__(self, axis: DrawAxis, draw: int) -> None:
        self.axis, self.draw, self.requests = axis, draw, 0

    def _next(self, request: Request, make: Callable[[tuple[int, ...]], Tensor]) -> Tensor:
        index, self.requests = self.requests, self.requests + 1
        return self.axis.take(self.draw, index, request, make)

    def rand(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        shape = tuple(shape)
        generator = self.axis.generator
        return self._next(
            ("rand", shape, dtype, str(torch.device(device))),
            lambda rows: torch.rand(
                (*rows, *shape), dtype=dtype, device=device, generator=generator
            ),
        )

    def randint(self, high: int, shape: Sequence[int], device: torch.device) -> Tensor:
        shape = tuple(shape)
        generator = self.axis.generator
        return self._next(
            ("randint", shape, high, str(torch.device(device))),
            lambda rows: torch.randint(high, (*rows, *shape), device=device, generator=generator),
        )

    def __repr__(self) -> str:
        return f"DrawRow({self.draw} of {self.axis.draws})"
