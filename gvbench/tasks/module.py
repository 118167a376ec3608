"""Any ``torch.nn.Module`` as a harness task: the user's own model, loss and batch.

The module's ``forward`` takes the sampler as a keyword, ``sample``, and calls it at every
discrete choice, as it would call ``F.gumbel_softmax``::

    class Model(nn.Module):
        def forward(self, x, sample):
            z = sample(self.encoder(x).view(len(x), 20, 10))
            return self.decoder(z.flatten(1))

    task = ModuleTask(Model(), (x,), loss=lambda out, x: ((out - x) ** 2).sum(-1))

The harness measures R draws at once by ``torch.func.vmap`` over a stacked copy of the
measured parameters (``functional_call``), with ``randomness="different"``: every draw has its
own samples, from the cell's generator. A module or estimator that cannot run under vmap
(data-dependent Python control flow, in-place randomness, state that changes mid-call) is
measured one draw per pass instead, with a warning that says why.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gvbench.estimators import Estimator, Sampler
from gvbench.estimators.validation import set_validate_args, validate_args
from gvbench.tasks.base import Parameters, Task, check_device, flatten_gradients

ParameterChoice = Iterable[str] | Callable[[str, nn.Parameter], bool] | None


class ModuleTask(Task):
    """A user's ``nn.Module`` with a fixed batch and a per-example loss.

    Args:
        module: calls ``sample(logits)`` (categories last) at each discrete choice; its
            forward is ``module(*inputs, sample=sample)``.
        inputs: tensors whose first dimension indexes the examples; a cell with batch size B
            uses the first B of them.
        loss: ``loss(output, *inputs)`` → per-example losses, shape ``(B,)``. Default: the
            module's output is already the per-example loss.
        parameters: which parameters to measure: names, or a predicate ``(name, parameter)
            -> bool``. Default: every parameter that requires grad. The others stay fixed.
        groups: parameter groups with metrics of their own: a mapping group → name prefixes.
            Default: one group per top-level child module (``encoder``, ``decoder``, …).
        name: the task's name in results and figures.
        arity: the number of categories of every choice, when it is one number (binary-only
            estimators need 2).
        relaxed_inputs: whether the module accepts relaxed samples (GS, REBAR, RELAX).
        sequential_choices: whether some choice's logits depend on earlier samples.
        batched: measure R draws per pass with vmap (default); False: one draw per pass.
        max_draws_per_pass: a cap on R (default: the harness's memory budget).
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
        batched: bool = True,
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
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be callable or None, got {loss!r}")
        self.loss_fn = loss
        self.name = name
        self._arity = arity
        self.relaxed_inputs = relaxed_inputs
        self.sequential_choices = sequential_choices
        self.batched = batched
        self.max_draws_per_pass = max_draws_per_pass
        self.reference_reps = reference_reps
        self._config = dict(config or {})
        named = dict(module.named_parameters())
        if parameters is None:
            chosen = [n for n, p in named.items() if p.requires_grad]
        elif callable(parameters):
            chosen = [n for n, p in named.items() if parameters(n, p)]
        else:
            chosen = list(parameters)
            unknown = [n for n in chosen if n not in named]
            if unknown:
                raise ValueError(
                    f"parameters {unknown} are not in the module; it has: {', '.join(named)}"
                )
        if not chosen:
            raise ValueError("no parameter to measure (parameters selected none)")
        self.measured = chosen
        first = named[chosen[0]]
        self.dtype, self.device = first.dtype, first.device
        self._groups = self._group(chosen, groups)
        self._unbatchable: dict[str, str] = {}

    @staticmethod
    def _group(
        names: list[str], groups: Mapping[str, Sequence[str]] | None
    ) -> dict[str, list[str]] | None:
        if groups is None:
            tops = {n.split(".", 1)[0] if "." in n else "" for n in names}
            if len(tops) < 2 or "" in tops:
                return None
            groups = {top: [top + "."] for top in sorted(tops)}
        result: dict[str, list[str]] = {}
        for group, prefixes in groups.items():
            if group == "all":
                raise ValueError("'all' names the whole gradient; choose another group name")
            members = [n for n in names if any(n.startswith(p) for p in prefixes)]
            if not members:
                raise ValueError(f"group {group!r} matches no measured parameter")
            result[group] = members
        return result

    @property
    def arity(self) -> int | None:
        return self._arity

    def parameters(self) -> dict[str, Tensor]:
        named = dict(self.module.named_parameters())
        return {n: named[n].detach() for n in self.measured}

    def parameter_groups(self) -> dict[str, list[str]] | None:
        return self._groups

    def to(self, device: str | torch.device) -> ModuleTask:
        """A copy whose module (a deep copy) and inputs live on ``device``."""
        target = check_device(device)
        moved = copy.copy(self)
        moved.module = copy.deepcopy(self.module).to(target)
        moved.inputs = tuple(x.to(target) for x in self.inputs)
        moved.device = target
        moved._unbatchable = {}
        return moved

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "module": type(self.module).__name__,
            "parameters": sum(p.numel() for p in self.parameters().values()),
            "examples": self.examples,
            **self._config,
        }

    def _losses(self, params: Parameters, sample: Sampler, batch_size: int) -> Tensor:
        if batch_size > self.examples:
            raise ValueError(
                f"batch_size must be <= {self.examples} for this task, got {batch_size}"
            )
        inputs = tuple(x[:batch_size] for x in self.inputs)
        output = functional_call(self.module, dict(params), inputs, {"sample": sample})
        losses = output if self.loss_fn is None else self.loss_fn(output, *inputs)
        if not isinstance(losses, Tensor) or losses.shape != (batch_size,):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"the {self.name} task's loss must return per-example losses of shape "
                f"({batch_size},), got {shape}"
            )
        return losses

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
        squeezed = {n: v[0] for n, v in params.items()}
        return self._losses(
            squeezed, lambda logits, **kw: sample(logits[None], **kw)[0], batch_size
        )[None]

    def gradients(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        if self.batched and draws > 1 and estimator.name not in self._unbatchable:
            grads = self._vmapped(estimator, draws, batch_size, generator)
            if grads is not None:
                return grads
        return torch.cat(
            [
                super(ModuleTask, self).gradients(estimator, 1, batch_size, generator)
                for _ in range(draws)
            ]
        )

    def _vmapped(
        self,
        estimator: Estimator,
        draws: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        stacked = {n: v.expand(draws, *v.shape).clone() for n, v in self.parameters().items()}
        try:
            frozen, update = estimator.frozen()
        except TypeError as error:
            return self._not_batched(estimator, error)
        # A failed attempt must not move the cell's generator: it runs on a copy, adopted
        # only on success, so a replay that skips the attempt draws the same numbers.
        trial = None
        if generator is not None:
            trial = torch.Generator(device=generator.device)
            trial.set_state(generator.get_state())

        def one_draw(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            surrogate = frozen(
                lambda sample: self._losses(params, sample, batch_size), generator=trial
            )
            return surrogate.mean(), surrogate.detach()

        checking = validate_args()
        set_validate_args(False)  # value checks are data-dependent control flow under vmap
        try:
            grads, losses = vmap(grad(one_draw, has_aux=True), randomness="different")(stacked)
        except (RuntimeError, NotImplementedError) as error:  # what vmap raises when it cannot
            return self._not_batched(estimator, error)
        finally:
            set_validate_args(checking)
        if generator is not None:
            generator.set_state(trial.get_state())
        update(losses)
        for name, value in grads.items():
            stacked[name].grad = value
        return flatten_gradients(stacked, draws)

    def _not_batched(self, estimator: Estimator, error: Exception) -> None:
        reason = re.sub(r"\s+", " ", f"{type(error).__name__}: {error}")[:300]
        self._unbatchable[estimator.name] = reason
        warnings.warn(
            f"{self.name}: {estimator.name} cannot be measured under torch.func.vmap "
            f"({reason}); measuring one draw per pass instead (same statistics, slower)",
            stacklevel=5,
        )
