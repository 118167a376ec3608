"""ListOps' column of ``gvbench leaderboard`` (paper §5.2).

Gradient quality at the checkpoint the study's variance sweep uses (the model briefly trained
with ST-GS by :meth:`~gvbench.experiment.Experiment.task`, cached in the leaderboard's column
folder; B = L); training at the study's preset sizes, each estimator's lr and τ from a random
search of the same size (the paper's τ values bound the τ range; the lr range is ``medium``'s,
where training does not collapse), selected on validation accuracy; the outcome is the test
accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from gvbench.leaderboard.column import Column, DirectionClaim, GradientCheck, TrainingProtocol
from gvbench.listops.presets import PRESETS

if TYPE_CHECKING:
    from gvbench.listops.experiment import ListOps


@dataclasses.dataclass(frozen=True)
class Board:
    """A leaderboard preset: the study's preset it takes its sizes from, and its search (lr
    log-uniform over ``lr``; ``None``: a quarter to four times the preset's lr)."""

    preset: str
    trials: int
    search_steps: int
    lr: tuple[float, float] | None = None


# At momentum 0.9 the presets' lr 0.02 collapses training after 2,000–5,000 steps
# (docs/guide/listops.md), so the trained presets search medium's range, below it.
LEADERBOARD_PRESETS = {
    "tiny": Board("tiny", trials=2, search_steps=10),
    "cpu": Board("small", trials=6, search_steps=500, lr=PRESETS["medium"].lr_range),
    "paper": Board("paper", trials=20, search_steps=10_000, lr=PRESETS["medium"].lr_range),
}
SOURCE = "Paulus et al. 2021 (Gumbel-Rao), §5.2"
CLAIMS = (
    DirectionClaim(
        "gumbel_rao",
        "st_gumbel_softmax",
        "variance",
        f"{SOURCE}: GR-MCK's gradient variance below ST-GS's",
    ),
    DirectionClaim(
        "gumbel_rao",
        "st_gumbel_softmax",
        "outcome",
        f"{SOURCE}: GR-MCK's test accuracy above ST-GS's (there at each τ; here each "
        "at its tuned τ)",
    ),
)


def listops_columns(experiment: ListOps, preset: str) -> tuple[Column, ...]:
    """ListOps' column at leaderboard preset ``preset`` (none where it has no such preset)."""
    if preset not in LEADERBOARD_PRESETS:
        return ()
    board = LEADERBOARD_PRESETS[preset]
    sizes = PRESETS[board.preset]
    length = sizes.max_lengths[0]
    task = functools.partial(
        experiment.task,
        max_length=length,
        d_hidden=sizes.d_hidden,
        train_steps=max(10, sizes.steps // 5),
        seed=0,
    )
    base = experiment.Config(
        estimator="st_gumbel_softmax",
        max_length=length,
        d_hidden=sizes.d_hidden,
        lr=sizes.lr,
        steps=sizes.steps,
        sizes=sizes.sizes,
        eval_every=sizes.eval_every,
        variance_every=0,
    )
    training = TrainingProtocol.tuned_on_validation(
        experiment,
        base,
        seeds=sizes.seeds,
        trials=board.trials,
        search_steps=board.search_steps,
        lr=board.lr or (sizes.lr / 4, sizes.lr * 4),
        tau=(min(sizes.taus), max(sizes.taus)),
        outcome="test_accuracy",
    )
    return (
        Column(
            name=f"listops-L{length}",
            title=f"ListOps, L = {length}",
            protocol=f"{SOURCE}: the Gumbel Tree-LSTM (Choi et al. 2018) on generated ListOps",
            gradients=GradientCheck(
                task=task,
                batch_size=length,
                reps=sizes.variance_reps,
                reference_reps=sizes.reference_reps,
            ),
            training=training,
            claims=CLAIMS,
            options={"gumbel_rao": {"k": 10}},
        ),
    )
