"""The polynomial experiment's columns of ``gvbench leaderboard``: one per p of ReinMax's
polynomial programming and one per target of the quadratic toy.

Gradient quality is measured where a protocol says (:class:`~.presets.Protocol`,
``gradient_probability``): the polynomial at its initial θ (seed 0: logits
:math:`U(-0.01, 0.01)`, every :math:`P(z_i = 1)` within 0.005 of ½), where ReinMax's training
starts; the toy at :math:`\\sigma(\\phi) = 0.1`, where the variance figure of ARMS starts
(``alekdimi/arms``, ``toy_problem.py``, ``p_init = 0.1``), since at ½ one variable's DisARM is
exact and ST unbiased on a quadratic. Both against the exact gradient. The training outcome is
the exact expected loss at a run's last step (where ReinMax's curves end; noise-free, so no
selection is needed), lower is better; each estimator's Adam learning rate and τ come from a
random search around the published values (ReinMax 1e-3, RELAX 1e-2), its trials ranked by
their lowest loss.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gvbench.experiments.poly.config import protocol_config
from gvbench.experiments.poly.presets import Preset, Protocol
from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol

if TYPE_CHECKING:
    from gvbench.experiments.poly.experiment import Polynomial

REINMAX = (
    DirectionClaim(
        better="reinmax",
        worse="straight_through",
        measure="outcome",
        source="Liu et al. 2023 (ReinMax), §6, polynomial programming: ReinMax's loss below "
        "ST's at p = 1.5, 2 and 3 (mean of 10 seeds)",
    ),
)
ARMS_FIGURE = "Dimitriev & Zhou 2021 (ARMS), toy figure, 2 samples (alekdimi/arms, toy_problem.py)"
TOY = (
    DirectionClaim(
        better="disarm",
        worse="arm",
        measure="variance",
        source="Dong, Mnih & Tucker 2020 (DisARM), §3: its variance never exceeds ARM's; "
        f"on (b − 0.49)²: {ARMS_FIGURE}",
    ),
    DirectionClaim(better="disarm", worse="rloo", measure="variance", source=ARMS_FIGURE),
    DirectionClaim(
        better="arm",
        worse="reinforce",
        measure="variance",
        # The row is REINFORCE with its running-mean baseline, which on a loss within
        # 0.249–0.251 removes nearly all of its variance; without one it is 5.7e-3 at
        # σ(φ) = 0.1 (closed form), 10⁴ times ARM's. The verdict is this row's.
        source="Yin & Zhou 2019 (ARM), §4, Figure 1(a) and Appendix Figure 3: REINFORCE's "
        "gradients vary far more than ARM's on (z − p0)² (here REINFORCE with its running-mean "
        "baseline)",
    ),
)


def columns(experiment: Polynomial, preset: Preset) -> tuple[Column, ...]:
    """The preset's columns: ``poly-p1.5``, … and ``quadratic-toy-t0.499``, …"""
    poly, toy = preset.poly, preset.toy
    target = poly.targets[0]
    return (
        *(
            _column(
                experiment,
                poly,
                f"poly-p{power:g}",
                f"polynomial programming, p = {power:g}",
                "Liu et al. 2023 (ReinMax) §6; LiyuanLucasLiu/ReinMax poly/poly_programming.py",
                power=power,
                target=target,
                claims=REINMAX,
            )
            for power in poly.powers
        ),
        *(
            _column(
                experiment,
                toy,
                f"quadratic-toy-t{target:g}",
                f"quadratic toy (b − {target:g})²",
                "Grathwohl et al. 2018 (RELAX), duvenaud/relax rebar_toy.py; Yin & Zhou 2019 "
                "(ARM) §4",
                power=toy.powers[0],
                target=target,
                claims=TOY,
                options={"rloo": {"k": 2}},
            )
            for target in toy.targets
        ),
    )


def _column(
    experiment: Polynomial,
    protocol: Protocol,
    name: str,
    title: str,
    source: str,
    *,
    power: float,
    target: float,
    claims: tuple[DirectionClaim, ...],
    options: dict[str, dict[str, int]] | None = None,
) -> Column:
    task = functools.partial(
        experiment.task,
        variables=protocol.variables,
        power=power,
        target=target,
        initial_probability=protocol.gradient_probability,
        init_scale=protocol.init_scale,
        seed=0,
        batch_pool=protocol.gradient_batch,
    )
    base = protocol_config(protocol, protocol.runs[0][1], power=power, target=target, seed=0)
    return Column(
        name=name,
        title=title,
        protocol=source,
        gradients=GradientCheck(
            task=task,
            batch_size=protocol.gradient_batch,
            reps=protocol.gradient_reps,
            tau=1.0,
            warmup=protocol.gradient_warmup,
        ),
        training=TrainingProtocol.tuned_on_validation(
            experiment,
            base,
            seeds=protocol.seeds,
            trials=protocol.search_trials,
            search_steps=protocol.search_steps,
            lr=protocol.lr_range,
            tau=protocol.tau_range,
            outcome=f"final_{experiment.selection}",
        ),
        claims=claims,
        options=options or {},
    )
