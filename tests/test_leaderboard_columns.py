"""Every installed study's columns go through ``gvbench leaderboard --preset tiny`` end to
end (one estimator each, so that the suite stays short): the gradient check measures, the
training protocol searches, trains and reports its outcome, and the claims are decided."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from gvbench import study
from gvbench.leaderboard.fill import fill

# REINFORCE applies to every kind of task the field's columns hold (binary, categorical,
# sequential choices), so each column has one row with numbers.
ROW = "reinforce"
COLUMNS = [
    column.name for each in study.registered().values() for column in each.leaderboard("tiny")
]


def test_the_installed_studies_give_the_field_s_columns():
    assert {"toy", "poly-p3", "binary_vae_linear", "mnist_addition"} <= set(COLUMNS)
    assert len(COLUMNS) == len(set(COLUMNS)), COLUMNS  # a column name is a folder


@pytest.mark.parametrize("name", COLUMNS)
def test_a_column_fills_at_tiny(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an experiment's own checkpoint folder is under ./results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sampled reference's sizing notes
        board = fill("tiny", tmp_path / "board", estimators=[ROW], columns=[name], progress=False)
    assert board.page.is_file()
    # Everything, a brief checkpoint included, is under the leaderboard's folder.
    assert [path.name for path in tmp_path.iterdir()] == ["board"]
    rows = board.entries[(board.entries.estimator == ROW) & (board.entries.column == name)]
    measured = rows.set_index("measure")
    column = next(
        c
        for each in study.registered().values()
        for c in each.leaderboard("tiny")
        if c.name == name
    )
    if column.gradients is not None:
        variance = measured.loc["variance"]
        assert math.isfinite(variance.value) and variance.value >= 0 and variance.se > 0, variance
        assert not variance.note, variance
    if column.training is not None:
        outcome = measured.loc["outcome"]
        assert math.isfinite(outcome.value) and not outcome.note, outcome
        assert outcome.n == column.training.seeds and outcome.over == "seeds", outcome
        assert measured.loc["seconds_per_step"].value > 0
        assert (board.page.parent / "figures" / f"{name}-training.png").is_file()


def test_an_outcome_with_diverged_seeds_is_neither_ranked_nor_claimed():
    from gvbench.leaderboard.claims import decide
    from gvbench.leaderboard.column import Column, DirectionClaim
    from gvbench.leaderboard.measures import entries, entry
    from gvbench.leaderboard.ranking import marks

    def outcome(name, value, note=""):
        return entry("c", name, "outcome", value, 0.01, 3, "seeds", note)

    # RLOO's two surviving seeds look far better; one of its three diverged.
    table = entries(
        [
            outcome("rloo", 0.10, "diverged: 1 of 3 seeds"),
            outcome("reinforce", 0.50),
            outcome("disarm", 0.90),
        ]
    )
    marked = marks(table, {"c": False}).tolist()
    assert marked == ["", "best", ""]  # REINFORCE is the best of the complete entries
    column = Column("c", "c", "test", claims=(DirectionClaim("rloo", "reinforce", "outcome", "t"),))
    (claim,) = decide([column], table)
    assert "diverged: 1 of 3 seeds" in claim.evidence and not claim.z == claim.z  # not decided


def test_an_estimator_whose_trials_all_diverge_leaves_the_others_searched(tmp_path):
    import xarray as xr

    from gvbench.leaderboard.column import TrainingProtocol
    from gvbench.leaderboard.training import _searches
    from gvbench.training import RunConfig, TrainingDiverged

    def train(configs, out_dir=None, progress=False, final_checkpoints=None):
        # REINFORCE diverges at every learning rate; RLOO scores its lr (the higher the better).
        return [
            TrainingDiverged("loss is not finite")
            if config.estimator == "reinforce"
            else xr.Dataset(attrs={"valid": config.lr})
            for config in configs
        ]

    bases = {
        name: RunConfig(estimator=name, k=2 if name == "rloo" else 1)
        for name in ("reinforce", "rloo")
    }
    protocol = TrainingProtocol(
        train=train,
        base=bases["rloo"],
        seeds=2,
        trials=3,
        search_steps=5,
        lr=(1e-3, 1e-1),
        momentum=None,
        tau=None,
        selection="valid",
        selection_higher_is_better=True,
        outcome="test",
        outcome_higher_is_better=True,
    )
    found = _searches(protocol, bases, tmp_path, 0, None, False)
    assert found["reinforce"].startswith("diverged: all 3 random-search trials of reinforce")
    rloo = found["rloo"]
    assert rloo.sizes["trial"] == 3
    assert rloo.attrs["best_trial"] == int(np.argmax(rloo["lr"].values))


def test_the_cpu_rows_hold_every_estimator_a_cpu_claim_names():
    # The cpu preset lists a row set, not the registry: a claim it could not decide would be
    # a claim left silently "not applicable".
    from gvbench.leaderboard.presets import PRESETS
    from gvbench.leaderboard.rows import columns

    named = {
        name
        for column in columns("cpu").columns
        for claim in column.claims
        for name in (claim.better, claim.worse)
    }
    assert named and named <= set(PRESETS["cpu"].estimators)
