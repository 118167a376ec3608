"""Argument checks shared by every estimator, with messages that name the argument.

Like ``torch.distributions.Distribution.set_default_validate_args``, the checks that need a
device synchronisation (finite logits) can be switched off for production training loops.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

_validate = True

# The largest K (Monte Carlo samples, objective repetitions) any estimator accepts: beyond it a
# single call would run for hours on any machine, which looks like a hang.
MAX_K = 1 << 24


class NonFiniteLogits(ValueError):
    """Logits with NaN or +inf: a bad input, or, inside training, a model that has diverged."""


def refuse_subset_size(size: object) -> None:
    """A categorical sampler called as a k-subset one, ``sample(logits, size)``: one line."""
    if size is not None:
        raise TypeError(
            f"this estimator samples categorical variables and takes no size (got {size!r}): "
            "an objective that calls sample(logits, size) needs a k-subset estimator "
            "(variable='subset' in gvbench list)"
        )


def check_bernoulli_logit(logit: Tensor) -> None:
    """A Bernoulli sampler's one logit per variable: a floating tensor, finite where the value
    checks are on (:func:`set_validate_args`; off under ``torch.func.vmap``)."""
    if not isinstance(logit, Tensor) or not logit.is_floating_point():
        raise ValueError("logit must be a floating-point torch.Tensor")
    if logit.numel() and _validate and not bool(torch.isfinite(logit).all()):
        raise NonFiniteLogits("logit must be finite (no NaN or ±inf)")


def set_validate_args(value: bool) -> None:
    """Turn the value checks on logits (NaN, +inf) on or off globally.

    Shape, type and hyper-parameter checks always run: they cost nothing. The value checks
    reduce over the logits and so synchronise a CUDA stream once per call.
    """
    global _validate
    _validate = bool(value)


def validate_args() -> bool:
    """Whether the value checks on logits are on."""
    return _validate


def check_logits(logits: Tensor, dim: int = -1, name: str = "logits") -> int:
    """Check a logits tensor and return ``dim`` as a non-negative index.

    Logits must be a floating tensor with at least two categories along ``dim``. ``-inf``
    marks an impossible category (masking); NaN, ``+inf`` and rows with no finite logit are
    rejected.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the categories)")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(
            f"dim must be an integer in [{-logits.dim()}, {logits.dim() - 1}], got {dim!r}"
        )
    dim = int(dim)
    if not -logits.dim() <= dim < logits.dim():
        raise ValueError(
            f"dim={dim} is out of range for {name} with {logits.dim()} dimensions "
            f"(allowed: {-logits.dim()} … {logits.dim() - 1})"
        )
    dim = dim % logits.dim()
    if logits.shape[dim] < 2:
        raise ValueError(
            f"{name} must have at least 2 categories along dim={dim}, got {logits.shape[dim]}"
        )
    if _validate and logits.numel() > 0:
        row_max = logits.detach().amax(dim)
        # amax propagates NaN and +inf, and is -inf only for a fully masked row: one reduction
        # catches all three.
        if not bool(torch.isfinite(row_max).all()):
            raise NonFiniteLogits(
                f"{name} must not contain NaN or +inf, and every distribution needs at least "
                "one finite logit (-inf masks a category)"
            )
    return dim


def check_real(value: object, name: str) -> float:
    """A real number (int, float, NumPy or 0-d tensor); not a bool or a string."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def per_run(value: object) -> bool:
    """Whether ``value`` is one number per run of a stack: a 0-d floating tensor under a
    function transform (``vmap`` over runs, :mod:`gvbench.training.stacked`). Its values cannot be
    read there; they were checked where the runs were configured or the state was kept."""
    return (
        isinstance(value, Tensor)
        and value.dim() == 0
        and value.is_floating_point()
        and torch._C._functorch.is_functorch_wrapped_tensor(value)
    )


def check_tau(tau: float | Tensor, dtype: torch.dtype | None = None) -> float | Tensor:
    """Temperature τ: a finite number > 0 and, given the logits' dtype, between its smallest
    normal number (below it ``x/τ`` overflows for every logit of order one) and its largest.

    Under a function transform, a 0-d floating tensor — one τ per run when runs train as one
    under ``vmap`` (:mod:`gvbench.training.stacked`) — is returned as it is, its dtype the working
    precision it asks for (GR-MCK's): its values cannot be read there, and were checked when
    the runs were configured. Elsewhere a 0-d tensor is read as a number.
    """
    if per_run(tau):
        return tau  # type: ignore[return-value]
    value = check_real(tau, "tau")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if dtype is not None and dtype.is_floating_point:
        limits = torch.finfo(dtype)
        if value < limits.tiny:
            raise ValueError(
                f"tau must be >= {limits.tiny:.3g}, the smallest normal {dtype} number "
                f"(got {tau!r}); use float64 logits for a smaller τ"
            )
        if value > limits.max:
            raise ValueError(f"tau must be <= {limits.max:.3g}, the largest {dtype} number")
    return value


def check_count(value: int, name: str, minimum: int, maximum: int = MAX_K) -> int:
    """An integer hyper-parameter (K, a number of samples) within [minimum, maximum]."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_objective(objective: object) -> None:
    """An objective is a function of a sampler (it returns per-example losses)."""
    if not callable(objective):
        raise TypeError(
            "objective must be a function of a sampler returning per-example losses, got "
            f"{type(objective).__name__}"
        )


def check_losses(loss: object) -> Tensor:
    """What an objective returns: a floating tensor of per-example losses."""
    if not isinstance(loss, Tensor) or not loss.is_floating_point():
        raise TypeError(
            "objective must return a floating tensor of per-example losses, got "
            f"{type(loss).__name__}{'' if not isinstance(loss, Tensor) else f' of dtype {loss.dtype}'}"
        )
    return loss


def check_sample(sample: Tensor, logits: Tensor, dim: int) -> Tensor:
    """Return ``sample`` as a category index tensor of the logits' batch shape.

    ``sample`` is either one-hot with the logits' shape or an integer index tensor with the
    logits' shape less ``dim``.
    """
    if not isinstance(sample, Tensor):
        raise TypeError(f"sample must be a torch.Tensor, got {type(sample).__name__}")
    batch_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    if sample.shape == logits.shape:
        index = sample.argmax(dim)
        if _validate and not bool(
            (sample.sum(dim) == 1).all() and ((sample == 0) | (sample == 1)).all()
        ):
            raise ValueError("sample given with the logits' shape must be one-hot along dim")
    elif sample.shape == batch_shape and not sample.is_floating_point():
        if (
            _validate
            and sample.numel()
            and not bool(((sample >= 0) & (sample < logits.shape[dim])).all())
        ):
            raise ValueError(f"sample indices must lie in [0, {logits.shape[dim] - 1}]")
        index = sample.long()
    else:
        raise ValueError(
            f"sample must be one-hot with the logits' shape {tuple(logits.shape)} or an integer "
            f"index tensor of shape {tuple(batch_shape)}, got {tuple(sample.shape)} "
            f"({sample.dtype})"
        )
    if _validate and sample.numel():
        chosen = logits.detach().gather(dim, index.unsqueeze(dim))
        if not bool(torch.isfinite(chosen).all()):
            raise ValueError("sample selects a category whose logit is -inf (probability 0)")
    return index
