"""A third-party estimator, installed as a package declares it (an entry point of group
``gvbench.estimators``), is a row of ``gvbench leaderboard`` with no edit to gvbench: the
command runs in a fresh interpreter, as a user runs it, and finds the package on its path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

# A user's module: one estimator with gvbench's common signature, registered at import.
ESTIMATOR = '''
import torch

from gvbench.estimators import categorical_index, register


@register(unbiased=False, label="ST (third party)")
def third_party_straight_through(logits, *, dim=-1, generator=None):
    """Straight-through: forward a one-hot draw, backward the softmax's Jacobian."""
    index = categorical_index(logits, dim, generator).unsqueeze(dim)
    hard = torch.zeros_like(logits).scatter(dim, index, 1.0)
    soft = torch.softmax(logits, dim)
    return hard + soft - soft.detach()
'''


def install(site: Path) -> None:
    """What ``pip install`` leaves in site-packages: the package and its dist-info."""
    package = site / "gvbench_third_party"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(ESTIMATOR)
    info = site / "gvbench_third_party-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gvbench-third-party\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[gvbench.estimators]\nthird_party = gvbench_third_party\n"
    )


def test_an_installed_estimator_is_a_row_of_the_leaderboard(tmp_path):
    site = tmp_path / "site"
    install(site)
    out = tmp_path / "board"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    command = [
        sys.executable,
        "-m",
        "gvbench.cli",
        "leaderboard",
        "--preset",
        "tiny",
        "--columns",
        "toy",
        "--estimators",
        "third_party_straight_through",
        "reinforce",
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    variance = pd.read_csv(out / "variance.csv", keep_default_na=False).set_index("estimator")
    assert list(variance.index) == ["third_party_straight_through", "reinforce"]
    row = variance.loc["third_party_straight_through"]
    assert row["label"] == "ST (third party)" and row["toy_note"] == ""
    assert math.isfinite(float(row["toy"])) and float(row["toy_se"]) > 0
    entries = pd.read_csv(out / "entries.csv", keep_default_na=False)
    theirs = entries[entries["estimator"] == "third_party_straight_through"]
    assert {"variance", "bias2", "mse", "cosine"} <= set(theirs["measure"])
    assert all(math.isfinite(float(value)) for value in theirs["value"] if value != "")
    assert "ST (third party)" in (out / "index.html").read_text()
