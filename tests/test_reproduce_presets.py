"""A reproduction at a preset runs every installed study that has it; one that has not is
left out in one line, unless it is named."""

from __future__ import annotations

import pytest

from gvbench import reproduce as reproduction
from gvbench import study


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
    chosen = reproduction._chosen("small", None)
    assert [each.name for each in chosen] == ["paper"]
    assert capsys.readouterr().out == "field: no small preset (its presets: tiny, cpu); not run\n"
    assert [each.name for each in reproduction._chosen("tiny", None)] == ["field", "paper"]


def test_a_named_study_without_the_preset_is_refused(installed):
    with pytest.raises(KeyError, match="unknown field preset 'small'; available: tiny, cpu"):
        reproduction._chosen("small", ["field"])


def test_a_preset_no_study_has_is_refused(installed):
    with pytest.raises(ValueError, match="no installed study has a medium preset"):
        reproduction._chosen("medium", None)
