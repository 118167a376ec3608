"""Any ``torch.nn.Module`` as a harness task: the user's own model, loss and batch.

The module's ``forward`` takes the sampler as a keyword, ``sample``, and calls it at every
discrete choice, as it would call ``F.gumbel_softmax``::

    class Model(nn.Module):
        def forward(self, x, sample):
            z = sample(self.encoder(x).view(len(x), 20, 10))
            return self.decoder(z.flatten(1))

    task = ModuleTask(Model(), (x,), loss=lambda out, x: ((out - x) ** 2).sum(-1))

Draws come one of two ways, whichever is faster for this module (measured once per task, see
:meth:`ModuleTask.calibrate`): R at once by ``torch.func.vmap`` over a stacked copy of the
measured parameters (``functional_call``, ``randomness="different"``: every draw has its own
samples from the cell's generator), which wins for small models; or one plain forward and
backward pass per draw, which wins for large ones (a batched matmul over R copies of a
million weights reads as much memory as R plain ones). A module or estimator that cannot run
under vmap is measured one draw per pass, with a warning that names the operation, the line
of the user's code and the cost. Both ways draw the same noise for every estimator: a pass
of R draws made one at a time takes the noise vmap would give each of them
(:class:`~gvbench.estimators.streams.DrawAxis`) and moves the estimator's state as vmap does.
Their draws then agree to rounding, not bit for bit (vmap's kernels over R draws round
elsewhere than one draw's), and noise the module draws itself from torch's global generator
(dropout) follows the way the draws are made: a results file keeps its draw mode.

The user's module is never changed, not even for the length of a call: its parameters are
read, never written, and every draw sees fresh copies of its buffers, so BatchNorm in training
mode normalises by the batch (as ``train()`` says) while its running statistics and counters
stay as they were. ``functional_call`` swaps tensors into a module while it runs; it runs on a
private skeleton of the module (one per thread, its tensors on the meta device), so a task
that Dask pickles to send to another worker while a draw runs is never found half-swapped
(that failed now and then, and the worker that waited for the task waited forever), and two
threads drawing at once never see each other's parameters.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gvbench.estimators import Estimator, Sampler
from gvbench.estimators.estimator import Variable
from gvbench.estimators.validation import check_count
from gvbench.tasks.base import Parameters, Task, check_device
from gvbench.tasks.memory import PassSizes
from gvbench.tasks.module_draws import VMAP_FAILURES, DrawPasses
from gvbench.tasks.module_sampler import ChoiceShapeError, ModuleSampler, module_arity
from gvbench.tasks.parameter_selection import (
    ParameterChoice,
    group_parameters,
    select_parameters,
)

# The largest arity or reference size taken (a vocabulary, a long reference).
MAX_COUNT = 2**40


class ModuleTask(DrawPasses, Task):
    """A user's ``nn.Module`` with a fixed batch and a per-example loss.

    Args:
        module: calls ``sample(logits, dim=-1)`` at each discrete choice; its forward is
            ``module(*inputs, sample=sample)``. The logits of a per-example choice start with
            the batch axis; ``sample(logits, shared=True)``, logits without a batch axis
            (``(edges, operations)``), is one choice for the whole minibatch: an
            architecture, a routing per batch. Score-function estimators weigh a shared
            choice by the minibatch's total loss; pathwise ones need nothing.
        inputs: tensors whose first dimension indexes the examples; a cell with batch size B
            uses the first B of them.
        loss: ``loss(output, *inputs)`` → per-example losses, shape ``(B,)``. Default: the
            module's output is already the per-example loss.
        parameters: which parameters to measure: names, or a predicate ``(name, parameter)
            -> bool``. Default: every parameter that requires grad. The others stay fixed.
        groups: parameter groups with metrics of their own: a mapping group → a list of name
            prefixes. Default: one group per top-level child module (``encoder``, …).
        name: the task's name in results and figures.
        arity: the number of categories of every choice, when it is one number (binary-only
            estimators need 2); default: the module's own integer ``arity`` attribute, if
            any. A call whose ``dim`` has another size is refused, naming its line and the
            ``dim`` that has the declared size.
        relaxed_inputs: whether the module accepts relaxed samples (GS, REBAR, RELAX).
        variable: what the module samples: ``"categorical"`` (default), or ``"subset"`` for a
            model that selects k of n items and calls ``sample(logits, size)``; the
            estimators of the other kind are not applicable to it.
        sequential_choices: whether some choice's logits depend on earlier samples.
        batched: ``"auto"`` (default): the faster of vmap and a plain loop, measured once by
            :meth:`calibrate`; ``True``: vmap; ``False``: one draw per pass.
        max_draws_per_pass: a cap on R; a pass also holds no more draws than fit the attribute
            ``memory_budget`` (bytes; None: half of what is free, see :mod:`gvbench.tasks.memory`).
        reference_reps: draws of the RLOO reference.
        expected_loss: ``expected_loss(module, *inputs)`` → the exact expected per-example
            losses ``(B,)`` as a differentiable function of the module's parameters, where the
            model has them in closed form (independent variables, or few enough outcomes for
            the model to enumerate them itself): bias² is then measured against its exact
            gradient, not a sampled reference.
        config: extra JSON-serialisable description stored with results (e.g. a checkpoint).
    """

    def __init__(
        self,
        module: nn.Module,
        inputs: Tensor | Sequence[Tensor],
        loss: Callable[..., Tensor] | None = None,
        *,
        parameters: ParameterChoice = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        name: str = "module",
        arity: int | None = None,
        relaxed_inputs: bool = False,
        variable: Variable = "categorical",
        sequential_choices: bool = False,
        batched: bool | Literal["auto"] = "auto",
        max_draws_per_pass: int | None = None,
        reference_reps: int = 10_000,
        expected_loss: Callable[..., Tensor] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        if not self.inputs or not all(isinstance(x, Tensor) for x in self.inputs):
            raise TypeError("inputs must be a tensor or a sequence of tensors")
        sizes = {len(x) for x in self.inputs}
        if len(sizes) != 1:
            raise ValueError(f"inputs must share their first (example) dimension, got {sizes}")
        self.examples = sizes.pop()
        _check_takes_sample(module)
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable or None, got {loss!r}")
        self.loss_fn = loss
        if expected_loss is not None and not callable(expected_loss):
            raise TypeError(f"expected_loss must be callable or None, got {expected_loss!r}")
        self.expected_loss_fn = expected_loss
        self.name = name
        if arity is not None:
            arity = check_count(arity, "arity", 2, MAX_COUNT)
            self._arity_origin = f"arity={arity} on the ModuleTask"
        else:
            arity = module_arity(module)
            self._arity_origin = f"{type(module).__name__}.arity"
        self._arity = arity
        self.relaxed_inputs = relaxed_inputs
        if variable not in ("categorical", "subset"):
            raise ValueError(f"variable must be 'categorical' or 'subset', got {variable!r}")
        self.variable = variable
        self.sequential_choices = sequential_choices
        if batched not in (True, False, "auto"):
            raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
        self.batched = batched
        if max_draws_per_pass is not None:
            max_draws_per_pass = check_count(max_draws_per_pass, "max_draws_per_pass", 1)
        self.max_draws_per_pass = max_draws_per_pass
        # Two draws at least: the reference's noise V_ref/N_ref needs a spread.
        self.reference_reps = check_count(reference_reps, "reference_reps", 2, MAX_COUNT)
        self._config = dict(config or {})
        self.measured = select_parameters(module, parameters)
        first = module.get_parameter(self.measured[0])
        self.dtype, self.device = first.dtype, first.device
        self._groups = group_parameters(self.measured, groups)
        self._unbatchable: dict[str, str] = {}
        self.memory_budget: int | None = None
        self._pass_sizes = PassSizes(name, self.device)
        self._batchable: set[str] = set()  # estimators vmap has made draws of
        self.notes: list[str] = []
        self._skeletons = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # Copies taken under the GIL: a cell may add a note while the task is pickled.
        state = {**self.__dict__, "_unbatchable": dict(self._unbatchable)}
        state["_batchable"] = set(self._batchable)
        state["notes"] = list(self.notes)
        state.pop("_skeletons", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._skeletons = threading.local()

    def _skeleton(self) -> nn.Module:
        """This thread's copy of the module's structure for ``functional_call`` to swap
        tensors into: every parameter and buffer on the meta device (no memory), since a call
        passes them all."""
        skeleton = getattr(self._skeletons, "module", None)
        if skeleton is None:
            memo: dict[int, Any] = {}
            for tensor in (*self.module.parameters(), *self.module.buffers()):
                empty = torch.empty_like(tensor, device="meta")
                if isinstance(tensor, nn.Parameter):
                    empty = nn.Parameter(empty, requires_grad=tensor.requires_grad)
                memo[id(tensor)] = empty
            skeleton = self._skeletons.module = copy.deepcopy(self.module, memo)
        return skeleton

    @property
    def arity(self) -> int | None:
        return self._arity

    @property
    def draw_mode(self) -> str:
        """``"batched"`` (vmap), ``"loop"`` (one draw per pass) or ``"auto"`` (not chosen yet)."""
        return {True: "batched", False: "loop"}.get(self.batched, "auto")

    def set_draw_mode(self, mode: str) -> None:
        """Use ``mode`` (``"batched"`` or ``"loop"``), e.g. the one an earlier sweep chose."""
        if mode not in ("batched", "loop"):
            raise ValueError(f"draw mode must be 'batched' or 'loop', got {mode!r}")
        self.batched = mode == "batched"

    def parameters(self) -> dict[str, Tensor]:
        named = dict(self.module.named_parameters())
        return {n: named[n].detach() for n in self.measured}

    def parameter_groups(self) -> dict[str, list[str]] | None:
        return self._groups

    def pass_limit(self, estimator: Estimator, batch_size: int) -> int | None:
        # Whatever the draw mode: a vmapped pass's draws share its blocks of noise, one row
        # each, and so do the draws of a loop (DrawAxis), so R is part of their numbers. The
        # memory limit is the vmapped pass's in either mode, for the same reason.
        pilot = functools.partial(self._pilot, estimator, batch_size=batch_size)
        memory = self._pass_sizes.limit(estimator, batch_size, self.memory_budget, pilot)
        if estimator.name in self._unbatchable or not estimator.info.transforms:
            return 1
        return min((n for n in (self.max_draws_per_pass, memory) if n is not None), default=None)

    def _pilot(self, estimator: Estimator, draws: int, batch_size: int) -> bool:
        """One plain draw, or ``draws`` vmapped ones (whether vmap made them), to be measured:
        on a copy of the estimator, a generator of their own, torch's own restored after."""
        copied = copy.deepcopy(estimator)
        generator = torch.Generator(device=self.device).manual_seed(0)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if draws == 1:
                self._one_draw(copied, batch_size, generator)
                return False
            if estimator.name in self._unbatchable or not estimator.info.transforms:
                return False
            try:
                self._vmap_pass(copied, draws, batch_size, generator)
            except VMAP_FAILURES:
                return False
        return True

    def exact(self, batch_size: int) -> bool:
        return self.expected_loss_fn is not None or self.enumerable(batch_size)

    def exact_gradient(self, batch_size: int) -> Tensor:
        """The gradient of the mean of ``expected_loss`` over the first ``batch_size``
        examples, by autograd on a copy of the module (its measured parameters only)."""
        if self.expected_loss_fn is None:
            return super().exact_gradient(batch_size)
        if batch_size > self.examples:
            raise ValueError(
                f"batch_size must be <= {self.examples} for this task, got {batch_size}"
            )
        module = copy.deepcopy(self.module)
        named = dict(module.named_parameters())
        for parameter in named.values():
            parameter.requires_grad_(False)
        for name in self.measured:
            named[name].requires_grad_(True)
        inputs = tuple(x[:batch_size] for x in self.inputs)
        expected = self.expected_loss_fn(module, *inputs)
        if not isinstance(expected, Tensor) or expected.shape != (batch_size,):
            shape = tuple(expected.shape) if isinstance(expected, Tensor) else type(expected)
            raise ValueError(
                f"the {self.name} task's expected_loss must return per-example expected "
                f"losses of shape ({batch_size},), got {shape}"
            )
        gradients = torch.autograd.grad(
            expected.mean(), [named[n] for n in self.measured], allow_unused=True
        )
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(named[n])).reshape(-1)
                for n, g in zip(self.measured, gradients, strict=True)
            ]
        )

    def to(self, device: str | torch.device) -> ModuleTask:
        """A copy whose module (a deep copy) and inputs live on ``device``."""
        target = check_device(device)
        moved = copy.copy(self)
        moved.module = copy.deepcopy(self.module).to(target)
        moved.inputs = tuple(x.to(target) for x in self.inputs)
        moved.device = target
        moved._unbatchable, moved._batchable = {}, set()
        moved._pass_sizes = PassSizes(self.name, target)
        moved._skeletons = threading.local()
        return moved

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "module": type(self.module).__name__,
            "parameters": sum(p.numel() for p in self.parameters().values()),
            "examples": self.examples,
            **({"variable": self.variable} if self.variable != "categorical" else {}),
            **self._config,
        }

    def _buffers(self, draws: int | None = None) -> dict[str, Tensor]:
        """Fresh copies of the module's buffers (stacked ``draws`` times for vmap): whatever
        a forward writes to them (BatchNorm's running statistics) never reaches the module."""
        if draws is None:
            return {n: b.clone() for n, b in self.module.named_buffers()}
        return {n: b.expand(draws, *b.shape).clone() for n, b in self.module.named_buffers()}

    def _losses(self, state: Parameters | None, sample: Sampler, batch_size: int) -> Tensor:
        """Per-example losses of the module with ``state`` (parameters and buffers) in place
        of its own, or as it is (``None``)."""
        if batch_size > self.examples:
            raise ValueError(
                f"batch_size must be <= {self.examples} for this task, got {batch_size}"
            )
        inputs = tuple(x[:batch_size] for x in self.inputs)
        part = f"{type(self.module).__name__}.forward"
        sample = ModuleSampler(
            sample, batch_size, self._arity, self._arity_origin, self.name, self.variable
        )
        try:
            if state is None:
                output = self.module(*inputs, sample=sample)
            else:
                fixed = {n: p.detach() for n, p in self.module.named_parameters() if n not in state}
                output = functional_call(
                    self._skeleton(), {**fixed, **state}, inputs, {"sample": sample}
                )
            part = f"loss {getattr(self.loss_fn, '__qualname__', repr(self.loss_fn))}"
            losses = output if self.loss_fn is None else self.loss_fn(output, *inputs)
        except ChoiceShapeError:
            raise  # its one line names the task and the call already
        except Exception as error:
            mismatch = self._dtype_mismatch(inputs)
            if isinstance(error, RuntimeError) and "dtype" in str(error) and mismatch:
                raise ValueError(
                    f"ModuleTask {self.name!r}: {mismatch}; convert the inputs or the module "
                    "to one floating-point dtype"
                ) from None
            # The error keeps its type (the vmap fallback reads it); the note says whose it is.
            note = f"raised by the {part} of ModuleTask {self.name!r} (batch_size={batch_size})"
            if note not in getattr(error, "__notes__", ()):
                error.add_note(note)
            raise
        if not isinstance(losses, Tensor) or losses.shape != (batch_size,):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"the {self.name} task's loss must return per-example losses of shape "
                f"({batch_size},), got {shape}"
            )
        return losses

    def _dtype_mismatch(self, inputs: Sequence[Tensor]) -> str | None:
        """Which floating-point input's dtype differs from the measured parameters'."""
        for index, x in enumerate(inputs):
            if x.is_floating_point() and x.dtype != self.dtype:
                return (
                    f"inputs[{index}] is {str(x.dtype).removeprefix('torch.')} but the "
                    f"module's parameters are {str(self.dtype).removeprefix('torch.')}"
                )
        return None

    def loss(self, params: Parameters, sample: Sampler, batch_size: int) -> Tensor:
        """Per-example losses ``(1, B)`` for parameters with a draw axis of size 1.

        One draw per call: the sampler sees the module's own logits (no draw axis). Several
        draws at once go through :meth:`gradients`, which vmaps this over the draw axis.
        """
        draws = {len(v) for v in params.values()}
        if draws != {1}:
            raise ValueError(
                f"a ModuleTask evaluates one draw per loss call, got a draw axis of {draws}; "
                "the harness batches draws through ModuleTask.gradients"
            )
        state = {**self._buffers(), **{n: v[0] for n, v in params.items()}}
        return self._losses(
            state, lambda logits, *size, **kw: sample(logits[None], *size, **kw)[0], batch_size
        )[None]


def _check_takes_sample(module: nn.Module) -> None:
    """Refuse, in one line, a module whose ``forward`` cannot take the ``sample`` keyword
    (otherwise the first draw fails deep inside ``functional_call``)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # a forward Python cannot inspect: left to the first draw
        return
    takes = any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "sample" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )
    if not takes:
        raise TypeError(
            f"{type(module).__name__}.forward takes no 'sample' keyword: ModuleTask passes the "
            "sampler as the keyword `sample` (def forward(self, x, sample): … z = "
            "sample(logits) …, where you would call F.gumbel_softmax)"
        )
