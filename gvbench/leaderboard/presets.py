"""The leaderboard's presets: a name every study reads its columns' sizes at
(:meth:`gvbench.study.Study.leaderboard`), and the rows the leaderboard lists by default."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LeaderboardPreset:
    """Attributes:
    estimators: the rows where none are named (``None``: the registry's default set for
        each column's variable).
    warmup: the most steps a stateful estimator adapts before a gradient check measures it
        (``None``: the column's own, else the harness's default).
    training_evaluations: the most objective evaluations per step (as the column's gradient
        check counts them) of an estimator that is trained at this preset; one over it is
        measured but not trained, its cells saying so (``None``: every estimator trains).
    """

    estimators: tuple[str, ...] | None
    warmup: int | None = None
    training_evaluations: int | None = None


PRESETS = {
    # A pipeline check: a few estimators of each kind (a score function, its leave-one-out
    # form, two pathwise ones, a binary-only one that is "not applicable" on categorical tasks).
    # A baseline adapted for ten steps checks the path, as the rest of tiny does.
    "tiny": LeaderboardPreset(
        ("st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo", "disarm"), warmup=10
    ),
    # Two CPU cores: every estimator a column's claims name (the field's stated directions,
    # gvbench.leaderboard.claims) and GS, the relaxed baseline of the Gumbel-Rao paper;
    # --estimators adds any other, the paper preset lists every registered one.
    "cpu": LeaderboardPreset(
        (
            "straight_through",
            "st_gumbel_softmax",
            "gumbel_softmax",
            "gumbel_rao",
            "reinmax",
            "reinforce",
            "rloo",
            "indecater",
            "indecater_d",
            "arsm",
            "categorical_disarm",
            "arm",
            "disarm",
            "double_cv",
            "rodeo",
        ),
        # IndeCateR's hundreds of evaluations a step on 200 binary latents (one per latent
        # and value) would take most of the preset's time: trained at paper only.
        training_evaluations=64,
    ),
    "paper": LeaderboardPreset(None),
}
