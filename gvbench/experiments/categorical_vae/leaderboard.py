"""The categorical VAE's two leaderboard columns: ``categorical_vae_20x10`` (the coupled
estimators' protocol) and ``categorical_vae_8x4`` (ReinMax's, whose gradient check is exact),
each with the directions its paper states."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gvbench.experiments.categorical_vae.presets import ProtocolPreset
from gvbench.experiments.categorical_vae.protocols import protocol
from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol

if TYPE_CHECKING:
    from gvbench.experiments.categorical_vae.experiment import CategoricalVAEExperiment

COUPLED = (
    "Dong, Mnih & Tucker 2021 (NeurIPS), Coupled Gradient Estimators for Discrete Latent Variables"
)
REINMAX = "Liu et al. 2023 (NeurIPS), Bridging Discrete and Backpropagation (ReinMax)"

CLAIMS = {
    "coupled": (
        DirectionClaim(
            "categorical_disarm",
            "rloo",
            "variance",
            f"{COUPLED}, abstract and categorical-VAE experiments: the coupled estimator below "
            "its uncoupled two-sample form (RLOO, 2 evaluations each)",
        ),
        DirectionClaim(
            "categorical_disarm",
            "reinforce",
            "variance",
            f"{COUPLED}, categorical-VAE experiments: the coupled estimator below REINFORCE",
        ),
        DirectionClaim(
            "rloo",
            "reinforce",
            "variance",
            f"{COUPLED}, categorical-VAE experiments: RLOO, the strong baseline, below REINFORCE",
        ),
        DirectionClaim(
            "rloo",
            "arsm",
            "outcome",
            f"{COUPLED}, abstract: ARSM, even Rao-Blackwellized, underperforms RLOO",
        ),
    ),
    "reinmax": (
        DirectionClaim(
            "reinmax",
            "st_gumbel_softmax",
            "bias2",
            f"{REINMAX}, gradient-approximation analysis of the 8 × 4 MNIST-VAE against the "
            "enumerated gradient (authors' mnist_vae README, -s): ReinMax closer than ST-GS",
        ),
        DirectionClaim(
            "reinmax",
            "straight_through",
            "bias2",
            f"{REINMAX}: ST is a first-order approximation of the gradient, ReinMax a "
            "second-order one",
        ),
        DirectionClaim(
            "reinmax",
            "st_gumbel_softmax",
            "outcome",
            f"{REINMAX}, MNIST-VAE results, 8 × 4 setting: ReinMax's negative ELBO below ST-GS's",
        ),
    ),
}


def columns(experiment: CategoricalVAEExperiment, preset: str) -> tuple[Column, ...]:
    """Both protocols' columns at ``preset``."""
    parts = experiment.preset(preset).parts()
    return tuple(_column(experiment, part) for part in parts)


def _column(experiment: CategoricalVAEExperiment, part: ProtocolPreset) -> Column:
    chosen = protocol(part.protocol)
    sizes = {
        "protocol": part.protocol,
        "latents": part.latents,
        "categories": part.categories,
        "hidden": part.hidden,
        "batch_size": part.batch_size,
    }
    gradients = GradientCheck(
        task=functools.partial(
            experiment.task,
            **sizes,
            train_steps=part.gradient_check_steps,
            batch_pool=part.analysis_batch,
        ),
        batch_size=part.analysis_batch,
        reps=part.analysis_reps,
        tau=chosen.tau,
        reference_reps=part.reference_reps,
    )
    base = experiment.Config(
        **sizes,
        estimator=chosen.trainer,
        k=chosen.trainer_k,
        tau=chosen.tau,
        steps=part.steps,
        eval_every=part.eval_every,
        variance_every=0,
        test_samples=part.test_samples,
        dynamic_binarization=part.dynamic_binarization,
    )
    # The coupled estimators' paper reports the 100-sample test bound; ReinMax's script, the
    # test negative ELBO.
    outcome = "test_iw_nll" if part.protocol == "coupled" else "test_negative_elbo"
    training = TrainingProtocol.tuned_on_validation(
        experiment,
        base,
        seeds=part.seeds,
        trials=part.search_trials,
        search_steps=part.search_steps,
        lr=part.lr_range,
        tau=part.tau_range,
        outcome=outcome,
        outcome_units="nats",
    )
    name, source = {
        "coupled": ("categorical_vae_20x10", COUPLED),
        "reinmax": ("categorical_vae_8x4", REINMAX),
    }[part.protocol]
    return Column(
        name=name,
        title=f"categorical VAE, {part.latents} latents × {part.categories} categories ({part.protocol})",
        protocol=f"{source}; {chosen.source}",
        gradients=gradients,
        training=training,
        claims=CLAIMS[part.protocol],
    )
