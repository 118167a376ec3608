"""The polynomial experiment's presets, as data: the published sizes (``paper``), one that
separates estimators on 2 CPU cores (``cpu``) and one that checks the pipeline in seconds
(``tiny``).

Each preset has two protocols (:class:`Protocol`): ReinMax's polynomial programming and the
quadratic toy of REBAR, RELAX and ARM. What a preset runs is
:meth:`gvbench.experiments.poly.experiment.Polynomial.run_preset`; its leaderboard columns
are :func:`gvbench.experiments.poly.leaderboard.columns`.
"""

from __future__ import annotations

import dataclasses

# (label, registered estimator, K, τ)
Run = tuple[str, str, int, float]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One task's training and its gradient check.

    Attributes:
        runs: what is trained, each at the published learning rate and τ.
        variables: D, the binary variables.
        powers: p of the loss :math:`|z - c|^p`, one setting each.
        targets: c, one setting each.
        initial_probability: :math:`P(z_i = 1)` the variables start at (before jitter).
        init_scale: s of the :math:`U(-s, s)` jitter of the initial logits.
        batch_size: draws per training step.
        steps, lr, eval_every, seeds: the training (Adam).
        search_trials, search_steps: the leaderboard's random search per estimator.
        lr_range, tau_range: its ranges, around the published values.
        gradient_probability: :math:`P(z_i = 1)` where the leaderboard measures gradients.
        gradient_batch, gradient_reps: B and N of that measurement.
        gradient_warmup: steps a stateful estimator adapts there before it is measured
            (``None``: the harness's default).
    """

    runs: tuple[Run, ...]
    variables: int
    powers: tuple[float, ...]
    targets: tuple[float, ...]
    initial_probability: float
    init_scale: float
    batch_size: int
    steps: int
    lr: float
    eval_every: int
    seeds: int
    search_trials: int
    search_steps: int
    lr_range: tuple[float, float]
    tau_range: tuple[float, float]
    gradient_probability: float
    gradient_batch: int
    gradient_reps: int
    gradient_warmup: int | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    poly: Protocol
    toy: Protocol


# ReinMax's poly/poly_programming.py and poly/reinmax.sh: 128 variables, c = 0.45, logits
# U(−0.01, 0.01), Adam at 1e-3, 64 draws a step, 40 epochs of 200 steps, τ = 1, seeds 0–9.
PAPER_POLY = Protocol(
    runs=(
        ("ST", "straight_through", 1, 1.0),
        ("ST-GS", "st_gumbel_softmax", 1, 1.0),
        ("GR-MC100", "gumbel_rao", 100, 1.0),
        ("GST-1.0", "gapped_straight_through", 1, 1.0),
        ("ReinMax", "reinmax", 1, 1.0),
    ),
    variables=128,
    powers=(1.5, 2.0, 3.0),
    targets=(0.45,),
    initial_probability=0.5,
    init_scale=0.01,
    batch_size=64,
    steps=8000,
    lr=1e-3,
    eval_every=200,
    seeds=10,
    search_trials=20,
    search_steps=2000,
    lr_range=(1e-4, 1e-2),
    tau_range=(0.1, 4.0),
    gradient_probability=0.5,
    gradient_batch=64,
    gradient_reps=10_000,
)

# RELAX's rebar_toy.py (duvenaud/relax): one variable, t = 0.499, logit 0, Adam at 1e-2, one
# draw a step, 5,000 steps, ten runs; ARM's §4 adds t = 0.49 (and 0.501, 0.51).
PAPER_TOY = Protocol(
    runs=(
        ("REINFORCE", "reinforce", 1, 1.0),
        ("RLOO-2", "rloo", 2, 1.0),
        ("ARM", "arm", 1, 1.0),
        ("DisARM", "disarm", 1, 1.0),
        ("REBAR", "rebar", 1, 1.0),
        ("RELAX", "relax", 1, 1.0),
    ),
    variables=1,
    powers=(2.0,),
    targets=(0.499, 0.49),
    initial_probability=0.5,
    init_scale=0.0,
    batch_size=1,
    steps=5000,
    lr=1e-2,
    eval_every=100,
    seeds=10,
    search_trials=20,
    search_steps=1000,
    lr_range=(1e-3, 1e-1),
    tau_range=(0.1, 4.0),
    gradient_probability=0.1,
    gradient_batch=1,
    gradient_reps=100_000,
)

PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        poly=dataclasses.replace(
            PAPER_POLY,
            runs=(("ST", "straight_through", 1, 1.0), ("ReinMax", "reinmax", 1, 1.0)),
            variables=16,
            powers=(3.0,),
            batch_size=8,
            steps=6,
            eval_every=3,
            seeds=2,
            search_trials=2,
            search_steps=3,
            gradient_batch=8,
            gradient_reps=64,
            gradient_warmup=10,
        ),
        toy=dataclasses.replace(
            PAPER_TOY,
            runs=(("REINFORCE", "reinforce", 1, 1.0), ("DisARM", "disarm", 1, 1.0)),
            targets=(0.499,),
            steps=6,
            eval_every=3,
            seeds=2,
            search_trials=2,
            search_steps=3,
            gradient_reps=64,
            gradient_warmup=10,
        ),
    ),
    # 2 CPU cores: the published problem sizes, a quarter of ReinMax's steps, five seeds.
    "cpu": Preset(
        poly=dataclasses.replace(
            PAPER_POLY,
            runs=(
                ("ST", "straight_through", 1, 1.0),
                ("ST-GS", "st_gumbel_softmax", 1, 1.0),
                ("GST-1.0", "gapped_straight_through", 1, 1.0),
                ("ReinMax", "reinmax", 1, 1.0),
            ),
            steps=2000,
            seeds=5,
            search_trials=6,
            search_steps=500,
            gradient_reps=2000,
        ),
        toy=dataclasses.replace(
            PAPER_TOY,
            runs=(
                ("REINFORCE", "reinforce", 1, 1.0),
                ("RLOO-2", "rloo", 2, 1.0),
                ("ARM", "arm", 1, 1.0),
                ("DisARM", "disarm", 1, 1.0),
            ),
            targets=(0.499,),
            steps=2000,
            seeds=5,
            search_trials=6,
            search_steps=500,
            gradient_reps=20_000,
        ),
    ),
    "paper": Preset(poly=PAPER_POLY, toy=PAPER_TOY),
}
