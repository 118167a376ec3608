"""The README as a newcomer reads it: every Python example runs as written (each in a fresh
interpreter), and every shell command runs, in order, in one fresh folder
(``tests/markdown_examples.py`` says how; ``tests/test_docs.py`` does the same for docs/)."""

from __future__ import annotations

import re

import pytest

from tests.markdown_examples import README, blocks, run_in_order, run_python

EXAMPLES = blocks(README, "python")


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path):
    result = run_python(EXAMPLES[index], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")


def test_readme_is_a_guide_not_a_notebook():
    """The README stays short; the rest is in docs/, and every page it links to is there."""
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / target).is_file(), target


@pytest.mark.slow
def test_the_readme_runs_in_order_in_a_fresh_folder(tmp_path):
    ran = run_in_order(README, tmp_path)
    assert ran[0][0] == "demo"
    assert len(ran) >= 4
    assert (tmp_path / "results" / "toy.nc").exists()  # make demo's file, untouched after
