"""Scoring runs on their validation data: every run of a group (and a spare) in one vmapped
pass per chunk of examples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from gvbench.estimators import RunStream, RunStreams
from gvbench.estimators.streams import PoolExhausted
from gvbench.training.runs import RunState, Steps
from gvbench.training.stacked import INITIAL_POOL, grown_pool, value_checks_off

# Examples per vmapped evaluation pass (all runs at once).
EVALUATION_CHUNK = 500


def scores(members: Sequence[RunState], steps: Steps) -> list[float]:
    """Each run's mean validation score (``steps.score``) at its current parameters.

    Every run scores with a fresh generator of seed 0: hard samples, where the evaluation
    draws any, are the same from one evaluation to the next, so the curve moves only with
    the parameters. The first run is the stack's spare, as in a training step.
    """
    size = INITIAL_POOL
    while True:
        try:
            return _scores_with_pools(members, steps, size)
        except PoolExhausted as short:
            size = grown_pool(size, short.needed)


def _scores_with_pools(members: Sequence[RunState], steps: Steps, pool: int) -> list[float]:
    first = members[0]
    template = first.run.model
    params, buffers = stack_module_state([*(m.model for m in members), first.model])
    device = first.generator.device
    streams = RunStreams(
        [torch.Generator(device=device).manual_seed(0) for _ in range(len(members) + 1)]
    )

    def score(p: dict[str, Tensor], b: dict[str, Tensor], pool: Tensor, *batch: Tensor) -> Tensor:
        sample = steps.evaluation_sampler(RunStream(pool))
        output = functional_call(template, {**p, **b}, batch, {"sample": sample})
        return steps.score(output, *batch).double().sum()

    size = len(first.run.valid[0])
    totals = torch.zeros(len(members) + 1, dtype=torch.float64, device=device)
    with torch.no_grad(), value_checks_off():
        for start in range(0, size, EVALUATION_CHUNK):
            part = slice(start, start + EVALUATION_CHUNK)
            columns = zip(*(m.run.valid for m in members), strict=True)
            chunk = [torch.stack([*(x[part] for x in c), c[0][part]]) for c in columns]
            pools = streams.pools(pool)
            totals += vmap(score, randomness="error")(params, buffers, pools, *chunk)
    return [float(t) / size for t in totals[: len(members)]]
