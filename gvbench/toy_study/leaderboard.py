"""The toy study's column of ``gvbench leaderboard``: gradient quality on the paper's toy.

The paper's problem (Paulus et al. 2021, §5.1: one ternary variable, E_D[(D − c)ᵀ Q (D − c)],
its exact gradient by enumeration) at τ = 0.1, where the paper's Figure 1 shows Gumbel-Rao's
advantage; GR-MCK at the largest K of the study's preset. It trains nothing.
"""

from __future__ import annotations

from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck
from gvbench.tasks.toy import Toy
from gvbench.toy_study.presets import PRESETS

# Leaderboard preset → the study's preset whose draws it takes.
LEADERBOARD_PRESETS = {"tiny": "tiny", "cpu": "small", "paper": "paper"}
TAU = 0.1
CLAIMS = (
    DirectionClaim(
        better="gumbel_rao",
        worse="st_gumbel_softmax",
        measure="variance",
        source="Paulus et al. 2021 (Gumbel-Rao), §5.1 and Figure 1: GR-MCK's variance below "
        "ST-GS's on the toy, one evaluation each",
    ),
)


def toy_columns(preset: str) -> tuple[Column, ...]:
    """The toy's column at leaderboard preset ``preset`` (none where it has no such preset)."""
    if preset not in LEADERBOARD_PRESETS:
        return ()
    toy = PRESETS[LEADERBOARD_PRESETS[preset]]
    return (
        Column(
            name="toy",
            title="the paper's toy (one ternary variable)",
            protocol="Paulus et al. 2021 (Gumbel-Rao), §5.1: E[(D − c)ᵀ Q (D − c)], exact "
            "gradient by enumeration",
            gradients=GradientCheck(task=Toy, batch_size=1, reps=toy.reps, tau=TAU),
            claims=CLAIMS,
            options={"gumbel_rao": {"k": max(toy.k)}},
        ),
    )
