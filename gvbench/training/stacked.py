r"""One training step of many runs at once: their models stacked on a run axis, under ``vmap``.

The core is the functorch model-ensembling recipe::

    params, buffers = stack_module_state([*models, spare])
    means, surrogates = vmap(run_loss)(params, buffers, pools, taus, states, *batches)
    grads = torch.autograd.grad(means.sum(), list(params.values()))

``run_loss`` is one run's mean surrogate loss, its model's forward pass a
``functional_call`` with that run's slice of the stack. ``vmap`` covers the forward pass only;
one ordinary backward pass through the batched ops gives run r's gradient
:math:`\partial(\sum_s \bar L_s)/\partial\theta_r = \partial \bar L_r/\partial\theta_r`
exactly, since the runs share no parameter. ``vmap(grad(run_loss))`` would compute them too,
with a grad transform wrapped around every op under vmap, at a higher cost.

**A run's numbers do not depend on the runs it trains with**, bit for bit:

- noise: each run draws from its own generator (:mod:`gvbench.estimators.streams`), through a
  pool of uniforms per run that is vmapped with the parameters;
- reductions: only over one run's values (its loss, its gradient norm);
- kernels: torch's batched matrix product gives a matrix the same bits at any batch count
  of two or more, but takes another kernel for a batch of one; element-wise kernels finish a
  tensor's last few elements outside their vector loop. So every stack carries one *spare*
  run at the end (:class:`Spare`): the first run's parameters at the group's start on the
  first run's batch, never updated, its numbers thrown away. A run alone is a batch of two,
  and no real run is ever last. The spare covers a tail only as long as its own tensor: a
  per-run tensor shorter than the vector loop (16 float32 elements with AVX2) through an op
  that rounds differently there (sigmoid, softplus, pow) can still take other bits in a
  stack of another size.

Estimator state read as a constant number within a step (REINFORCE's running-mean baseline)
enters the stack as a tensor with a row per run, like τ.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from gvbench.estimators import Estimator, RunStream, RunStreams
from gvbench.estimators.streams import PoolExhausted
from gvbench.estimators.validation import set_validate_args, validate_args
from gvbench.training.runs import RunState, Steps

# Uniforms per run in a step's first pool (it grows until a step's needs fit).
INITIAL_POOL = 4096


class NotVectorisable(Exception):
    """vmap could not run the estimator on the model."""


class Spare:
    """The spare run at the end of every stack (see the module's docstring): the first run's
    model as the group starts, and a generator of its own."""

    def __init__(self, first: RunState) -> None:
        self.model = copy.deepcopy(first.model)
        self.generator = torch.Generator(device=first.generator.device).manual_seed(0)


@dataclasses.dataclass(frozen=True)
class StackedStep:
    """What one step of a stack gives each live run (the spare's dropped).

    Args:
        grads: by parameter name, the gradients with the run axis first.
        surrogates: ``(runs, B)`` per-example surrogate losses.
        moves: per run, what moves its estimator's state after the step, given its own
            surrogate losses (a running baseline), or does nothing.
    """

    grads: dict[str, Tensor]
    surrogates: Tensor
    moves: list[Callable[[Tensor], None]]


def stacked_step(
    live: Sequence[RunState],
    batches: Sequence[tuple[Tensor, ...]],
    spare: Spare,
    steps: Steps,
    keys: Sequence[str] = (),
) -> StackedStep:
    """Every live run's gradient at ``batches`` (one per run) in one vmapped pass.

    ``keys``: the estimator's options read per run (see
    :func:`~gvbench.training.per_run_state`). Raises :class:`NotVectorisable` where vmap
    cannot run the estimator, and :class:`~gvbench.estimators.streams.PoolExhausted` where a
    run's pool was too small (grow it with :func:`grown_pool` and try again).
    """
    params, buffers = stack_module_state([*(m.model for m in live), spare.model])
    batch = [torch.stack([*column, column[0]]) for column in zip(*batches, strict=True)]
    streams = RunStreams([*(m.generator for m in live), spare.generator])
    pools = streams.pools(max(m.progress.pool or INITIAL_POOL for m in live))
    taus = _temperatures(live, params)
    frozen = [m.estimator.frozen() for m in live]
    states = _states([e.options for e, _ in frozen], keys, live[0].generator.device)
    run_loss = _run_loss(frozen[0][0], steps, live[0].run.model, live[0].run.tau is not None)
    with torch.enable_grad(), _under_vmap():
        means, surrogates = vmap(run_loss, randomness="error")(
            params, buffers, pools, taus, states, *batch
        )
        found = torch.autograd.grad(means.sum(), list(params.values()), allow_unused=True)
    grads = {
        n: g[: len(live)] if g is not None else torch.zeros_like(params[n][: len(live)])
        for n, g in zip(params, found, strict=True)
    }
    return StackedStep(grads, surrogates[: len(live)], [move for _, move in frozen])


def _run_loss(
    estimator: Estimator, steps: Steps, template: nn.Module, tempered: bool
) -> Callable[..., tuple[Tensor, Tensor]]:
    """One run's mean surrogate loss (and its per-example values) at its slice of the stack:
    its parameters and buffers, pool, τ, estimator state and batch."""

    def run_loss(
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        pool: Tensor,
        tau: Tensor,
        state: dict[str, Tensor],
        *batch: Tensor,
    ) -> tuple[Tensor, Tensor]:
        def objective(sample: Any) -> Tensor:
            output = functional_call(template, {**params, **buffers}, batch, {"sample": sample})
            return steps.loss(output, *batch)

        options = {**estimator.options, **state}
        if tempered:
            options["tau"] = tau
        run_estimator = dataclasses.replace(estimator, options=options)
        surrogate = run_estimator(objective, generator=RunStream(pool))
        return surrogate.mean(), surrogate.detach()

    return run_loss


@contextlib.contextmanager
def value_checks_off() -> Iterator[None]:
    """The estimators' value checks off: they are data-dependent control flow, which vmap
    refuses."""
    checking = validate_args()
    set_validate_args(False)
    try:
        yield
    finally:
        set_validate_args(checking)


@contextlib.contextmanager
def _under_vmap() -> Iterator[None]:
    """Value checks off, and vmap's refusal of the estimator as :class:`NotVectorisable`."""
    with value_checks_off():
        try:
            yield
        except PoolExhausted:
            raise
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
            if "vmap" in str(error) or "functorch" in str(error) or "batching rule" in str(error):
                raise NotVectorisable(str(error)) from error
            raise


def _states(
    options: Sequence[Mapping[str, Any]], keys: Sequence[str], device: torch.device
) -> dict[str, Tensor]:
    """Each run's state read as a number for this step (see
    :func:`~gvbench.training.per_run_state`), the spare's (the first run's) last, in float64:
    the estimator rounds it to its loss's dtype once, as it rounds a number."""
    return {
        key: torch.tensor(
            [*(run[key] for run in options), options[0][key]], dtype=torch.float64, device=device
        )
        for key in keys
    }


def _temperatures(live: Sequence[RunState], params: Mapping[str, Tensor]) -> Tensor:
    """Each run's τ at its step (a schedule's, where it anneals), the spare's (the first
    run's) last, in the precision the runs ask for (see :class:`~gvbench.training.Run`: one
    for the group, which lies on one side of τ = 1); zeros where the estimator takes no τ."""
    taus = [m.tau for m in live]
    device = live[0].generator.device
    if taus[0] is None:
        return torch.zeros(len(live) + 1, device=device)
    wide = any(p.dtype == torch.float64 for p in params.values()) or live[0].largest_tau > 1.0
    dtype = torch.float64 if wide else torch.float32
    return torch.tensor([*taus, taus[0]], dtype=dtype, device=device)


def grown_pool(size: int, needed: int) -> int:
    """The next pool size after one of ``size`` ran out with at least ``needed`` asked for.

    ``needed`` rounded up to a multiple of :data:`INITIAL_POOL`: drawing the pool is a large
    part of a step where an estimator draws much (GR-MC100), so it stays near the step's need
    rather than at a power of two above it; a step that needs more still grows it again.
    """
    return max(size + INITIAL_POOL, -(-needed // INITIAL_POOL) * INITIAL_POOL)
