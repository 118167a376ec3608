"""The discrete VAE's column of ``gvbench leaderboard`` (paper §5.3).

Gradient quality of the encoder at the checkpoint the study's variance sweep uses (briefly
trained with ST-GS by :meth:`~gvbench.experiment.Experiment.task`, cached in the leaderboard's
column folder), at the search's arity and the preset's small batch size; training as the
study's preset tunes it: a random search of lr and τ over the preset's ranges, the same number
of trials for every estimator, selected on the validation negative ELBO; the outcome is the
importance-weighted test bound −log p(x) (lower is better).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol
from gvbench.vae.presets import PRESETS

if TYPE_CHECKING:
    from gvbench.vae.experiment import VAE

# Leaderboard preset → the study's preset whose sizes and search it takes.
LEADERBOARD_PRESETS = {"tiny": "tiny", "cpu": "small", "paper": "paper"}
SOURCE = "Paulus et al. 2021 (Gumbel-Rao), §5.3"
CLAIMS = (
    DirectionClaim(
        "gumbel_rao",
        "st_gumbel_softmax",
        "variance",
        f"{SOURCE}: GR-MCK's encoder-gradient variance below ST-GS's",
    ),
    DirectionClaim(
        "gumbel_rao",
        "st_gumbel_softmax",
        "outcome",
        f"{SOURCE}: GR-MCK trains a better model than ST-GS at the small batch size",
    ),
)


def vae_columns(experiment: VAE, preset: str) -> tuple[Column, ...]:
    """The VAE's column at leaderboard preset ``preset`` (none where it has no such preset)."""
    if preset not in LEADERBOARD_PRESETS:
        return ()
    sizes = PRESETS[LEADERBOARD_PRESETS[preset]]
    arity, batch = sizes.search_arity, sizes.batch_sizes[0]
    shape = {"arity": arity, "latent_dim": sizes.latent_dim, "hidden": sizes.hidden}
    task = functools.partial(
        experiment.task, **shape, train_steps=max(10, sizes.steps // 2), seed=0
    )
    base = experiment.Config(
        estimator="st_gumbel_softmax",
        **shape,
        batch_size=batch,
        steps=sizes.steps,
        eval_every=sizes.eval_every,
        variance_every=0,
        iw_samples=sizes.iw_samples,
    )
    training = TrainingProtocol.tuned_on_validation(
        experiment,
        base,
        seeds=sizes.seeds,
        trials=sizes.search_trials,
        search_steps=sizes.search_steps,
        lr=sizes.lr_range,
        tau=sizes.tau_range,
        outcome="test_iw_nll",
        outcome_units="nats",
    )
    return (
        Column(
            name=f"vae-a{arity}-b{batch}",
            title=f"discrete VAE, a = {arity}, B = {batch}",
            protocol=f"{SOURCE}: binarized MNIST, m·a = {sizes.latent_dim} latent units",
            gradients=GradientCheck(
                task=task,
                batch_size=batch,
                reps=sizes.variance_reps,
                reference_reps=sizes.reference_reps,
            ),
            training=training,
            claims=CLAIMS,
            options={"gumbel_rao": {"k": 10}},
        ),
    )
