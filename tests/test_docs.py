"""The documentation site under docs/: it builds with warnings as errors (a broken reference,
a docstring autodoc cannot read, a page in no table of contents all fail), and every code
block of its pages runs as the README's do (``tests/markdown_examples.py``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.markdown_examples import (
    DOCS,
    PAGES,
    blocks,
    gvbench_steps,
    name,
    run_in_order,
    run_python,
)

EXAMPLES = [(page, code) for page in PAGES for code in blocks(page, "python")]
IN_ORDER = [page for page in PAGES if gvbench_steps(page)]
BUILDERS = ("sphinx", "myst_parser", "pydata_sphinx_theme")


@pytest.mark.skipif(
    not all(importlib.util.find_spec(module) for module in BUILDERS),
    reason="the docs extra is not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_without_warnings(tmp_path):
    sphinx = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    build = subprocess.run(
        [*sphinx, "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    for page in PAGES:
        html = tmp_path / "html" / page.relative_to(DOCS).with_suffix(".html")
        assert html.is_file(), html


def test_every_page_with_commands_or_examples_is_found():
    assert len(EXAMPLES) >= 3 and len(IN_ORDER) >= 3


@pytest.mark.parametrize(
    "page, code", EXAMPLES, ids=[f"{name(p)}-{i}" for i, (p, _) in enumerate(EXAMPLES)]
)
def test_docs_example_runs(page, code, tmp_path):
    result = run_python(code, tmp_path)
    assert result.returncode == 0, (name(page), result.stderr[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    # A group of its own per page: under pytest-xdist the pages spread over the workers.
    [pytest.param(page, marks=pytest.mark.xdist_group(name(page))) for page in IN_ORDER],
    ids=map(name, IN_ORDER),
)
def test_a_page_runs_in_order_in_a_fresh_folder(page, tmp_path):
    assert run_in_order(page, tmp_path)
