"""Each notebook's code cells run, in order, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_every_experiment_has_a_notebook():
    assert {p.name for p in NOTEBOOKS} >= {"toy_analysis.ipynb", "listops.ipynb", "vae.ipynb"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path, tiny_report):
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # From a scratch folder, reading the report of a tiny reproduction.
    result = subprocess.run(
        [sys.executable, "-c", "import matplotlib; matplotlib.use('Agg')\n" + code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GVBENCH_REPORT": str(tiny_report)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
