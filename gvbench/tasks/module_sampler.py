"""The sampler a :class:`~gvbench.tasks.ModuleTask` hands to the user's ``forward``.

It stands between the module and the estimator's sampler, and checks what only the module's
own view shows: that a per-example call's logits start with the batch, and that the category
axis has the declared arity (a silent wrong axis samples the wrong variables). A call marked
``shared=True`` is one choice for the whole minibatch (an architecture, a routing per batch):
its logits get an example axis of size 1, which the estimators broadcast over the examples
(:func:`gvbench.estimators.surrogates.sum_to_examples`). A misshapen call is refused with one
line that names the line of the user's code that made it. A task that samples k-subsets
(``variable="subset"``) is called ``sample(logits, size)``.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import sysconfig
import traceback
from collections.abc import Sequence

import torch
from torch import Tensor

from gvbench.estimators import Sampler
from gvbench.estimators.estimator import Variable

# Frames from these folders are not the user's code: torch, gvbench and the standard library.
OUTSIDE_USER_CODE = tuple(
    os.path.abspath(folder) + os.sep
    for folder in (
        os.path.dirname(torch.__file__),
        os.path.dirname(os.path.dirname(__file__)),  # gvbench/, above tasks/
        sysconfig.get_paths()["stdlib"],
    )
)


class ChoiceShapeError(ValueError):
    """A sampler call whose logits do not have the shape its task declares: the message names
    the call's line, the shape and the fix, and no note is added to it."""


def user_frame(frames: Sequence[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """The innermost of ``frames`` in the user's own code (outside torch, gvbench and the
    standard library), or None."""
    return next(
        (
            frame
            for frame in reversed(frames)
            if not os.path.abspath(frame.filename).startswith(OUTSIDE_USER_CODE)
        ),
        None,
    )


def where(frame: traceback.FrameSummary | None) -> str:
    """``file.py:31 in forward``, or an empty string for no frame."""
    if frame is None:
        return ""
    return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"


@dataclasses.dataclass(frozen=True)
class ModuleSampler:
    """``sample(logits, *, dim=-1, shared=False)`` as a module's forward calls it, or
    ``sample(logits, size, …)`` where the task samples k-subsets.

    Args:
        sample: the estimator's sampler (the draw axis, if any, is added beyond this one).
        batch_size: the examples of this forward; a per-example call's logits start with them.
        arity: the categories every call must have along ``dim``, or None (unchecked).
        arity_origin: where ``arity`` came from, for the message (``arity=16 on the
            ModuleTask``).
        task: the task's name, for the message.
        variable: what the task samples, ``"categorical"`` or ``"subset"``.
    """

    sample: Sampler
    batch_size: int
    arity: int | None
    arity_origin: str
    task: str
    variable: Variable = "categorical"

    def __call__(
        self, logits: Tensor, size: int | None = None, *, dim: int = -1, shared: bool = False
    ) -> Tensor:
        """A sample of ``logits`` over ``dim``: one per example (the logits' first axis is the
        batch), or with ``shared=True`` one for the whole minibatch (no batch axis); a
        k-subset of ``size`` items where the task samples k-subsets."""
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be True or False, got {shared!r}")
        if (size is None) == (self.variable == "subset"):
            raise ChoiceShapeError(self._variable_message(logits, size))
        sizes = () if size is None else (size,)
        if (
            not isinstance(logits, Tensor)
            or logits.dim() == 0
            or isinstance(dim, bool)
            or not isinstance(dim, numbers.Integral)
            or not -logits.dim() <= dim < logits.dim()
        ):
            return self.sample(logits, *sizes, dim=dim)  # the estimator's checks name the problem
        given = int(dim)
        # A negative dim stays the category axis when axes are added in front (the example
        # axis of a shared call, the draw axis of a harness call).
        dim = given % logits.dim() - logits.dim()
        if self.arity is not None and logits.shape[dim] != self.arity:
            raise ChoiceShapeError(self._arity_message(logits, given, shared))
        # The last axis is the Sampler protocol's default, and some samplers take no dim.
        options = {} if dim == -1 else {"dim": dim}
        if shared:
            return self.sample(logits.unsqueeze(0), *sizes, **options)[0]
        if logits.dim() < 2 or dim == -logits.dim() or logits.shape[0] != self.batch_size:
            raise ChoiceShapeError(
                f"{self._call(logits, given)}: a per-example choice's logits start with the "
                f"batch axis ({self.batch_size} examples), followed by its variables and "
                "categories; pass shared=True if it is one choice for the whole minibatch"
            )
        return self.sample(logits, *sizes, **options)

    def _variable_message(self, logits: object, size: int | None) -> str:
        site = where(user_frame(traceback.extract_stack()))
        call = f"ModuleTask {self.task!r}: the sampler call" + (f" at {site}" if site else "")
        if size is None:
            return (
                f"{call} gives no size, but the task samples k-subsets (variable='subset'); "
                "call sample(logits, size) with the number of items to choose"
            )
        return (
            f"{call} asks for a subset of size={size!r}, but the task samples categorical "
            "variables; declare ModuleTask(..., variable='subset') for a model that selects k "
            "items"
        )

    def _call(self, logits: Tensor, dim: int) -> str:
        site = where(user_frame(traceback.extract_stack()))
        return (
            f"ModuleTask {self.task!r}: the sampler call"
            + (f" at {site}" if site else "")
            + f" has logits of shape {tuple(logits.shape)} sampled over dim={dim}"
        )

    def _arity_message(self, logits: Tensor, dim: int, shared: bool) -> str:
        # A per-example call's first axis is the batch, never the categories.
        first = 0 if shared else 1
        fits = [f"dim={i}" for i in range(first, logits.dim()) if logits.shape[i] == self.arity]
        fix = f"use {' or '.join(fits)}" if fits else f"no axis has {self.arity} categories"
        return (
            f"{self._call(logits, dim)}, which has {logits.shape[dim]} categories, but the "
            f"task's arity is {self.arity} ({self.arity_origin}); {fix}"
        )


def module_arity(module: torch.nn.Module) -> int | None:
    """The module's own ``arity`` attribute where it is an integer of at least 2, else None."""
    value = getattr(module, "arity", None)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        return None
    return int(value)
