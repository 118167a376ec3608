r"""SGD with momentum, written out per run, after clipping the run's gradient.

For each run, with its own learning rate :math:`\eta`, momentum :math:`\mu` and the norm
:math:`N` its gradient is clipped to (:data:`MAX_GRADIENT_NORM`, 5, by default):

.. math::

    c = \min\!\left(1, \frac{N}{\lVert g \rVert_2 + 10^{-6}}\right), \qquad
    b \leftarrow \mu b + c\,g, \qquad \theta \leftarrow \theta - \eta b,

``torch.nn.utils.clip_grad_norm_`` followed by ``torch.optim.SGD``'s step (:math:`b_0 = c\,g_0`).
It is written by hand rather than with one ``torch.optim.SGD`` per run because runs trained as
one are updated together (one ``torch._foreach_*`` call for every run's tensors) and each
run's norm must be read from its own gradient alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

MAX_GRADIENT_NORM = 5.0


@dataclasses.dataclass(frozen=True)
class RunUpdate:
    """One run's step: its parameters and momentum buffers (updated in place), its gradient
    (by parameter name), its settings and its clipping factor (see :func:`clipping`)."""

    params: Mapping[str, Tensor]
    momentum_buffers: Mapping[str, Tensor]
    grads: Mapping[str, Tensor]
    lr: float
    momentum: float
    clip: float = 1.0


def gradient_norms(runs: Sequence[Sequence[Tensor]]) -> Tensor:
    """The Euclidean norm of each run's gradient (its tensors), in float64, read where they lie.

    Each tensor is reduced on its own, whatever its strides (a weight's gradient comes back
    from the stacked backward pass transposed within its run): flattening the stack first
    would copy every gradient twice, a float64 copy on top of a transposing one, at more cost
    than the update itself. A run's slice has the same strides at any stack size, so its norm
    has the same bits.
    """
    sizes = [len(tensors) for tensors in runs]
    flat = torch._foreach_norm([g for tensors in runs for g in tensors], 2, dtype=torch.float64)
    norms, start = [], 0
    for size in sizes:
        norms.append(torch.linalg.vector_norm(torch.stack(flat[start : start + size])))
        start += size
    return torch.stack(norms)


def clipping(norm: float, max_norm: float | None = MAX_GRADIENT_NORM) -> float:
    """The factor that brings a gradient of norm ``norm`` down to ``max_norm`` (1 where it is
    no longer, or where ``max_norm`` is ``None``): ``torch.nn.utils.clip_grad_norm_``'s."""
    if max_norm is None:
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))


def sgd(updates: Sequence[RunUpdate], foreach: bool | None = None) -> None:
    """One SGD-with-momentum step of each run, in place, its gradient scaled by its ``clip``.

    ``foreach`` (by default: off the CPU, as ``torch.optim`` chooses) does each operation for
    every run's tensors in one ``torch._foreach_*`` call: on an accelerator one launch for all
    of them, where a run's update alone is some thirty. On the CPU the plain loop is faster:
    it finishes one tensor while it is in cache. Per tensor the two do the same arithmetic, so
    the bits are those of a run updated alone either way.
    """
    if not updates:
        return
    if foreach is None:
        foreach = next(iter(updates[0].grads.values())).device.type != "cpu"
    with torch.no_grad():
        if foreach:
            _sgd_foreach(updates)
            return
        for run in updates:
            for name, g in run.grads.items():
                g = g * run.clip if run.clip < 1.0 else g
                buffer = run.momentum_buffers[name].mul_(run.momentum).add_(g)
                run.params[name].add_(buffer, alpha=-run.lr)


def _sgd_foreach(updates: Sequence[RunUpdate]) -> None:
    clipped = [(g, run.clip) for run in updates if run.clip < 1.0 for g in run.grads.values()]
    scaled = iter(
        torch._foreach_mul([g for g, _ in clipped], [c for _, c in clipped]) if clipped else []
    )
    grads = [next(scaled) if run.clip < 1.0 else g for run in updates for g in run.grads.values()]
    buffers = [run.momentum_buffers[n] for run in updates for n in run.grads]
    torch._foreach_mul_(buffers, [run.momentum for run in updates for _ in run.grads])
    torch._foreach_add_(buffers, grads)
    # add(θ, b, alpha=−η) rounds as one operation (a fused multiply-add where the hardware
    # has one), as the loop's does: runs are grouped by learning rate to keep it.
    by_lr: dict[float, list[RunUpdate]] = {}
    for run in updates:
        by_lr.setdefault(run.lr, []).append(run)
    for lr, runs in by_lr.items():
        torch._foreach_add_(
            [run.params[n] for run in runs for n in run.grads],
            [run.momentum_buffers[n] for run in runs for n in run.grads],
            alpha=-lr,
        )
