"""The binary VAE's columns of ``gvbench leaderboard``: the linear and nonlinear VAE and a
sigmoid belief net of four layers (those a preset trains), each measured at a checkpoint and
trained at DisARM's settings, and the directions that DisARM and its successors state on them.

DisARM does not tune its optimiser: every estimator trains at Adam 1e-4 (Dong, Mnih & Tucker
2020, Figure 5; the launchers' defaults). The leaderboard's search is therefore a narrow one
around that value (a factor of two either way), the same for every estimator, so that no
estimator is held to a rate that does not suit it while the protocol stays DisARM's. τ is
searched only for the estimators that take one (DisARM compares none: RELAX learns its own).

The rows are the registry's estimators that apply to each model. On the sigmoid belief net,
whose layers' logits depend on the samples below, ARM and DisARM run as the authors run them
there, one layer at a time (``arm_layerwise``, ``disarm_layerwise``:
:mod:`gvbench.estimators.layerwise`, 1 + 2L evaluations for L layers).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gvbench.experiments.binary_vae.config import preset_config
from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol

if TYPE_CHECKING:
    from gvbench.experiments.binary_vae.experiment import BinaryVAE
    from gvbench.experiments.binary_vae.presets import Preset

LR_RANGE = (5e-5, 2e-4)
TAU_RANGE = (0.1, 2.0)
DISARM = "Dong, Mnih & Tucker 2020 (NeurIPS)"
# (name, title, variant, layers)
MODELS = (
    ("binary_vae_linear", "Binary VAE, linear", "linear", 1),
    ("binary_vae_nonlinear", "Binary VAE, nonlinear", "nonlinear", 1),
    ("sbn", "Sigmoid belief net, 4 layers", "sbn", 4),
)


# DisARM compares REINFORCE LOO (RLOO, K = 2), not REINFORCE with a running baseline: the
# directions against the latter are the field's reading (issue 36), with the leave-one-out
# baseline's source.
AGAINST_REINFORCE = "issue 36; Kool, van Hoof & Welling 2019 (ICLR workshop), leave-one-out"


def vae_claims(model: str) -> tuple[DirectionClaim, ...]:
    """The directions stated on the single-layer binary VAE (``model``: linear or
    nonlinear): DisARM's own against ARM and RLOO (2 evaluations, "REINFORCE LOO"), both
    against REINFORCE, and the two later control-variate estimators against DisARM."""
    figure = f"{DISARM}, Figure 5, {model} row"
    return (
        DirectionClaim("disarm", "arm", "variance", f"{figure}, right: gradient variance"),
        DirectionClaim("disarm", "rloo", "variance", f"{figure}, right: gradient variance"),
        DirectionClaim("disarm", "arm", "outcome", f"{figure}, middle: 100-sample test bound"),
        DirectionClaim("disarm", "reinforce", "variance", AGAINST_REINFORCE),
        DirectionClaim("rloo", "reinforce", "variance", AGAINST_REINFORCE),
        DirectionClaim(
            "double_cv", "disarm", "variance", "Titsias & Shi 2022 (AISTATS), binary VAE"
        ),
        DirectionClaim("rodeo", "disarm", "variance", "Shi et al. 2022 (NeurIPS), binary VAE"),
    )


def sbn_claims() -> tuple[DirectionClaim, ...]:
    """The directions checked on the sigmoid belief net: RLOO against REINFORCE. DisARM's
    layer-wise form is measured here (``disarm_layerwise``), but no direction of DisARM's on
    the multi-layer model is taken from its text (Figure 5 and its claims are the single-layer
    models'), so none is checked."""
    return (DirectionClaim("rloo", "reinforce", "variance", AGAINST_REINFORCE),)


def columns(experiment: BinaryVAE, preset: Preset) -> tuple[Column, ...]:
    """A column per model of ``preset`` (of :data:`MODELS`), at its sizes."""
    models = {(variant, layers) for _, variant, layers in preset.models}
    found = []
    for name, title, variant, layers in MODELS:
        if (variant, layers) not in models:
            continue
        estimator = "disarm" if layers == 1 else "rloo"
        k = 2 if layers > 1 else 1
        base = preset_config(preset, variant, layers, estimator, k, variance_every=0)
        found.append(
            Column(
                name=name,
                title=f"{title} ({preset.dataset})",
                protocol=f"{DISARM}, Figure 5; google-research disarm/binary",
                gradients=GradientCheck(
                    task=functools.partial(
                        experiment.task,
                        model=variant,
                        layers=layers,
                        dataset=preset.dataset,
                        train_steps=preset.checkpoint_steps,
                        batch_pool=preset.batch_size,
                    ),
                    batch_size=preset.batch_size,
                    reps=preset.gradient_reps,
                    k=2,
                    reference_reps=preset.reference_reps,
                ),
                training=TrainingProtocol(
                    train=experiment.train,
                    base=base,
                    seeds=preset.seeds,
                    trials=preset.search_trials,
                    search_steps=preset.search_steps,
                    lr=LR_RANGE,
                    momentum=None,
                    tau=TAU_RANGE,
                    selection="valid_iw_nll",
                    selection_higher_is_better=False,
                    outcome="test_iw_nll",
                    outcome_higher_is_better=False,
                    outcome_units="nats",
                    # The bound is computed once, at the end; the runs' curve is the ELBO's.
                    curve="valid_negative_elbo",
                ),
                claims=vae_claims(variant) if layers == 1 else sbn_claims(),
            )
        )
    return tuple(found)
