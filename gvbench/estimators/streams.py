r"""One random stream per run: many training runs drawing their noise as if each were alone.

Runs trained as one are a ``torch.func.vmap`` over their stacked parameters. Under vmap,
``torch.rand(…, generator=g)`` draws every run's noise from the one ``g`` (or the same noise
for all, ``randomness="same"``), so a run's samples would depend on which runs share its
step. :class:`RunStreams` holds one ``torch.Generator`` per run; the estimator of run ``r``
gets ``streams.stream(r)`` where it takes ``generator=``, and every draw it makes comes from
run r's own generator — under vmap through a batching rule that draws each run's block in
turn, outside it directly. A run's noise, and so its numbers, are the same in any group,
which is what lets a researcher train eight seeds at once and trust seed 3 to be seed 3.

Estimators draw through :func:`gvbench.estimators.sampling.uniform` and
:func:`~gvbench.estimators.sampling.randint`, which accept a :class:`RunStream` wherever
they accept a ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


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

    def runs(self) -> Tensor:
        """The run indices ``0 … R − 1``, to vmap over with the runs' parameters."""
        return torch.arange(len(self.generators))

    def stream(self, run: Tensor) -> RunStream:
        """The stream of run ``run`` (a 0-d index tensor, batched under vmap)."""
        return RunStream(self, run)

    def __repr__(self) -> str:
        return f"RunStreams({len(self.generators)} runs on {self.device})"


class RunStream:
    """The random stream of one run of a :class:`RunStreams` (of each run, under vmap)."""

    def __init__(self, streams: RunStreams, run: Tensor) -> None:
        self.streams, self.run = streams, run

    @property
    def device(self) -> torch.device:
        return self.streams.device

    def rand(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Uniforms on [0, 1) of ``shape`` (one run's shape), from the run's generator."""
        return _Draw.apply(self.run, self.streams, "rand", (tuple(shape), dtype, device))

    def randint(self, high: int, shape: Sequence[int], device: torch.device) -> Tensor:
        """Integers uniform on [0, high) of ``shape``, from the run's generator."""
        return _Draw.apply(self.run, self.streams, "randint", (high, tuple(shape), device))


def _draw(generator: torch.Generator, kind: str, args: tuple[Any, ...]) -> Tensor:
    if kind == "rand":
        shape, dtype, device = args
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)
    high, shape, device = args
    return torch.randint(high, shape, device=device, generator=generator)


class _Draw(torch.autograd.Function):
    """A draw from run ``run``'s generator; under vmap, each run's from its own, stacked.

    An autograd Function only for its ``vmap`` rule: the public way to give a random draw
    a batching rule of its own. The draw carries no gradient.
    """

    @staticmethod
    def forward(run: Tensor, streams: RunStreams, kind: str, args: tuple[Any, ...]) -> Tensor:
        return _draw(streams.generators[int(run)], kind, args)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.mark_non_differentiable(output)

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        run: Tensor,
        streams: RunStreams,
        kind: str,
        args: tuple[Any, ...],
    ) -> tuple[Tensor, int]:
        runs = run.movedim(in_dims[0], 0) if in_dims[0] is not None else run.expand(info.batch_size)
        draws = [_draw(streams.generators[int(r)], kind, args) for r in runs.tolist()]
        return torch.stack(draws), 0
