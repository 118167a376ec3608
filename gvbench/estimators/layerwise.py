r"""Layer-wise ARM and DisARM: the antithetic pair at one stochastic layer at a time, for binary
choices whose logits depend on earlier samples (a sigmoid belief net's layers).

The protocol of DisARM's VAEs with several stochastic layers (Dong, Mnih & Tucker 2020,
NeurIPS; after the multi-layer ARM of Yin & Zhou 2019, ICLR), as the authors' code runs it (google-research ``disarm/binary/networks.py``:
``DiscreteVAE.get_multilayer_grad_estimation``, ``get_multilayer_bernoulli_sample``,
``get_multilayer_uniform_sample``; ``disarm/binary/experiment_launcher_multilayer.py``:
``estimate_gradients``). For an objective that calls its sampler once per layer,
:math:`z_l \sim \mathrm{Bern}(\sigma(\varphi_l))`, :math:`\varphi_l = \varphi_l(z_{<l})`:

1. one run draws the *shared sample* :math:`z_1, …, z_L \sim q` jointly; its loss
   :math:`f(z)` is the surrogate's value and gives the pathwise gradient (the authors'
   generative-model loss ``genmo_loss``);
2. then independent uniforms :math:`u_l`, one per variable of every layer;
3. for each layer :math:`l`, two runs replay :math:`z_{<l}`, play the pair of :math:`u_l` at
   layer :math:`l`, :math:`b = \mathbb{1}[u_l > \sigma(-\varphi_l)]`,
   :math:`\tilde b = \mathbb{1}[u_l < \sigma(\varphi_l)]`, and draw every layer above afresh
   from its own conditionals given the run's own samples: independently in the two runs
   (the launcher's default), or both from the same :math:`u_{l'}`, :math:`l' > l`, with
   ``shared_randomness`` (its ``--shared_randomness`` flag);
4. the logits of layer :math:`l` get the estimator's weight of the two losses' difference,

   .. math::
       \hat g_{\varphi_l} = \big(f(z_{<l}, b, z^{b}_{>l}) - f(z_{<l}, \tilde b, z^{\tilde b}_{>l})\big)\,w_l,

   with ARM's :math:`w = u - \tfrac12` or DisARM's
   :math:`w = \tfrac12 (-1)^{\tilde b}\,\mathbb{1}[b \ne \tilde b]\,\sigma(|\varphi|)`, pushed
   back through the shared run's :math:`\varphi_l` (the authors' ``infnet_logits``).

No baseline. Cost: :math:`1 + 2L` runs of the objective for :math:`L` layers (sampler calls).

Unbiased: the gradient of :math:`\mathbb{E}_q f` is :math:`\mathbb{E}[\partial_\theta f]` plus,
per layer, :math:`\nabla_{\varphi_l}\mathbb{E}_{z_l}[g_l(z_{\le l})]` at :math:`z_{<l} \sim q`,
with :math:`g_l = \mathbb{E}[f \mid z_{\le l}]`. Each run's loss is, given its value at layer
:math:`l`, an unbiased draw of :math:`g_l`, and the weight multiplies the losses linearly, so
step 4 is ARM's or DisARM's estimate of that term whichever way the layers above are drawn.
The authors drop :math:`\log q`'s direct dependence on the encoder (its expectation is zero);
here the shared run's pathwise gradient keeps it, as gvbench's other estimators do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from gvbench.estimators.binary import bernoulli_logit
from gvbench.estimators.registry import Choices, Objective, register
from gvbench.estimators.sampling import uniform_like
from gvbench.estimators.surrogates import sum_to_examples
from gvbench.estimators.validation import (
    check_losses,
    check_objective,
    refuse_subset_size,
    validate_args,
)

Pair = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``pair(u, φ) -> (b, b̃)``: the antithetic values of one layer."""
Weight = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``weight(u, φ, b, b̃) -> w``: the layer's gradient is :math:`(f(b) - f(\\tilde b))\\,w`."""


def _one_hot(value: Tensor, dim: int) -> Tensor:
    return torch.stack([1 - value, value], dim=dim)


class _SharedDraw:
    """The shared run's sampler: :math:`z \\sim \\mathrm{Bern}(\\sigma(\\varphi))` at every call,
    recorded with the call's :math:`\\varphi` (and its graph)."""

    def __init__(self, name: str, generator: torch.Generator | None) -> None:
        self.name, self.generator = name, generator
        self.phis: list[Tensor] = []
        self.samples: list[Tensor] = []

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        phi = bernoulli_logit(logits, dim, self.name)
        u = uniform_like(phi.shape, phi, self.generator).to(phi.dtype)
        z = (u < torch.sigmoid(phi.detach())).to(phi.dtype)
        self.phis.append(phi)
        self.samples.append(z)
        return _one_hot(z, dim)


class _PairRun:
    """The sampler of one run of layer ``layer``'s pair: the shared sample below, ``value`` at
    the layer, ``above(call, φ)`` (a fresh draw) at every call after it."""

    def __init__(
        self,
        shared: _SharedDraw,
        layer: int,
        value: Tensor,
        above: Callable[[int, Tensor], Tensor],
    ) -> None:
        self.shared, self.layer, self.value, self.above = shared, layer, value, above
        self.calls = 0

    def __call__(self, logits: Tensor, size: None = None, *, dim: int = -1) -> Tensor:
        refuse_subset_size(size)
        phi = bernoulli_logit(logits, dim, self.shared.name)
        call, self.calls = self.calls, self.calls + 1
        known = self.shared.phis
        # The value check is data-dependent: off where validation is (under torch.func.vmap).
        if (
            call >= len(known)
            or phi.shape != known[call].shape
            or (
                call <= self.layer
                and validate_args()
                and not torch.equal(phi.detach(), known[call].detach())
            )
        ):
            raise ValueError(
                f"{self.shared.name} needs the same choices, with the same logits at the same "
                "earlier samples, in every run of the objective: its choices must be a "
                "deterministic function of the samples before them"
            )
        if call < self.layer:
            return _one_hot(self.shared.samples[call], dim)
        if call == self.layer:
            return _one_hot(self.value, dim)
        return _one_hot(self.above(call, phi.detach()), dim)


def _upper_draws(
    uniforms: list[Tensor], shared_randomness: bool, generator: torch.Generator | None
) -> Callable[[int, Tensor], Tensor]:
    """How a run draws the layers above its pair: from fresh uniforms, or from the layer's own
    :math:`u_{l'}` (``shared_randomness``: the same in both runs of a pair)."""

    def draw(call: int, phi: Tensor) -> Tensor:
        u = uniforms[call] if shared_randomness else uniform_like(phi.shape, phi, generator)
        return (u.to(phi.dtype) < torch.sigmoid(phi)).to(phi.dtype)

    return draw


def _layerwise_surrogate(
    objective: Objective,
    name: str,
    pair: Pair,
    weight: Weight,
    shared_randomness: bool,
    generator: torch.Generator | None,
) -> Tensor:
    r"""Value :math:`f(z)` at the shared sample; gradient its pathwise gradient plus, per layer,
    :math:`(f(b) - f(\tilde b))\,w_l\,\nabla\varphi_l` (the module's steps 1–4)."""
    check_objective(objective)
    if not isinstance(shared_randomness, bool):
        raise TypeError(f"shared_randomness must be True or False, got {shared_randomness!r}")
    shared = _SharedDraw(name, generator)
    loss = check_losses(objective(shared))
    if not shared.phis:
        raise ValueError("the objective made no discrete choice (it never called the sampler)")
    for phi in shared.phis:
        # the message of sum_to_examples, raised before any further run is spent
        sum_to_examples(phi.detach(), loss.shape, "the Bernoulli logits")
    uniforms = [uniform_like(phi.shape, phi, generator).to(phi.dtype) for phi in shared.phis]
    above = _upper_draws(uniforms, shared_randomness, generator)
    correction = torch.zeros_like(loss)
    for layer, (phi, u) in enumerate(zip(shared.phis, uniforms, strict=True)):
        b, b_tilde = pair(u, phi.detach())
        with torch.no_grad():
            runs = [_PairRun(shared, layer, value, above) for value in (b, b_tilde)]
            f, f_tilde = (check_losses(objective(run)) for run in runs)
        if any(run.calls != len(shared.phis) for run in runs):
            raise ValueError(f"the objective made a different number of choices in {name}'s runs")
        difference = f - f_tilde
        scaled = difference.reshape(*difference.shape, *[1] * (phi.dim() - difference.dim()))
        w = weight(u, phi.detach(), b, b_tilde)
        correction = correction + sum_to_examples(
            (scaled * w) * (phi - phi.detach()), loss.shape, "the Bernoulli logits"
        )
    return loss + correction


def _pair(u: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
    return (u > torch.sigmoid(-phi)).to(phi.dtype), (u < torch.sigmoid(phi)).to(phi.dtype)


def _arm_weight(u: Tensor, phi: Tensor, b: Tensor, b_tilde: Tensor) -> Tensor:
    return u - 0.5


def _disarm_weight(u: Tensor, phi: Tensor, b: Tensor, b_tilde: Tensor) -> Tensor:
    differ = (b != b_tilde).to(phi.dtype)
    return 0.5 * (1 - 2 * b_tilde) * differ * torch.sigmoid(phi.abs())


def _evaluations(options: Mapping[str, Any], choices: Choices) -> int:
    return 1 + 2 * len(choices.calls)  # the shared run, then a pair per layer


@register(unbiased=True, binary_only=True, label="ARM (layer-wise)", evaluations=_evaluations)
def arm_layerwise(
    objective: Objective,
    *,
    shared_randomness: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""ARM applied one layer at a time (Yin & Zhou 2019, ICLR, multi-layer ARM), for
    Bernoulli choices whose logits may depend on earlier samples.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z \sim q_\theta}[f(z)]`,
    :math:`q_\theta(z) = \prod_l \mathrm{Bern}(z_l; \sigma(\varphi_l(z_{<l})))`, unbiased.
    With: the shared sample :math:`z \sim q` and, per layer :math:`l`, ARM's pair of
    :math:`u_l \sim U(0, 1)`, each run completed above :math:`l` from :math:`q`,

    .. math::
        \hat g_{\varphi_l} = \big(f(z_{<l}, \mathbb{1}[u_l > \sigma(-\varphi_l)], \cdot)
            - f(z_{<l}, \mathbb{1}[u_l < \sigma(\varphi_l)], \cdot)\big)\,(u_l - \tfrac12).

    The protocol and its sources are in :mod:`gvbench.estimators.layerwise`; ``shared_randomness``
    draws both runs' upper layers from the same uniforms. :math:`1 + 2L` evaluations for
    :math:`L` sampler calls. Returns per-example surrogates (value: the shared sample's loss).
    """
    return _layerwise_surrogate(
        objective, "arm_layerwise", _pair, _arm_weight, shared_randomness, generator
    )


@register(unbiased=True, binary_only=True, label="DisARM (layer-wise)", evaluations=_evaluations)
def disarm_layerwise(
    objective: Objective,
    *,
    shared_randomness: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""DisARM applied one layer at a time (Dong, Mnih & Tucker 2020, NeurIPS, multi-layer
    experiments), for Bernoulli choices whose logits may depend on earlier samples.

    Approximates: :math:`\nabla_\theta \mathbb{E}_{z \sim q_\theta}[f(z)]`,
    :math:`q_\theta(z) = \prod_l \mathrm{Bern}(z_l; \sigma(\varphi_l(z_{<l})))`, unbiased.
    With: the shared sample :math:`z \sim q` and, per layer :math:`l`, the antithetic pair
    :math:`b = \mathbb{1}[u_l > \sigma(-\varphi_l)]`, :math:`\tilde b = \mathbb{1}[u_l < \sigma(\varphi_l)]`,
    each run completed above :math:`l` from :math:`q`,

    .. math::
        \hat g_{\varphi_l, i} = \tfrac12\big(f(z_{<l}, b, \cdot) - f(z_{<l}, \tilde b, \cdot)\big)
            \,(-1)^{\tilde b_i}\,\mathbb{1}[b_i \ne \tilde b_i]\,\sigma(|\varphi_{l,i}|).

    On one layer its logits' gradient is :func:`~gvbench.estimators.disarm`'s at the same
    :math:`u` (with a third run, the shared sample, for the value and the pathwise part). The
    protocol and its sources are in :mod:`gvbench.estimators.layerwise`. :math:`1 + 2L`
    evaluations for :math:`L` sampler calls.
    """
    return _layerwise_surrogate(
        objective, "disarm_layerwise", _pair, _disarm_weight, shared_randomness, generator
    )
