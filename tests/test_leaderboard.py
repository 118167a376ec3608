"""``gvbench leaderboard``: a study defined here joins the table as columns with no edit to
gvbench, every cell has a value ± SE or the reason it has none, the best is marked only where
resolved, claims are decided with SEs, a rerun does no work and writes the same tables, and
the page opens in a headless browser."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import subprocess
import warnings
from typing import ClassVar

import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

import gvbench.estimators as E
from gvbench import plugins
from gvbench.cli import main
from gvbench.estimators import registry
from gvbench.experiment import Experiment
from gvbench.leaderboard.column import (
    Column,
    ColumnFolder,
    DirectionClaim,
    GradientCheck,
    TrainingProtocol,
)
from gvbench.leaderboard.fill import fill
from gvbench.leaderboard.measures import entries, entry
from gvbench.leaderboard.ranking import BEST, TIED, marks
from gvbench.report.claims import FAILS, HOLDS, OPEN
from gvbench.study import Study
from gvbench.tasks.toy import Toy
from gvbench.training import RunConfig

# -- a user's study: a tiny experiment and a toy, as two columns ----------------------------


@dataclasses.dataclass(frozen=True)
class BlobConfig(RunConfig):
    batch_size: int = 16
    clusters: int = 4


class BlobModel(nn.Module):
    def __init__(self, clusters: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.assign, self.centres = nn.Linear(2, clusters), nn.Linear(clusters, 2)

    def forward(self, x, sample):
        return self.centres(sample(self.assign(x)))


class Blobs(Experiment):
    name = "blobs"
    Config = BlobConfig
    selection = "valid_error"
    higher_is_better = False

    def data(self, config):
        g = torch.Generator().manual_seed(config.seed)
        centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
        points = centres[torch.randint(4, (300,), generator=g)]
        points = points + 0.3 * torch.randn(300, 2, generator=g)
        return {"train": (points[:200],), "valid": (points[200:250],), "test": (points[250:],)}, (
            "4 blobs"
        )

    def model(self, config):
        return BlobModel(config.clusters, config.seed)

    def loss(self, output, x):
        return ((output - x) ** 2).sum(-1)

    score = loss

    def test_figures(self, model, splits, config):
        (x,) = splits["test"]
        with torch.no_grad():
            output = model(x, sample=self.evaluation_sampler(None))
        return {"test_error": float(self.score(output, x).mean())}


BLOBS = Blobs()


def blobs_task():
    """The blob model at its initialisation, on 32 validation points (no training)."""
    config = BlobConfig()
    x = BLOBS.data(config)[0]["valid"][0][:32]
    return BLOBS.module_task(BLOBS.model(config), (x,), config, reference_reps=400)


class Mine(Study):
    name = "mine"
    title = "a user's study"
    presets: ClassVar[dict] = {}

    def reproduce(self, preset, folder, run):
        return {}

    def leaderboard(self, preset):
        if preset != "tiny":
            return ()
        training = TrainingProtocol(
            train=BLOBS.train,
            base=BlobConfig(steps=12, eval_every=6, variance_every=0),
            seeds=2,
            trials=2,
            search_steps=6,
            lr=(0.01, 0.1),
            momentum=None,
            tau=(0.5, 2.0),
            selection="best_valid_error",
            selection_higher_is_better=False,
            outcome="test_error",
            outcome_higher_is_better=False,
        )
        return (
            Column(
                "mine-blobs",
                "blobs",
                "this test",
                gradients=GradientCheck(
                    blobs_task,
                    batch_size=4,
                    reps=32,
                    reference_reps=100,
                    warmup=20,
                ),
                training=training,
                claims=(DirectionClaim("rloo", "reinforce", "outcome", "this test"),),
            ),
            Column(
                "mine-toy",
                "a ternary toy",
                "this test",
                gradients=GradientCheck(
                    functools.partial(Toy, n=3, m=1),
                    batch_size=1,
                    reps=400,
                ),
                claims=(
                    DirectionClaim("rloo", "st_gumbel_softmax", "mse", "this test"),
                    DirectionClaim("st_gumbel_softmax", "reinforce", "mse", "this test"),
                    DirectionClaim("disarm", "reinforce", "variance", "this test"),
                ),
                options={"rloo": {"k": 4}},
            ),
        )


MINE = Mine()


@pytest.fixture(scope="module")
def registered():
    """``Mine`` installed beside the studies there are, as an entry point would install it."""
    installed = plugins.found(plugins.EXPERIMENTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(plugins._found, plugins.EXPERIMENTS, {**installed, "mine": MINE})
        yield


# -- what it gets ---------------------------------------------------------------------------


# The paper's toy column beside the user's two.
COMMAND = ["leaderboard", "--preset", "tiny", "--columns", "mine-blobs", "mine-toy", "toy"]


@pytest.fixture(scope="module")
def board(registered, tmp_path_factory):
    """``gvbench leaderboard --preset tiny`` end to end, on this module's study."""
    folder = tmp_path_factory.mktemp("leaderboard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sampled reference's sizing notes
        assert main([*COMMAND, "--out", str(folder), "--no-progress"]) == 0
    return folder, pd.read_csv(folder / "entries.csv", keep_default_na=False, na_values=[""])


def test_a_study_of_the_user_fills_columns_and_every_cell_says_something(board):
    folder, _ = board
    variance = pd.read_csv(folder / "variance.csv", keep_default_na=False)
    assert list(variance["estimator"]) == [
        "st_gumbel_softmax",
        "gumbel_rao",
        "reinforce",
        "rloo",
        "disarm",
    ]
    for column in ("mine-blobs", "mine-toy"):
        assert {column, f"{column}_se", f"{column}_mark", f"{column}_note"} <= set(variance)
        for value, note in zip(variance[column], variance[f"{column}_note"], strict=True):
            assert (value != "") != bool(note), (column, value, note)  # a value or a reason
    disarm = variance.set_index("estimator").loc["disarm"]
    assert disarm["mine-toy_note"].startswith("not applicable: DisARM is binary-only")
    outcome = pd.read_csv(folder / "outcome.csv").set_index("estimator")
    assert list(outcome.columns[:4]) == ["label", "unbiased", "mine-blobs", "mine-blobs_se"]
    trained = outcome.drop(index="disarm")
    assert (trained["mine-blobs"] > 0).all() and (trained["mine-blobs_se"] > 0).all()
    assert outcome.loc["disarm", "mine-blobs_note"].startswith("not applicable")
    cost = pd.read_csv(folder / "seconds_per_step.csv").set_index("estimator")
    assert (cost.drop(index="disarm")["mine-blobs"] > 0).all()
    evaluations = pd.read_csv(folder / "evaluations_per_step.csv").set_index("estimator")
    assert (
        evaluations.loc["rloo", "mine-blobs"] == 2
        and evaluations.loc["reinforce", "mine-blobs"] == 1
    )
    for name in ("mine-blobs-frontier", "mine-blobs-training", "mine-toy-frontier", "toy-frontier"):
        assert (folder / "figures" / f"{name}.png").stat().st_size > 5000
    assert not (folder / "figures" / "mine-toy-training.png").exists()  # no protocol


def test_each_claim_is_decided_with_its_se(board):
    folder, _ = board
    claims = json.loads((folder / "claims.json").read_text())
    columns = ["toy", "mine-blobs", "mine-toy", "mine-toy", "mine-toy"]
    assert [c["experiment"] for c in claims] == columns
    assert all(c["verdict"] in (HOLDS, FAILS, OPEN) for c in claims)
    # The paper's toy: GR-MCK (K = 100) below ST-GS at τ = 0.1, as Figure 1 shows.
    assert claims.pop(0)["verdict"] == HOLDS
    # ST-GS is biased on the toy (its MSE is its bias²), the score-function ones are not:
    # resolved both ways at 400 draws, even at RLOO's four evaluations per draw.
    assert [c["verdict"] for c in claims[1:3]] == [HOLDS, FAILS]
    assert all("±" in c["evidence"] and c["z"] is not None for c in claims[1:3])
    # A claim with a side that does not apply is not resolved, and says why.
    assert claims[3]["verdict"] == OPEN and "binary-only" in claims[3]["evidence"]
    # Two seeds do not resolve the outcomes: the claim says how many seeds would.
    outcome = claims[0]
    assert outcome["verdict"] == OPEN and outcome["z"] is not None
    assert "seeds per configuration" in outcome["evidence"] or "no number" in outcome["evidence"]


def test_a_rerun_does_no_work_and_writes_the_same_tables(board, capfd):
    folder, _ = board
    tables = [*folder.glob("*.csv"), folder / "claims.json"]
    before = {p.name: p.read_bytes() for p in tables}
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "columns").rglob("*") if p.is_file()}
    curves = {p: xr.load_dataset(p) for p in stamps if p.name == "curves.nc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*COMMAND, "--out", str(folder), "--no-progress"]) == 0
    after = {p.name: p.read_bytes() for p in tables}
    assert after == before
    touched = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    # No sweep cell, checkpoint or timing is rewritten; a finished run trains no step, and its
    # curves, written again as the experiment finishes it, hold the same numbers.
    assert {p.name for p in touched} <= {"curves.nc"}
    assert all(xr.load_dataset(p).equals(before) for p, before in curves.items())
    assert "nothing to compute" in capfd.readouterr().err


def test_the_page_marks_the_resolved_best_and_shows_every_table(board):
    folder, _ = board
    page = (folder / "index.html").read_text()
    assert "★" in page or "≈" in page
    assert "only where it is resolved" in page and 'id="claims"' in page
    for table in folder.glob("*.csv"):
        if table.stem not in ("claims", "entries"):
            assert f"{table.name}" in page
    assert page.count("<img") == 4 and "<script" not in page


def test_a_gradient_check_caches_its_checkpoint_in_the_column_folder(tmp_path):
    given = []

    def task(**options):
        given.append(options)
        return Toy()

    def plain_task():  # a user's task that trains nothing takes no folder
        given.append("plain")
        return Toy()

    folder = ColumnFolder.under(tmp_path, "c")
    GradientCheck(task, batch_size=1, reps=2).make(folder)
    GradientCheck(plain_task, batch_size=1, reps=2).make(folder)
    made = GradientCheck(functools.partial(Toy, n=4, m=2), batch_size=1, reps=2).make(folder)
    assert given == [{"checkpoint_dir": str(tmp_path / "columns" / "c" / "checkpoints")}, "plain"]
    assert isinstance(made, Toy) and not (tmp_path / "columns").exists()


def test_best_is_marked_only_where_resolved():
    rows = [
        entry("a", "reinforce", "mse", 1.0, 0.01, 100, "draws"),
        entry("a", "rloo", "mse", 2.0, 0.01, 100, "draws"),
        entry("a", "gumbel_rao", "mse", 3.0, 0.01, 100, "draws"),
        entry("b", "reinforce", "mse", 1.0, 0.2, 100, "draws"),
        entry("b", "rloo", "mse", 1.3, 0.2, 100, "draws"),
        entry("b", "gumbel_rao", "mse", 9.0, 0.2, 100, "draws"),
    ]
    found = marks(entries(rows), {}).tolist()
    assert found == [BEST, "", "", TIED, TIED, ""]


def test_a_study_without_the_preset_is_said_and_bad_names_are_one_line(registered):
    from gvbench.leaderboard.rows import columns

    found = columns("cpu")
    assert "mine: no column at the 'cpu' leaderboard preset" in found.without
    with pytest.raises(SystemExit, match="gvbench: --columns: no column nope at preset 'tiny'"):
        main(["leaderboard", "--preset", "tiny", "--columns", "nope"])
    with pytest.raises(SystemExit, match="gvbench: unknown estimator 'nope'"):
        main([*COMMAND[:-1], "--estimators", "nope"])


def test_an_executor_gives_the_in_process_numbers(board, tmp_path):
    import concurrent.futures as cf

    _, first = board
    with cf.ThreadPoolExecutor(2) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fill("tiny", tmp_path, columns=["toy"], executor=pool, progress=False)
    second = pd.read_csv(tmp_path / "entries.csv", keep_default_na=False, na_values=[""])

    def untimed(table: pd.DataFrame) -> pd.DataFrame:
        timed = table["measure"].str.contains("seconds|time_normalized")
        return table[~timed & (table["column"] == "toy")].reset_index(drop=True)

    pd.testing.assert_frame_equal(untimed(first), untimed(second))


def _browser() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.mark.skipif(_browser() is None, reason="no Chromium installed (apt install chromium)")
def test_the_page_opens_in_a_headless_browser(board, tmp_path):
    folder, _ = board
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = (folder / "index.html").as_uri()
    dom = subprocess.run(
        [_browser(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="claims"' in dom.stdout and dom.stdout.count("<img") == 4
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]


def st_gumbel_softmax_half(logits, tau=1.0, *, dim=-1, generator=None):
    """ST-GS at half the temperature: a user's estimator."""
    return E.st_gumbel_softmax(logits, tau / 2, dim=dim, generator=generator)


def test_a_users_estimator_is_a_row(registered, monkeypatch, tmp_path):
    # Registered in a copy of the registry, as a plugin's import registers it, for this test.
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    E.register(unbiased=False, label="ST-GS½")(st_gumbel_softmax_half)
    rows = ["st_gumbel_softmax_half", "reinforce", "disarm"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fill("tiny", tmp_path, estimators=rows, columns=["mine-toy"], progress=False)
    variance = pd.read_csv(tmp_path / "variance.csv", keep_default_na=False).set_index("estimator")
    assert list(variance.index) == rows
    assert variance.loc["st_gumbel_softmax_half", "label"] == "ST-GS½"
    assert float(variance.loc["st_gumbel_softmax_half", "mine-toy"]) > 0
    assert variance.loc["disarm", "mine-toy_note"].startswith("not applicable")


def test_the_papers_studies_give_columns_at_each_preset():
    from gvbench.study import registered

    studies = registered()
    for preset in ("tiny", "cpu", "paper"):
        toy = studies["toy"].leaderboard(preset)
        assert [c.name for c in toy] == ["toy"] and toy[0].training is None
        for name in ("listops", "vae"):
            (column,) = studies[name].leaderboard(preset)
            assert column.gradients is not None and column.training is not None
            # chosen on validation, reported on test
            assert column.training.selection == f"best_{studies[name].selection}"
            assert column.training.outcome.startswith("test_")
    assert all(studies[name].leaderboard("nope") == () for name in ("toy", "listops", "vae"))


def test_an_estimator_over_the_preset_s_evaluations_is_measured_not_trained(
    registered, monkeypatch, tmp_path
):
    from gvbench.leaderboard import presets

    capped = dataclasses.replace(presets.PRESETS["tiny"], training_evaluations=1)
    monkeypatch.setitem(presets.PRESETS, "tiny", capped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fill(
            "tiny", tmp_path, estimators=["reinforce", "rloo"], columns=["mine-blobs"],
            progress=False,
        )  # fmt: skip
    table = pd.read_csv(tmp_path / "entries.csv", keep_default_na=False, na_values=[""])
    rloo = table[table["estimator"] == "rloo"].set_index("measure")
    assert rloo.loc["evaluations", "value"] == 2 and rloo.loc["variance", "value"] > 0
    note = "not trained at this preset: 2 evaluations a step, over its budget of 1"
    assert rloo.loc["outcome", "note"] == note
    assert math.isnan(rloo.loc["outcome", "value"])
    reinforce = table[table["estimator"] == "reinforce"].set_index("measure")
    assert pd.isna(reinforce.loc["outcome", "note"])  # trained: no note
    assert math.isfinite(reinforce.loc["outcome", "value"])
    trained = tmp_path / "columns" / "mine-blobs"
    assert not [p for p in trained.rglob("*") if p.is_dir() and "rloo" in p.name]
    assert [p for p in (trained / "runs").iterdir() if "reinforce" in p.name]
