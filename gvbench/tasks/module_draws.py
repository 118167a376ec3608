"""How a :class:`~gvbench.tasks.ModuleTask` makes its draws: R at once under
``torch.func.vmap``, or one plain forward and backward pass at a time with the noise vmap
would give each draw, and the timing that chooses between the two.

:class:`DrawPasses` is the part of ``ModuleTask`` that makes draws; it reads the task's
``module``, ``measured`` names, ``parameters()``, ``_buffers()``, ``_losses()``, pass sizes
and notes, and keeps which estimators vmap can and cannot run.
"""

from __future__ import annotations

import copy
import os
import re
import time
import traceback
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, vmap

from gvbench.estimators import Estimator
from gvbench.estimators.streams import DrawAxis, NoiseStream, rewinder
from gvbench.estimators.validation import set_validate_args, validate_args
from gvbench.tasks.base import flatten_gradients
from gvbench.tasks.module_sampler import user_frame

# Draws timed per mode when choosing between them.
CALIBRATION_DRAWS = 8
# Batched draws are chosen only when they are at least this much faster (they hold R copies).
BATCHED_ADVANTAGE = 1.1
# What a failed vmap attempt raises (the draws are then made one plain pass at a time).
VMAP_FAILURES = (RuntimeError, NotImplementedError, ValueError, TypeError)


class DrawPasses:
    """The draws of a module task (see the module docstring)."""

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
