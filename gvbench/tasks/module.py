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
import os
import re
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gvbench.estimators import Estimator, Sampler
from gvbench.estimators.streams import DrawAxis, NoiseStream, rewinder
from gvbench.estimators.validation import check_count, set_validate_args, validate_args
from gvbench.tasks.base import Parameters, Task, check_device, flatten_gradients
from gvbench.tasks.memory import PassSizes
from gvbench.tasks.module_sampler import ChoiceShapeError, ModuleSampler, module_arity, user_frame
from gvbench.tasks.parameter_selection import (
    ParameterChoice,
    group_parameters,
    select_parameters,
)

# Draws timed per mode when choosing between them.
CALIBRATION_DRAWS = 8
# Batched draws are chosen only when they are at least this much faster (they hold R copies).
BATCHED_ADVANTAGE = 1.1
# The largest arity or reference size taken (a vocabulary, a long reference).
MAX_COUNT = 2**40
# What a failed vmap attempt raises (the draws are then made one plain pass at a time).
VMAP_FAILURES = (RuntimeError, NotImplementedError, ValueError, TypeError)


class ModuleTask(Task):
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
        sequential_choices: whether some choice's logits depend on earlier samples.
        batched: ``"auto"`` (default): the faster of vmap and a plain loop, measured once by
            :meth:`calibrate`; ``True``: vmap; ``False``: one draw per pass.
        max_draws_per_pass: a cap on R; a pass also holds no more draws than fit the attribute
            ``memory_budget`` (bytes; None: half of what is free, see :mod:`gvbench.tasks.memory`).
        reference_reps: draws of the RLOO reference.
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
        sequential_choices: bool = False,
        batched: bool | Literal["auto"] = "auto",
        max_draws_per_pass: int | None = None,
        reference_reps: int = 10_000,
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
        self.name = name
        if arity is not None:
            arity = check_count(arity, "arity", 2, MAX_COUNT)
            self._arity_origin = f"arity={arity} on the ModuleTask"
        else:
            arity = module_arity(module)
            self._arity_origin = f"{type(module).__name__}.arity"
        self._arity = arity
        self.relaxed_inputs = relaxed_inputs
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
        sample = ModuleSampler(sample, batch_size, self._arity, self._arity_origin, self.name)
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
        return self._losses(state, lambda logits, **kw: sample(logits[None], **kw)[0], batch_size)[
            None
        ]

    def gradients(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        self._pass_sizes.admit(estimator, draws, batch_size, self.notes)
        # Both modes draw vmap's noise where vmap can make the draws, and that of one plain
        # pass after another where it cannot; the mode chooses only how they are made.
        if draws > 1 and estimator.info.transforms and estimator.name not in self._unbatchable:
            if self.batched is not False:
                grads = self._vmapped(estimator, draws, batch_size, generator)
                if grads is not None:
                    return grads
            elif self._vmappable(estimator, batch_size, generator):
                return self._looped(estimator, draws, batch_size, generator)
        rows = [self._one_draw(estimator, batch_size, generator)[0] for _ in range(draws)]
        return rows[0][None] if draws == 1 else torch.stack(rows)

    def _looped(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``draws`` draws that vmap could make, made one plain pass at a time with the
        noise :meth:`_vmapped` gives them: draw r takes row r of the pass's noise
        (:class:`~gvbench.estimators.streams.DrawAxis`), and the estimator's state, read as
        a constant, moves once after the last draw, as it does after a vmapped pass."""
        frozen, update = estimator.frozen()
        noise = DrawAxis(generator, draws)
        draws_made = [self._one_draw(frozen, batch_size, noise.row(r)) for r in range(draws)]
        rows, losses = zip(*draws_made, strict=True)
        update(torch.stack(losses))
        return torch.stack(rows)

    def _one_draw(
        self, estimator: Estimator, batch_size: int, generator: torch.Generator | NoiseStream | None
    ) -> tuple[Tensor, Tensor]:
        """One plain forward and backward pass: the gradient as a flat vector (P,) and the
        per-example surrogate losses (B,)."""
        named = dict(self.module.named_parameters())
        if all(named[n].requires_grad for n in self.measured) and not any(
            True for _ in self.module.buffers()
        ):
            # Nothing a forward could write to, and gradients reach the module's own
            # parameters without copies: the user's plain call, at the user's speed.
            leaves, state = [named[n] for n in self.measured], None
        else:
            detached = {n: named[n].detach().requires_grad_() for n in self.measured}
            leaves, state = list(detached.values()), {**self._buffers(), **detached}
        surrogate = estimator(
            lambda sample: self._losses(state, sample, batch_size), generator=generator
        )
        if surrogate.shape != (batch_size,):
            raise ValueError(
                f"task {self.name!r} returned losses of shape {tuple(surrogate.shape)}; "
                f"expected ({batch_size},)"
            )
        grads = torch.autograd.grad(surrogate.mean(), leaves, allow_unused=True)
        flat = torch.cat(
            [
                (g if g is not None else torch.zeros_like(v)).reshape(-1)
                for g, v in zip(grads, leaves, strict=True)
            ]
        )
        return flat, surrogate.detach()

    def _vmap_pass(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Callable[[Tensor], None]]:
        """``draws`` draws in one vmapped pass: the gradients (draws, P), the per-example
        surrogate losses (draws, B), and the update of the estimator's state that the losses
        make. Raises what the estimator or vmap raise."""
        frozen, update = estimator.frozen()
        stacked = {n: v.expand(draws, *v.shape).clone() for n, v in self.parameters().items()}
        buffers = self._buffers(draws)

        def one_draw(params: dict[str, Tensor], own: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            surrogate = frozen(
                lambda sample: self._losses({**own, **params}, sample, batch_size),
                generator=generator,
            )
            return surrogate.mean(), surrogate.detach()

        checking = validate_args()
        set_validate_args(False)  # value checks are data-dependent control flow under vmap
        try:
            # torch.func.grad differentiates inside the outer no_grad; without it, parameters
            # the user left requiring grad (a decoder not measured) would have autograd
            # record the whole batched pass for a backward that never comes.
            with torch.no_grad():
                grads, losses = vmap(grad(one_draw, has_aux=True), randomness="different")(
                    stacked, buffers
                )
        finally:
            set_validate_args(checking)
        for name, value in grads.items():
            stacked[name].grad = value
        return flatten_gradients(stacked, draws), losses, update

    def _vmapped(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        """The draws of :meth:`_vmap_pass`, or None (said once, with why) where vmap
        cannot make them."""
        rewind = rewinder(generator, self.device)
        try:
            grads, losses, update = self._vmap_pass(estimator, draws, batch_size, generator)
        except VMAP_FAILURES as error:
            # A failed attempt moves no generator: a replay that skips it draws the same.
            rewind()
            return self._not_batched(estimator, error, batch_size, generator)
        self._batchable.add(estimator.name)
        update(losses)
        return grads

    def _vmappable(
        self, estimator: Estimator, batch_size: int, generator: torch.Generator | None
    ) -> bool:
        """Whether vmap can make ``estimator``'s draws here, for draws made one per pass:
        tried once, silently, on two draws whose numbers, noise and update are thrown away,
        so that a loop knows whose noise to give: vmap's, or one plain pass's after another."""
        if estimator.name in self._batchable:
            return True
        rewind = rewinder(generator, self.device)
        try:
            self._vmap_pass(estimator, 2, batch_size, generator)
        except VMAP_FAILURES as error:
            self._unbatchable[estimator.name] = vmap_failure(error)
            return False
        finally:
            rewind()
        self._batchable.add(estimator.name)
        return True

    def _not_batched(
        self,
        estimator: Estimator,
        error: Exception,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> None:
        """Remember that ``estimator`` cannot run under vmap here, and say why and at what
        cost (the user's own line, the measured seconds per draw, the reference's time)."""
        # Timed on a copy of the estimator, and the generator rewound: nothing may move.
        rewind = rewinder(generator, self.device)
        start = time.perf_counter()
        self._one_draw(copy.deepcopy(estimator), batch_size, generator)
        seconds = time.perf_counter() - start
        rewind()
        reason = vmap_failure(error)
        self._unbatchable[estimator.name] = reason
        reference = self.reference_reps * 8 * seconds  # RLOO(k=8): eight losses per draw
        message = (
            f"{self.name}: {estimator.name} cannot be measured under torch.func.vmap ({reason}); "
            f"measuring one draw per pass: {seconds:.3g} s a draw here"
            + (
                f" (a reference of {self.reference_reps} RLOO draws: about {reference / 60:.3g} "
                "min)"
                if self.reference_reps
                else ""
            )
        )
        self.notes.append(message)
        warnings.warn(message, stacklevel=5)

    def calibrate(
        self, estimator: Estimator, batch_size: int, generator: torch.Generator | None = None
    ) -> str:
        """Choose between batched (vmap) and one-draw-per-pass draws by timing both once,
        with ``estimator`` at ``batch_size``, unless the choice was made (``batched``); the
        choice is kept on the task (its ``draw_mode``), so every cell uses it."""
        if self.batched != "auto":
            return self.draw_mode
        generator = generator or torch.Generator(device=self.device).manual_seed(0)
        draws = min(CALIBRATION_DRAWS, self.pass_limit(estimator, batch_size) or CALIBRATION_DRAWS)
        self.batched = True
        batched = self._timed(lambda: self.gradients(estimator, draws, batch_size, generator))
        self.batched = False
        looped = self._timed(lambda: self.gradients(estimator, draws, batch_size, generator))
        if estimator.name in self._unbatchable:  # vmap failed (and said why)
            batched = float("inf")
        self.batched = batched * BATCHED_ADVANTAGE < looped
        self.notes.append(
            f"{self.name}: {self.draw_mode} draws ({looped / draws:.3g} s a draw one at a time, "
            + (f"{batched / draws:.3g} s batched" if batched < float("inf") else "vmap failed")
            + ")"
        )
        return self.draw_mode

    @staticmethod
    def _timed(run: Callable[[], object]) -> float:
        """Seconds of the second of two calls (the first pays for warm-up and tracing)."""
        run()
        start = time.perf_counter()
        run()
        return time.perf_counter() - start


def vmap_failure(error: BaseException) -> str:
    """Why vmap failed, in one line: the operation, the user's own frame, and the known fix."""
    frames = traceback.extract_tb(error.__traceback__)
    user = user_frame(frames)
    text = re.sub(r"\s+", " ", f"{type(error).__name__}: {error}").strip()
    where = ""
    if user is not None:
        line = (user.line or "").strip()
        where = f" at {os.path.basename(user.filename)}:{user.lineno} in {user.name}: `{line}`"
    chain = " ".join(frame.filename for frame in frames) + " " + text
    if "batch_norm" in chain.lower() or "batchnorm" in chain.lower():
        fix = "torch.func.replace_all_batch_norm_modules_(model) makes BatchNorm vmappable"
    elif "distributions" in chain:
        fix = (
            "compute the KL or log-probability from the logits directly (e.g. "
            "(q * (q.log() - p.log())).sum(-1)) instead of torch.distributions, whose argument "
            "checks branch on values"
        )
    elif "data-dependent" in chain or "item()" in chain:
        fix = "replace Python branches on tensor values with torch.where"
    else:
        fix = "make the forward free of in-place updates and value-dependent Python branches"
    return f"{text[:200]}{where}; fix: {fix}"


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
