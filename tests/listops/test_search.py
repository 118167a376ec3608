"""ListOps' random search of the learning rate: the same trials for every estimator and τ,
chosen on validation accuracy (never on test), and the runs trained at the chosen rate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from gvbench.listops import experiment as listops
from gvbench.listops.presets import PRESETS
from gvbench.study import PresetRun

SEARCHED = dataclasses.replace(
    PRESETS["tiny"], search_trials=3, search_steps=10, lr_range=(1e-3, 0.1)
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listops-search")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(listops.PRESETS, "searched", SEARCHED)
        return listops.LISTOPS.run_preset("searched", folder, PresetRun(progress=False)), folder


def test_the_search_chooses_each_run_s_lr_on_validation(summary):
    ds, folder = summary
    assert ds.sizes["trial"] == SEARCHED.search_trials  # the same for every estimator and τ
    for run in ds["run"].values:
        for tau in ds["tau"].values:
            at = {"run": run, "tau": tau, "max_length": SEARCHED.max_lengths[0]}
            scores = ds["search_valid_accuracy"].sel(at).values
            rates = ds["search_lr"].sel(at).values
            # the first trial of the highest validation accuracy (argmax's tie rule)
            assert float(ds["tuned_lr"].sel(at)) == rates[int(np.argmax(scores))]
            assert np.all((rates >= 1e-3) & (rates <= 0.1))
    trials = sorted((folder / "search").rglob("curves.nc"))
    assert len(trials) == SEARCHED.search_trials * ds.sizes["run"] * ds.sizes["tau"]
    for path in trials:
        assert json.loads(xr.load_dataset(path).attrs["config"])["steps"] == SEARCHED.search_steps


def test_the_search_selects_on_validation_never_on_test(monkeypatch, tmp_path):
    # Trials record test figures too (every finished run does): the choice must not read them.
    asked = {}

    def searches(train, bases, trials, **options):
        asked.update(options, trials=trials, bases=len(bases))
        raise StopIteration  # what it was asked is all this test needs

    monkeypatch.setattr(listops, "random_searches", searches)
    with pytest.raises(StopIteration):
        listops.LISTOPS.tune(SEARCHED, tmp_path)
    assert asked["selection"] == "best_valid_accuracy" and asked["higher_is_better"] is True
    assert asked["trials"] == SEARCHED.search_trials and asked["momentum"] is None
    assert asked["bases"] == len(SEARCHED.runs) * len(SEARCHED.taus) * len(SEARCHED.max_lengths)


def test_every_run_trains_at_its_chosen_lr(summary):
    ds, folder = summary
    for path in sorted((folder / "runs").rglob("curves.nc")):
        config = json.loads(xr.load_dataset(path).attrs["config"])
        label = next(
            label for label, estimator, _ in SEARCHED.runs if estimator == config["estimator"]
        )
        at = {"run": label, "tau": config["tau"], "max_length": config["max_length"]}
        assert config["lr"] == float(ds["tuned_lr"].sel(at))


def test_a_preset_without_a_search_trains_at_its_lr():
    configs = listops.training_configs(PRESETS["small"], [0])
    assert {config.lr for config in configs.values()} == {PRESETS["small"].lr}
    assert listops.LISTOPS.tune(PRESETS["small"], None) is None


def test_the_report_shows_the_chosen_rates_and_keeps_every_trial(summary, tmp_path):
    from gvbench.listops.report import listops_section
    from gvbench.report.builder import Report

    ds, _ = summary
    report = Report(tmp_path)
    listops_section(report, ds)
    ((_, blocks),) = report.sections
    assert any("chosen by random search" in block for block in blocks)
    trials = (tmp_path / "tables" / "listops-search.csv").read_text().splitlines()
    assert trials[0].split(",")[:4] == ["run", "tau", "max_length", "trial"]
    assert len(trials) == 1 + ds["search_lr"].size  # every trial, with its lr and its score


def test_a_final_search_ranks_each_trial_by_its_last_validation_accuracy(tmp_path):
    # "final": a rate whose training collapses within its trial loses, however high it peaked.
    preset = dataclasses.replace(SEARCHED, search_selection="final")
    ds = listops.LISTOPS.tune(preset, tmp_path, progress=False)
    at = {"max_length": preset.max_lengths[0]}
    trials = sorted((tmp_path / "search").rglob("curves.nc"))
    last = {}
    for path in trials:
        curves = xr.load_dataset(path)
        config = json.loads(curves.attrs["config"])
        # the run's final figure is its curve's last evaluation, at its last step
        assert int(curves["step"][-1]) == config["steps"]
        assert curves.attrs["final_valid_accuracy"] == float(curves["valid_accuracy"][-1])
        last[(config["estimator"], config["tau"], config["lr"])] = curves.attrs[
            "final_valid_accuracy"
        ]
    for label, estimator, _ in preset.runs:
        for tau in preset.taus:
            cell = {**at, "run": label, "tau": tau}
            rates = ds["search_lr"].sel(cell).values
            scores = ds["search_valid_accuracy"].sel(cell).values
            assert list(scores) == [last[(estimator, tau, rate)] for rate in rates]
            assert float(ds["tuned_lr"].sel(cell)) == rates[int(np.argmax(scores))]
    assert ds["search_valid_accuracy"].attrs["long_name"].startswith("final validation")


def test_a_search_ranked_by_neither_best_nor_final_is_refused(tmp_path):
    preset = dataclasses.replace(SEARCHED, search_selection="mean")
    with pytest.raises(ValueError, match="search_selection must be 'best' or 'final'"):
        listops.LISTOPS.tune(preset, tmp_path, progress=False)
    assert not (tmp_path / "search").exists()  # refused before any trial trained


@pytest.mark.parametrize("name", ["medium", "paper"])
def test_the_trained_presets_search_each_estimator_s_lr_ranked_at_the_end(name):
    preset = PRESETS[name]
    assert preset.search_trials and preset.search_steps and preset.lr_range
    assert preset.search_selection == "final" and preset.search_steps <= preset.steps
    assert preset.lr_range[1] < PRESETS["small"].lr  # below the rate that collapses


@pytest.mark.parametrize("board", ["cpu", "paper"])
def test_the_leaderboard_searches_listops_where_training_does_not_collapse(board):
    (column,) = listops.LISTOPS.leaderboard(board)
    assert column.training.lr == PRESETS["medium"].lr_range
    assert column.training.lr[1] < PRESETS["small"].lr  # the rate that collapses at momentum 0.9
