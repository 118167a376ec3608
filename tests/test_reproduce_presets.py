"""A reproduction at a preset runs every installed study that has it; one that has not is
left out in one line, unless it is named."""

from __future__ import annotations

import pytest

from gvbench import reproduce as reproduction
from gvbench import study
from gvbench.cli import main
from gvbench.cli import reproduce as cli_reproduce


class Sized(study.Study):
    title = "a study with presets"

    def __init__(self, name: str, presets: tuple[str, ...]) -> None:
        self.name = name
        self.presets = dict.fromkeys(presets, None)

    def reproduce(self, preset, folder, run):
        raise AssertionError("not run here")


@pytest.fixture
def installed(monkeypatch):
    studies = {"paper": Sized("paper", ("tiny", "small")), "field": Sized("field", ("tiny", "cpu"))}
    monkeypatch.setattr(study, "registered", lambda: studies)
    return studies


def test_a_study_without_the_preset_is_left_out_in_one_line(installed, capsys):
    chosen = reproduction.select("small")
    assert [each.name for each in chosen.studies] == ["paper"]
    assert chosen.left_out == ("field: no small preset (its presets: tiny, cpu); not run",)
    assert capsys.readouterr().out == ""  # the library says it; the command prints it
    every = reproduction.select("tiny")
    assert [each.name for each in every.studies] == ["field", "paper"] and not every.left_out


def test_the_command_prints_the_studies_it_leaves_out(installed, monkeypatch, tmp_path, capsys):
    ran = []

    def reproduce(preset, out_dir, executor, *, experiments, **options):
        ran.append(experiments)
        (tmp_path / "claims.json").write_text("[]")
        return tmp_path / "index.html"

    monkeypatch.setattr(cli_reproduce, "reproduce", reproduce)
    assert main(["reproduce", "--preset", "small", "--workers", "1", "--out", str(tmp_path)]) == 0
    assert ran == [("paper",)]
    assert capsys.readouterr().out.splitlines() == [
        "field: no small preset (its presets: tiny, cpu); not run",
        f"wrote {tmp_path / 'index.html'} (figures/, tables/, claims.json beside it)",
    ]


def test_a_named_study_without_the_preset_is_refused(installed):
    with pytest.raises(KeyError, match="unknown field preset 'small'; available: tiny, cpu"):
        reproduction.select("small", ["field"])


def test_a_preset_no_study_has_is_refused(installed):
    with pytest.raises(ValueError, match="no installed study has a medium preset"):
        reproduction.select("medium")
