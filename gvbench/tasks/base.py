"""The Task protocol: what the harness needs from an experiment, and nothing more.

A task owns fixed parameters (the θ, or network weights, at which gradients are measured) and
a loss that calls a sampler at every discrete choice of its model. The harness gives every
parameter a leading *draw* axis of size R, so one backward pass yields R independent gradient
draws; a task whose model cannot broadcast over that axis sets ``max_draws_per_pass = 1``.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from gvbench.estimators import Estimator, EstimatorInfo, Sampler
from gvbench.estimators.estimator import Variable

Parameters = Mapping[str, Tensor]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a clear error for a malformed or absent one."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        ) from None
    if target.type == "meta":
        raise ValueError(
            "device='meta' holds shapes but no values, so nothing can be measured on it; "
            "choose 'cpu' or 'cuda'"
        )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(target)!r} was asked for, but CUDA is not available here")
    backend = getattr(torch, target.type, None) if target.type not in ("cpu", "cuda") else None
    if target.type == "mps":
        backend = torch.backends.mps
    if target.type not in ("cpu", "cuda") and not (
        backend is not None
        and callable(getattr(backend, "is_available", None))
        and backend.is_available()
    ):
        raise ValueError(
            f"device={str(target)!r} was asked for, but no {target.type} device is available "
            "here; choose 'cpu' or 'cuda'"
        )
    if (
        target.type == "cuda"
        and target.index is not None
        and target.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device={str(target)!r}: there are only {torch.cuda.device_count()} CUDA device(s)"
        )
    return target


_KINDS = {"categorical": "categorical variables", "subset": "k-subsets (k of n items)"}


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_moved(v, device) for v in value)
    return value


def flatten_gradients(params: Mapping[str, Tensor], rows: int) -> Tensor:
    """Concatenate the gradients of draw-axis parameters into an (R, P) matrix, in their own
    dtype (one copy; the harness widens precision only where it sums)."""
    columns = []
    for value in params.values():
        grad = value.grad if value.grad is not None else torch.zeros_like(value)
        columns.append(grad.reshape(rows, -1))
    return torch.cat(columns, 1)


class Task(abc.ABC):
    """One experiment, measured at fixed parameters.

    Subclasses set ``name`` and implement :meth:`parameters`, :meth:`loss` and
    :meth:`config`. They may override :meth:`enumerable` (exact reference by enumeration),
    ``relaxed_inputs`` (the loss accepts relaxed samples, so GS applies),
    ``sequential_choices`` (logits depend on earlier samples), ``arity`` (the
    number of categories of every choice, when it is one number), ``variable`` (what its
    model samples: ``"categorical"``, or ``"subset"`` when it calls ``sample(logits, size)``)
    and ``max_draws_per_pass``.
    """

    name: ClassVar[str]
    relaxed_inputs: ClassVar[bool] = False
    # Whether some choice's logits depend on earlier samples (a parse built step by step).
    sequential_choices: ClassVar[bool] = False
    variable: ClassVar[Variable] = "categorical"
    max_draws_per_pass: ClassVar[int | None] = None
    # Draws of the RLOO reference when the task cannot enumerate (a costly model wants fewer).
    reference_reps: ClassVar[int] = 100_000
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def parameters(self) -> dict[str, Tensor]:
        """The fixed parameters whose gradient is estimated, without a draw axis."""

    @abc.abstractmethod
    def loss(self, params: Parameters, sample: Sampler, batch_size: int) -> Tensor:
        """Per-example losses, shape ``(R, batch_size)``.

        ``params`` are :meth:`parameters` with a leading draw axis of size R; ``sample`` is
        called at every discrete choice with logits of shape ``(R, batch_size, …, n)``. The
        ``batch_size`` examples are fixed for a given task and batch size (the same data for
        every draw), each with its own discrete samples.
        """

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description that identifies the task and its parameters."""

    @property
    def arity(self) -> int | None:
        """Categories of every discrete choice, if they all have the same number."""
        return None

    @property
    def outcomes(self) -> int | None:
        """Joint outcomes of one example's discrete choices, if known (at most that many
        distinct samples exist for estimators that draw without replacement)."""
        return None

    def parameter_groups(self) -> dict[str, list[str]] | None:
        """Named groups of :meth:`parameters` (e.g. encoder, decoder) whose metrics are also
        reported on their own, or ``None`` for the whole gradient only."""
        return None

    def gradients(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``draws`` gradient draws of the mean loss over ``batch_size`` examples, (draws, P).

        Every parameter gets a leading draw axis, so one backward pass gives all the draws;
        P concatenates the flattened parameters in :meth:`parameters`' order. A task whose
        model cannot take a draw axis overrides this (see :class:`~gvbench.tasks.ModuleTask`).
        """
        params = {
            name: value.detach().expand(draws, *value.shape).clone().requires_grad_()
            for name, value in self.parameters().items()
        }
        surrogate = estimator(
            lambda sample: self.loss(params, sample, batch_size), generator=generator
        )
        if surrogate.shape != (draws, batch_size):
            raise ValueError(
                f"task {self.name!r} returned losses of shape {tuple(surrogate.shape)}; "
                f"expected (draws, batch_size) = ({draws}, {batch_size})"
            )
        surrogate.mean(1).sum().backward()
        return flatten_gradients(params, draws)

    @property
    def draw_mode(self) -> str:
        """How draws are made: ``"batched"`` (a draw axis), ``"loop"`` (one per pass)."""
        return "batched" if self.max_draws_per_pass != 1 else "loop"

    def pass_limit(self, estimator: Estimator, batch_size: int) -> int | None:
        """The most draws one pass of ``estimator`` at ``batch_size`` may hold (None: the
        harness's bound on examples per pass)."""
        del estimator, batch_size
        return self.max_draws_per_pass

    def enumerable(self, batch_size: int) -> bool:
        """Whether the exact gradient can be computed by enumeration at this batch size."""
        del batch_size
        return False

    def exact(self, batch_size: int) -> bool:
        """Whether the exact gradient is known at this batch size: by enumeration, or in
        closed form where a task overrides :meth:`exact_gradient` (independent variables)."""
        return self.enumerable(batch_size)

    def exact_gradient(self, batch_size: int) -> Tensor:
        r"""The exact gradient of the mean loss over ``batch_size`` examples, (P,) flattened as
        :meth:`gradients` flattens: autograd of the enumerated expectation
        :math:`\nabla_\theta \sum_z q_\theta(z) f(z)` (:func:`gvbench.estimators.exact`)."""
        from gvbench.estimators import exact

        params = {
            name: value.detach()[None].clone().requires_grad_()
            for name, value in self.parameters().items()
        }
        expected = exact(lambda sample: self.loss(params, sample, batch_size))
        if expected.shape != (1, batch_size):
            raise ValueError(
                f"task {self.name!r} returned losses of shape {tuple(expected.shape)}; "
                f"expected (draws, batch_size) = (1, {batch_size})"
            )
        expected.mean(1).sum().backward()
        return flatten_gradients(params, 1)[0].detach()

    def applicable(self, estimator: EstimatorInfo) -> str | None:
        """``None`` if ``estimator`` can run on this task, else the reason it cannot."""
        if estimator.variable != self.variable and not estimator.exact:  # enumeration: any
            return (
                f"{estimator.label} samples {_KINDS[estimator.variable]}; the {self.name} task "
                f"samples {_KINDS[self.variable]}"
            )
        if estimator.relaxed and not self.relaxed_inputs:
            return f"{estimator.label} feeds relaxed samples; the {self.name} task needs one-hot inputs"
        if estimator.binary_only and self.arity != 2:
            return f"{estimator.label} is binary-only; the {self.name} task has arity {self.arity}"
        if self.sequential_choices and not estimator.sequential:
            return (
                f"{estimator.label} needs every choice's logits in advance; the {self.name} "
                "task's choices depend on earlier samples"
            )
        if estimator.exact and not self.enumerable(1):
            return f"the {self.name} task has too many joint outcomes to enumerate"
        return None

    def to(self, device: str | torch.device) -> Task:
        """A copy of this task whose tensors live on ``device`` (e.g. ``"cuda"``).

        Draws, samples and the reduction to metrics then stay on the device; only the
        metrics come back. Moves every tensor held directly, or in a dict, list or tuple, as
        an attribute; a task holding them deeper overrides this.
        """
        target = check_device(device)
        moved = copy.copy(self)
        for name, value in vars(self).items():
            setattr(moved, name, _moved(value, target))
        moved.device = target
        return moved

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "task")
        return f"{type(self).__name__}({options})"
