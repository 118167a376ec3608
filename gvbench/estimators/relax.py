r"""REBAR and RELAX: the score function with a reparameterised, trained control variate.

For a categorical :math:`D = H(z)`, :math:`z = \theta + G`, and :math:`\tilde z \sim (\theta + G \mid
\arg\max = D)` drawn by the exponential race *with its gradient through* :math:`\theta` (through
:math:`\log Z` and the :math:`\theta_j`, unlike Gumbel-Rao), any control variate :math:`c` of a
relaxed input gives the unbiased estimator (Tucker et al. 2017; Grathwohl et al. 2018)

.. math::
    \hat g = \nabla f(D) + \big[f(D) - c(\tilde z)\big]\nabla_\theta \log p(D\mid\theta)
             + \nabla_\theta c(z) - \nabla_\theta c(\tilde z),

because :math:`z` and :math:`\tilde z` have the same law. The objective runs three times: on
:math:`D`, and on the relaxed samples :math:`\mathrm{softmax}(z/\lambda)` and
:math:`\mathrm{softmax}(\tilde z/\lambda)`; it must accept relaxed inputs, and every choice's
logits must not depend on earlier samples. After each call the control variate's parameters take
one Adam step on :math:`\|\hat g_\theta\|^2` (the estimate's second moment w.r.t. the logits,
whose gradient is :math:`\mathbb{E}[2\hat g\,\partial\hat g/\partial\phi]`): unbiased for any
parameters, lower variance as they train.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from gvbench.estimators.adaptation import adam, variance_step
from gvbench.estimators.registry import Objective, register
from gvbench.estimators.sampling import exponential_like, gumbel_like, one_hot_argmax
from gvbench.estimators.state import Adaptation
from gvbench.estimators.surrogates import sum_to_examples
from gvbench.estimators.validation import (
    check_count,
    check_logits,
    check_losses,
    check_objective,
    check_real,
    refuse_subset_size,
)

__all__ = ["ControlVariate", "rebar", "relax"]


def _under_transform(tensor: Tensor) -> bool:
    """Whether ``tensor`` is one of a ``torch.func`` transform's (vmap's, grad's)."""
    functorch = torch._C._functorch
    return bool(functorch.is_functorch_wrapped_tensor(tensor) or functorch.is_batchedtensor(tensor))


class ControlVariate:
    r""":math:`c(z) = \eta\,f(\mathrm{softmax}(z/\lambda)) + b + \sum_v \mathrm{MLP}_\phi(\mathrm{softmax}(z_v/\lambda))`.

    REBAR is ``hidden=0`` (the scaled relaxed objective and the constant b); RELAX adds a
    one-hidden-layer network applied to every variable's relaxed sample. The learned constant
    b is REINFORCE's baseline inside the control variate: it cancels from the two correction
    terms, so the estimator stays unbiased, and it removes the common part of f that
    :math:`\eta f(\mathrm{softmax}(\tilde z/\lambda))` cannot match where the relaxed objective is
    far from the discrete one (on the paper's toy, REBAR without it has 100× REINFORCE's
    variance, however η and λ are trained). The network is built at the first call
    (when the arity is known) from a fixed seed, so runs are reproducible; :meth:`state_dict`
    holds everything a checkpoint needs.

    Args:
        hidden: hidden units of the network (0: none).
        eta: initial scale η of the relaxed objective.
        temperature: initial λ of the relaxation.
        lr: Adam learning rate of the variance minimisation (0: the parameters stay fixed).
    """

    def __init__(
        self, hidden: int = 0, eta: float = 1.0, temperature: float = 0.5, lr: float = 1e-2
    ) -> None:
        self.hidden = check_count(hidden, "hidden", 0, 1 << 16)
        eta, temperature = check_real(eta, "eta"), check_real(temperature, "temperature")
        self.lr = check_real(lr, "lr")
        if not math.isfinite(eta) or not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"eta must be finite and temperature > 0, got {eta}, {temperature}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        self.eta = torch.tensor(eta, dtype=torch.float64)
        self.offset = torch.tensor(0.0, dtype=torch.float64)
        self.log_temperature = torch.tensor(math.log(temperature), dtype=torch.float64)
        self.network: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None

    def parameters(self) -> list[Tensor]:
        network = list(self.network.parameters()) if self.network is not None else []
        return [self.eta, self.offset, self.log_temperature, *network]

    def prepare(self, arity: int, like: Tensor) -> None:
        """Build the network and optimiser for ``arity`` categories in ``like``'s dtype/device.

        Only outside ``torch.func`` transforms: a tensor made under vmap or grad and kept as
        state would outlive its transform (unusable, not even copyable). Under a transform,
        a control variate that is not yet in ``like``'s dtype and device raises TypeError,
        which a caller such as ``ModuleTask`` reads as "measure this one draw per pass".
        """
        ready = self.network is not None and all(
            t.dtype == like.dtype and t.device == like.device
            for t in (self.eta, self.offset, self.log_temperature, *self.network.parameters())
        )
        if ready and (self.optimizer is not None or self.lr == 0):
            return
        if _under_transform(like):
            raise TypeError(
                "a REBAR/RELAX control variate is built at its first call, which cannot be "
                "made under torch.func transforms; call the estimator once outside them first"
            )
        if self.network is None:
            if self.hidden:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)  # a fixed initialisation, whatever the global state
                    self.network = nn.Sequential(
                        nn.Linear(arity, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
                    )
            else:
                self.network = nn.Sequential()
        self.network.to(dtype=like.dtype, device=like.device)
        for tensor in (self.eta, self.offset, self.log_temperature):
            tensor.data = tensor.data.to(dtype=like.dtype, device=like.device)
            tensor.requires_grad_(self.lr > 0)
        if self.optimizer is None and self.lr > 0:
            self.optimizer, self._pending = (
                adam(list(self.parameters()), self.lr, self._pending),
                None,
            )

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def snapshot(self) -> dict[str, Tensor]:
        """Copies of the parameters, connected to them for the variance step but not changed by
        it: the surrogate a call returns keeps the values it was built with."""
        copies = {
            "eta": self.eta.clone(),
            "offset": self.offset.clone(),
            "log_temperature": self.log_temperature.clone(),
        }
        if self.hidden:
            copies |= {f"network.{k}": v.clone() for k, v in self.network.named_parameters()}
        return copies

    def network_term(self, relaxed: Tensor, snapshot: dict[str, Tensor]) -> Tensor:
        """MLP(relaxed sample) per variable: ``relaxed``'s shape less the category dim."""
        if not self.hidden:
            return relaxed.new_zeros(relaxed.shape[:-1])
        weights = {k.removeprefix("network."): v for k, v in snapshot.items() if "." in k}
        return torch.func.functional_call(self.network, weights, (relaxed,)).squeeze(-1)

    def freeze(self) -> ControlVariate:
        """Stop training (e.g. to measure the variance a trained control variate leaves)."""
        self.lr, self.optimizer = 0.0, None
        for tensor in (self.eta, self.offset, self.log_temperature):
            tensor.requires_grad_(False)
        return self

    def frozen(self) -> ControlVariate:
        """A copy that no longer trains (this one goes on as it was)."""
        return copy.deepcopy(self).freeze()

    @property
    def adaptation(self) -> Adaptation:
        """It trains within a call (see :class:`gvbench.estimators.EstimatorState`) unless
        frozen or its learning rate is 0."""
        return "within_call" if self.optimizer is not None or self.lr > 0 else "fixed"

    def summary(self) -> dict[str, float]:
        return {
            "eta": float(self.eta.detach()),
            "temperature": float(self.temperature.detach()),
            "baseline": float(self.offset.detach()),
        }

    def update(self, loss: Tensor) -> None:
        """One Adam step on ``loss`` (the estimate's second moment) w.r.t. the parameters."""
        if self.optimizer is not None:
            variance_step(self.optimizer, self.parameters(), loss)

    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "lr": self.lr,
            "eta": self.eta.detach().clone(),
            "offset": self.offset.detach().clone(),
            "log_temperature": self.log_temperature.detach().clone(),
            "network": None if self.network is None else self.network.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hidden, self.lr = state["hidden"], state["lr"]
        self.eta = state["eta"].clone()
        self.offset = state.get("offset", torch.zeros_like(self.eta)).clone()
        self.log_temperature = state["log_temperature"].clone()
        self.network, self.optimizer, self._pending = None, None, None
        if state["network"] is not None:
            weight = next(iter(state["network"].values()), None)
            arity = weight.shape[1] if weight is not None else 1
            self.prepare(arity, self.eta)
            self.network.load_state_dict(state["network"])
            if state["optimizer"] is not None and self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
        else:
            self._pending = state["optimizer"]

    def __repr__(self) -> str:
        return (
            f"ControlVariate(hidden={self.hidden}, eta={float(self.eta.detach()):.4g}, "
            f"temperature={float(self.temperature.detach()):.4g}, lr={self.lr})"
        )


def _conditional_perturbation(theta: Tensor, index: Tensor, e: Tensor) -> Tensor:
    r"""The exponential race :math:`\tilde z` given :math:`\arg\max = d`, differentiable in θ.

    Masked categories (θ = −∞) stay at −∞ with a zero gradient.
    """
    finite = torch.isfinite(theta)
    safe = torch.where(finite, theta, torch.zeros_like(theta))
    log_z = torch.logsumexp(theta, -1, keepdim=True)
    top = log_z - e.gather(-1, index).log()
    others = -torch.logaddexp(-top, e.log() - safe)
    chosen = torch.zeros_like(theta, dtype=torch.bool).scatter(-1, index, True)
    value = torch.where(chosen, top.expand_as(theta), others)
    return torch.where(finite, value, torch.full_like(theta, -torch.inf))


class _Recorder:
    """First run: draws z, z̃ and D per choice. Later runs: relaxed samples of z or z̃."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.sites: list[dict[str, Tensor]] = []
        self.play: str | None = None  # None: the hard run; "z" or "z_tilde": relaxed runs
        self.call = 0
        self.temperature: Tensor | None = None

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        dim = check_logits(logits, dim)
        theta = logits.movedim(dim, -1)
        if self.play is None:
            z = theta + gumbel_like(theta, self.generator)
            sample = one_hot_argmax(z, -1)
            index = sample.argmax(-1, keepdim=True)
            e = exponential_like(theta.shape, theta, self.generator)
            z_tilde = _conditional_perturbation(theta, index, e)
            log_p = torch.log_softmax(theta, -1).gather(-1, index).squeeze(-1)
            self.sites.append({"theta": theta, "z": z, "z_tilde": z_tilde, "log_p": log_p})
            return sample.movedim(-1, dim)
        if self.call >= len(self.sites) or not torch.equal(
            self.sites[self.call]["theta"].detach(), theta.detach()
        ):
            raise ValueError(
                "REBAR and RELAX need every choice's logits to be the same in their three runs "
                "of the objective: choices whose logits depend on earlier samples are not supported"
            )
        perturbed = self.sites[self.call][self.play]
        self.call += 1
        return torch.softmax(perturbed / self.temperature, -1).movedim(-1, dim)

    def relaxed_run(self, objective: Objective, which: str, temperature: Tensor) -> Tensor:
        self.play, self.call, self.temperature = which, 0, temperature
        loss = check_losses(objective(self))
        if self.call != len(self.sites):
            raise ValueError("the objective made a different number of choices in its runs")
        return loss


def _relaxed_control_variate(
    objective: Objective, control: ControlVariate, generator: torch.Generator | None
) -> Tensor:
    check_objective(objective)
    if not isinstance(control, ControlVariate):
        raise TypeError(f"control must be a gvbench ControlVariate, got {type(control).__name__}")
    recorder = _Recorder(generator)
    loss = check_losses(objective(recorder))
    if not recorder.sites:
        raise ValueError("the objective made no discrete choice (it never called the sampler)")
    first = recorder.sites[0]["theta"]
    control.prepare(first.shape[-1], first)
    snapshot = control.snapshot()
    temperature = snapshot["log_temperature"].exp()

    def control_at(which: str) -> Tensor:
        value = snapshot["eta"] * recorder.relaxed_run(objective, which, temperature)
        value = value + snapshot["offset"]
        for site in recorder.sites:
            relaxed = torch.softmax(site[which] / temperature, -1)
            value = value + sum_to_examples(
                control.network_term(relaxed, snapshot), loss.shape, "the control variate"
            )
        return value

    c_z, c_tilde = control_at("z"), control_at("z_tilde")
    log_p = sum(sum_to_examples(site["log_p"], loss.shape) for site in recorder.sites)
    # (log p − sg log p) is exactly 0, so the coefficient's own gradient never reaches θ, and it
    # is not detached: the variance step needs its dependence on the control's parameters.
    surrogate = (
        loss
        + (loss - c_tilde) * (log_p - log_p.detach())
        + (c_z - c_z.detach())
        - (c_tilde - c_tilde.detach())
    )
    thetas = [site["theta"] for site in recorder.sites if site["theta"].requires_grad]
    if control.optimizer is not None and thetas and torch.is_grad_enabled():
        grads = torch.autograd.grad(surrogate.sum(), thetas, create_graph=True, retain_graph=True)
        second_moment = sum((g**2).sum() for g in grads) / max(1, loss.numel())
        control.update(second_moment)
    return surrogate


@register(
    unbiased=True,
    relaxed=True,
    label="REBAR",
    evaluations=3,
    state=lambda: {"control": ControlVariate(hidden=0)},
)
def rebar(
    objective: Objective,
    *,
    control: ControlVariate | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, NeurIPS), categorical.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{D\sim p_\theta}[f(D)]`, unbiased.
    With: the control variate :math:`c(z) = \eta\,f(\mathrm{softmax}(z/\lambda))` in the estimator
    of the module docstring; η and λ are trained to minimise the variance (``control``: a
    :class:`ControlVariate`, the registry's default has η = 1, λ = 0.5, Adam at 0.01).
    Requires: :math:`f` defined on the simplex (relaxed inputs); choices whose logits do not
    depend on earlier samples. Three runs of the objective. Returns per-example surrogates.
    """
    return _relaxed_control_variate(objective, control or ControlVariate(hidden=0), generator)


@register(
    unbiased=True,
    relaxed=True,
    label="RELAX",
    evaluations=3,
    state=lambda: {"control": ControlVariate(hidden=16)},
)
def relax(
    objective: Objective,
    *,
    control: ControlVariate | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, ICLR), categorical.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{D\sim p_\theta}[f(D)]`, unbiased.
    With: :math:`c_\phi(z) = \eta\,f(\mathrm{softmax}(z/\lambda)) + \sum_v \mathrm{MLP}_\phi(\mathrm{softmax}(z_v/\lambda))`
    (REBAR's term plus a learned network, 16 hidden units by default), all of η, λ and φ trained
    to minimise the variance; the state lives in ``control`` (saved in training checkpoints).
    Requires: as :func:`rebar`.
    """
    return _relaxed_control_variate(objective, control or ControlVariate(hidden=16), generator)
