"""Online adaptation of an estimator's own parameters (control variates, their weights).

REBAR's and RELAX's control variate and RODEO's Stein network all take one optimiser step per
call on the mean square of the estimate they just made: unbiased whatever their parameters
are, lower variance as they train.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def variance_step(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor], loss: Tensor
) -> None:
    """One step of ``optimizer`` on ``loss`` (an estimate's second moment) w.r.t.
    ``parameters``; skipped, leaving them as they were, where a gradient is not finite."""
    grads = torch.autograd.grad(loss, list(parameters), retain_graph=True, allow_unused=True)
    if all(torch.isfinite(g).all() for g in grads if g is not None):
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = None if grad is None else grad.detach()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def adam(parameters: Sequence[Tensor], lr: float, restored: dict | None) -> torch.optim.Adam:
    """The Adam optimiser of an adapting control, with the state a checkpoint ``restored``
    (Adam's moments are made lazily, so a checkpoint's are applied only once the parameters
    exist on their device)."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    if restored is not None:
        optimizer.load_state_dict(restored)
    return optimizer
