r"""I-MLE and AIMLE: perturb-and-MAP k-subsets, differentiated by implicit maximum likelihood.

Both draw the sample :math:`z = \mathrm{MAP}(\theta + \tau\varepsilon)`, the top ``size`` items
of the logits perturbed by Sum-of-Gamma noise (:mod:`gvbench.estimators.sum_of_gamma`), and
take their gradient from a second MAP state at logits moved against the upstream gradient
:math:`u = \partial f/\partial z`, with the same noise:

- **I-MLE** (Niepert, Minervini & Franceschi, NeurIPS 2021; code uclnlp/torch-imle):
  :math:`\hat g = z - \mathrm{MAP}(\theta - \lambda u + \tau\varepsilon)`, a finite difference
  of the perturb-and-MAP marginals, not divided by :math:`\lambda` (as the authors' code).
- **AIMLE** (Minervini, Franceschi & Niepert, AAAI 2023; code
  EdinburghNLP/torch-adaptive-imle): the step is :math:`\eta = \lambda\|\theta\|/\|u\|`, the
  difference central, :math:`\hat g = [\mathrm{MAP}(\theta + \eta u + \tau\varepsilon)
  - \mathrm{MAP}(\theta - \eta u + \tau\varepsilon)]/(2\eta)`, and :math:`\lambda` adapts
  (:class:`AdaptiveLambda`) so that a gradient row has about one non-zero entry.

The logits' leading dimensions are rows (one k-subset each), items are along ``dim``.
AIMLE's norms are each row's, where the authors' code takes them over its minibatch: a row's
estimate then does not depend on the rows that share its call (the harness stacks R draws in
one call, R set by memory), and with one row per call the two are the same. A row whose
logits are all zero (a head initialised at zero) has η = 0 and so a zero gradient, as the
authors' code gives a minibatch whose logits are all zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from gvbench.estimators.registry import register
from gvbench.estimators.state import Adaptation
from gvbench.estimators.subset_law import check_subset, top_k_hot
from gvbench.estimators.sum_of_gamma import sum_of_gamma_noise
from gvbench.estimators.validation import check_count, check_real, check_tau

__all__ = ["AdaptiveLambda", "aimle", "imle"]

# Backward rule: (θ, scaled noise, sample, upstream gradient) -> the gradient w.r.t. θ.
GradientRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class _PerturbAndMap(torch.autograd.Function):
    """Forward: ``MAP(θ + noise)``; backward: the rule's gradient (items last, rows flat)."""

    generate_vmap_rule = True  # forward and backward are per draw under torch.func.vmap

    @staticmethod
    def forward(theta: Tensor, noise: Tensor, size: int, rule: GradientRule) -> Tensor:
        return top_k_hot(theta + noise, size)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Tensor) -> None:
        theta, noise, _, rule = inputs
        ctx.save_for_backward(theta, noise, output)
        ctx.rule = rule

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        theta, noise, sample = ctx.saved_tensors
        return ctx.rule(theta, noise, sample, grad), None, None, None


def _perturb_and_map(
    logits: Tensor,
    size: int,
    tau: float | Tensor,
    iterations: int,
    dim: int,
    generator: torch.Generator | None,
    rule: Callable[[int], GradientRule],
) -> Tensor:
    """Checks, noise, and the sample whose backward is ``rule(size)``."""
    dim, size = check_subset(logits, size, dim)
    theta = logits.movedim(dim, -1)
    tau = check_tau(tau, logits.dtype)
    iterations = check_count(iterations, "iterations", 1, 1 << 16)
    noise = tau * sum_of_gamma_noise(theta.shape, size, theta, iterations, generator)
    return _PerturbAndMap.apply(theta, noise, size, rule(size)).movedim(-1, dim)


@register(unbiased=False, label="I-MLE", variable="subset")
def imle(
    logits: Tensor,
    size: int,
    tau: float = 1.0,
    *,
    lam: float = 1.0,
    iterations: int = 10,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""I-MLE (Niepert, Minervini & Franceschi, NeurIPS 2021) for k-subsets.

    Approximates: :math:`\nabla_\theta \mathbb{E}[f(z)]` for the perturb-and-MAP law
    :math:`z = \mathrm{topk}(\theta + \tau\varepsilon)`, :math:`\varepsilon` Sum-of-Gamma
    noise with :math:`\kappa` = ``size`` and ``iterations`` terms (exact in law for the
    k-subset law only as :math:`\kappa = 1`, :math:`s \to \infty`, where it is Gumbel-max).
    With: :math:`\hat g = z - \mathrm{topk}(\theta - \lambda\,\partial f/\partial z + \tau\varepsilon)`,
    the same :math:`\varepsilon` (the target distribution :math:`\theta' = \theta - \lambda u`;
    the authors' defaults :math:`\lambda = 1`, input and target noise temperature
    :math:`\tau = 1`, :math:`s = 10`). Not divided by :math:`\lambda`: its scale grows with
    :math:`\lambda` until it saturates. Requires: :math:`f` differentiable at k-hot inputs.
    Biased; zero wherever the step :math:`\lambda u` does not change the top k.
    """
    lam = check_real(lam, "lam")
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")

    def rule(size: int) -> GradientRule:
        def gradient(theta: Tensor, noise: Tensor, sample: Tensor, upstream: Tensor) -> Tensor:
            return sample - top_k_hot(theta - lam * upstream + noise, size)

        return gradient

    return _perturb_and_map(logits, size, tau, iterations, dim, generator, rule)


class AdaptiveLambda:
    r"""AIMLE's adaptive :math:`\lambda`: a step in :math:`\pm` ``step`` per call that steers
    the running mean of non-zero gradient entries per row towards ``target``.

    After each backward pass: :math:`\bar n \leftarrow \rho\,\bar n + (1 - \rho)\,\mathrm{nnz}(\hat g)/\text{rows}`;
    :math:`\Delta \leftarrow \mu\Delta + \mathrm{step}\cdot(+1 \text{ if } \bar n < \text{target}
    \text{ else } -1)`; :math:`\lambda \leftarrow \max(\lambda + \Delta, 0)` (the authors'
    ``AdaptiveTargetDistribution``; their defaults). ``adapting=False`` holds it fixed.
    """

    def __init__(
        self,
        lam: float = 1.0,
        *,
        step: float = 1e-4,
        momentum: float = 0.0,
        decay: float = 0.9,
        target: float = 1.0,
        adapting: bool = True,
    ) -> None:
        values = {"lam": lam, "step": step, "momentum": momentum, "decay": decay, "target": target}
        for name, value in values.items():
            number = check_real(value, name)
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.lam, self.step, self.momentum = float(lam), float(step), float(momentum)
        self.decay, self.target, self.adapting = float(decay), float(target), bool(adapting)
        self.nonzero = 1.0  # the authors' initial_grad_norm
        self.last_change = 0.0

    @property
    def adaptation(self) -> Adaptation:
        """It moves from the gradient a backward pass computes: within the call."""
        return "within_call" if self.adapting else "fixed"

    def update(self, gradient: Tensor) -> None:
        """One step from one backward pass's gradient rows (before the division by η)."""
        if not self.adapting:
            return
        functorch = torch._C._functorch
        if functorch.is_functorch_wrapped_tensor(gradient) or functorch.is_batchedtensor(gradient):
            raise TypeError(
                "AIMLE's adaptive lambda changes during a call and cannot adapt under "
                "torch.func transforms; measure a frozen copy (Estimator.freeze())"
            )
        rows = max(1, gradient.numel() // max(1, gradient.shape[-1]))
        per_row = float(torch.count_nonzero(gradient)) / rows
        self.nonzero = self.decay * self.nonzero + (1.0 - self.decay) * per_row
        direction = 1.0 if self.nonzero < self.target else -1.0
        self.last_change = self.momentum * self.last_change + direction * self.step
        self.lam = max(self.lam + self.last_change, 0.0)

    def frozen(self) -> AdaptiveLambda:
        """A copy that no longer adapts (this one goes on as it was)."""
        copy = AdaptiveLambda(adapting=False)
        copy.load_state_dict(self.state_dict())
        copy.adapting = False
        return copy

    def summary(self) -> dict[str, float]:
        return {"lambda": self.lam, "nonzero_per_row": self.nonzero}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume bit for bit."""
        names = ("lam", "step", "momentum", "decay", "target", "adapting", "nonzero")
        return {name: getattr(self, name) for name in (*names, "last_change")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"AdaptiveLambda(lam={self.lam}, nonzero={self.nonzero}, adapting={self.adapting})"


# transforms=False: λ moves inside the backward pass, which draws made under vmap (or in a
# loop given vmap's noise) cannot read as a constant; a module task draws it one pass at a time.
@register(
    unbiased=False,
    label="AIMLE",
    variable="subset",
    state=lambda: {"lam": AdaptiveLambda()},
    transforms=False,
)
def aimle(
    logits: Tensor,
    size: int,
    tau: float = 1.0,
    *,
    lam: AdaptiveLambda | float | None = None,
    symmetric: bool = True,
    iterations: int = 10,
    dim: int = -1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""AIMLE, adaptive I-MLE (Minervini, Franceschi & Niepert, AAAI 2023) for k-subsets.

    Approximates: as :func:`imle`, the gradient for :math:`z = \mathrm{topk}(\theta + \tau\varepsilon)`.
    With: :math:`\eta = \lambda\|\theta\|/\|u\|` (0 where :math:`u = 0`), each row's norms
    (the authors': their minibatch's); ``symmetric`` (central difference, the paper's estimator):
    :math:`\hat g = [\mathrm{topk}(\theta + \eta u + \tau\varepsilon) - \mathrm{topk}(\theta - \eta u + \tau\varepsilon)]/(2\eta)`;
    else :math:`\hat g = [z - \mathrm{topk}(\theta - \eta u + \tau\varepsilon)]/\eta`.
    ``lam``: an :class:`AdaptiveLambda` (the registry's default: starts at 1 and adapts after
    every backward pass), a fixed number, or ``None`` (fixed at 1). Requires: :math:`f`
    differentiable at k-hot inputs. Biased.
    """
    if lam is None:
        lam = AdaptiveLambda(adapting=False)
    elif not isinstance(lam, AdaptiveLambda):
        if not check_real(lam, "lam") > 0:  # λ = 0 would scale every gradient to zero
            raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
        lam = AdaptiveLambda(check_real(lam, "lam"), adapting=False)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
    state = lam

    def rule(size: int) -> GradientRule:
        def gradient(theta: Tensor, noise: Tensor, sample: Tensor, upstream: Tensor) -> Tensor:
            upstream_norm = torch.linalg.vector_norm(upstream, dim=-1, keepdim=True)
            theta_norm = torch.linalg.vector_norm(theta, dim=-1, keepdim=True)
            scale = torch.where(upstream_norm > 0, state.lam * theta_norm / upstream_norm, 0.0)
            right = top_k_hot(theta - scale * upstream + noise, size)
            if symmetric:
                difference = (top_k_hot(theta + scale * upstream + noise, size) - right) / 2
            else:
                difference = sample - right
            state.update(difference)
            return difference / torch.where(scale > 0, scale, 1.0)

        return gradient

    return _perturb_and_map(logits, size, tau, iterations, dim, generator, rule)
