"""ListOps' presets (paper §5.2), as data: the paper's grid for a GPU, a small and a medium
one for 2 CPU cores and a tiny one that checks the pipeline in seconds.

What a preset runs is :meth:`gvbench.listops.experiment.ListOps.run_preset`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    max_lengths: tuple[int, ...]
    taus: tuple[float, ...]
    runs: tuple[tuple[str, str, int], ...]  # (label, estimator, K)
    seeds: int  # seeds 0 … seeds − 1 of every configuration
    steps: int
    sizes: tuple[int, int, int]
    d_hidden: int
    lr: float
    eval_every: int
    variance_every: int  # the gradient variance is measured during training this often
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int
    # Each run's τ annealed from its grid value, "exp->0.1" or "linear->0.1" (the training
    # guide's schedules; the τ axis is then the start); None trains at a fixed τ, as the paper.
    anneal: str | None = None
    # A random search of the learning rate per (estimator, τ, L), the same number of trials for
    # every estimator, lr log-uniform over lr_range, each trial search_steps long, selected on
    # validation accuracy; the runs then train at the chosen lr. None trains every run at lr.
    search_trials: int | None = None
    search_steps: int | None = None
    lr_range: tuple[float, float] | None = None
    # Which validation accuracy of a trial the search ranks: "best" (its peak; None too) or
    # "final" (at its last step, so that a rate whose training collapses within it loses).
    search_selection: str | None = None


PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        max_lengths=(6,),
        taus=(0.01, 1.0),
        runs=(("ST-GS", "st_gumbel_softmax", 1), ("GR-MC10", "gumbel_rao", 10)),
        seeds=2,
        steps=20,
        sizes=(200, 40, 40),
        d_hidden=8,
        lr=0.02,
        eval_every=10,
        variance_every=10,
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
    ),
    # Sized for 2 CPU cores (its time: the docs' performance notes): L = 10, the paper's
    # three temperatures, four seeds.
    "small": Preset(
        max_lengths=(10,),
        taus=(0.01, 0.1, 1.0),
        runs=(
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
            ("GR-MC100", "gumbel_rao", 100),
        ),
        seeds=4,
        steps=2000,
        sizes=(5000, 500, 500),
        d_hidden=32,
        lr=0.02,
        eval_every=250,
        variance_every=500,
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
    ),
    # The paper's grid (Paulus et al. 2021, §5.2), for a GPU (what its training asks of one:
    # suites/benchmarks/step_cost.py), each estimator's lr from twenty trials (the paper's
    # search size; a fifth of the run each, as the VAE's) over medium's range.
    "paper": Preset(
        max_lengths=(10, 25, 50),
        taus=(0.01, 0.1, 1.0),
        runs=(
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
            ("GR-MC100", "gumbel_rao", 100),
            ("GR-MC1000", "gumbel_rao", 1000),
        ),
        seeds=5,
        steps=50_000,
        sizes=(90_000, 5_000, 5_000),
        d_hidden=128,
        lr=0.02,
        eval_every=1000,
        variance_every=5000,
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
        search_trials=20,
        search_steps=10_000,
        lr_range=(1e-3, 1e-2),
        search_selection="final",
    ),
}


# Further on 2 CPU cores (a cell's τ and seeds train as one stack): five times small's steps
# on four times its training data.
# Its learning rate is searched (docs/guide/listops.md: at small's fixed lr 0.02 with momentum
# 0.9, training collapses after 2,000–5,000 steps): eight trials per (estimator, τ) of half
# the run, lr log-uniform over the upper decade of Nangia & Bowman's [1e-4, 1e-2], ranked by
# the validation accuracy at the trial's end.
PRESETS["medium"] = dataclasses.replace(
    PRESETS["small"],
    steps=10_000,
    sizes=(20_000, 1000, 1000),
    eval_every=500,
    variance_every=2500,
    search_trials=8,
    search_steps=5000,
    lr_range=(1e-3, 1e-2),
    search_selection="final",
)
