"""An experiment from another installed package is a peer of gvbench's own: with no gvbench
file edited, it trains with `gvbench train NAME`, runs in `gvbench reproduce --only NAME`, has
its claims and section in the report, and its task sweeps like any other."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr
from torch import nn

from gvbench.experiment import Experiment, TaskOptions
from gvbench.harness.store import write_atomic
from gvbench.report.claims import SEED_RULE, Claim, Estimate, verdict
from gvbench.study import PresetRun
from gvbench.training import RunConfig, option


@dataclasses.dataclass(frozen=True)
class BlobsConfig(RunConfig):
    batch_size: int = option(16, "points per step")
    clusters: int = option(4, "clusters C a point is assigned to")


@dataclasses.dataclass(frozen=True)
class BlobsOptions(TaskOptions):
    """Blobs at a checkpoint: the gradient of the reconstruction error."""

    clusters: int = 4
    train_steps: int = 30
    batch_pool: int = 16


@dataclasses.dataclass(frozen=True)
class Preset:
    seeds: int
    steps: int


class Model(nn.Module):
    def __init__(self, clusters, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.assign, self.centres = nn.Linear(2, clusters), nn.Linear(clusters, 2)

    def forward(self, x, sample):
        return self.centres(sample(self.assign(x)))


class Blobs(Experiment[BlobsConfig]):
    name = "blobs"
    title = "points assigned to one of C clusters"
    Config = BlobsConfig
    Options = BlobsOptions
    presets = {"tiny": Preset(seeds=2, steps=40)}
    selection = "valid_error"
    higher_is_better = False

    def data(self, config):
        g = torch.Generator().manual_seed(config.seed)
        centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
        points = centres[torch.randint(4, (300,), generator=g)]
        points = points + 0.3 * torch.randn(300, 2, generator=g)
        return {"train": (points[:200],), "valid": (points[200:250],), "test": (points[250:],)}, "blobs"

    def model(self, config):
        return Model(config.clusters, config.seed)

    def loss(self, output, x):
        return ((output - x) ** 2).sum(-1)

    score = loss

    def run_preset(self, preset, out_dir, run=None):
        chosen, run = self.preset(preset), run or PresetRun()
        configs = [
            BlobsConfig(seed=s, steps=chosen.steps, eval_every=20, variance_every=0, lr=0.05,
                        tau=0.5, device=run.device)
            for s in range(run.seed, run.seed + chosen.seeds)
        ]
        curves = self.train(configs, out_dir / "runs", progress=run.progress)
        ds = xr.Dataset(
            {
                "initial": ("seed", [c.attrs["initial_valid_error"] for c in curves]),
                "best": ("seed", [c.attrs["best_valid_error"] for c in curves]),
            },
            coords={"seed": [c.seed for c in configs]},
        )
        write_atomic(ds, out_dir / f"{preset}.nc")
        return ds

    def claims(self, data):
        ds = data[self.name]
        gain = Estimate.over_seeds(ds["initial"] - ds["best"])
        return [Claim(self.name, "Training lowers the validation error.", verdict(gain.z()),
                      f"initial − best: {gain.test()}", SEED_RULE)]

    def report(self, report, data):
        ds = data[self.name]
        blocks = report.section("Blobs (a plugin's section)")
        report.table(blocks, "blobs-errors", "Validation error by seed", ds.to_dataframe().reset_index())

        def draw():
            figure, ax = plt.subplots()
            ax.plot(ds["seed"], ds["best"], "o")
            return figure

        report.figure(blocks, "blobs-best", draw, "Best validation error by seed.")


BLOBS = Blobs()
'''


def install(site: Path) -> None:
    """What pip leaves in site-packages: the package and its dist-info with entry points."""
    (site / "gvbench_blobs").mkdir(parents=True)
    (site / "gvbench_blobs" / "__init__.py").write_text(PLUGIN)
    info = site / "gvbench_blobs-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gvbench-blobs\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gvbench.experiments]\nblobs = gvbench_blobs:BLOBS\n")


def gvbench(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "gvbench.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install(site)
    return site


def test_a_plugin_experiment_trains_from_the_command_line(site, tmp_path):
    help_text = gvbench("train", "blobs", "--help", site=site, cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "--clusters" in help_text.stdout and "clusters C a point" in help_text.stdout
    done = gvbench(
        *("train", "blobs", "--seed", "0", "1", "--steps", "30", "--eval-every", "10"),
        *("--variance-every", "0", "--no-progress", "--out-dir", "runs"),
        site=site,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("best_valid_error") == 2
    assert len(list((tmp_path / "runs").glob("*/curves.nc"))) == 2


def test_a_plugin_experiment_is_reproduced_and_reported(site, tmp_path):
    done = gvbench(
        *("reproduce", "--preset", "tiny", "--only", "blobs", "--workers", "1"),
        *("--no-progress", "--out", "report"),
        site=site,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = tmp_path / "report"
    claims = json.loads((report / "claims.json").read_text())
    assert [c["experiment"] for c in claims] == ["blobs"]
    assert claims[0]["verdict"] in {"holds", "does not hold", "not resolved"}
    assert "Blobs (a plugin&#x27;s section)" in (report / "index.html").read_text() or (
        "Blobs (a plugin's section)" in (report / "index.html").read_text()
    )
    assert (report / "tables" / "blobs-errors.csv").is_file()
    assert (report / "figures" / "blobs-best.png").is_file()
    manifest = json.loads((report / "reproduction.json").read_text())
    assert manifest["files"] == {"blobs": "blobs/tiny.nc"}
    rebuilt = gvbench("report", "report", site=site, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "[" in rebuilt.stdout and "blobs: Training lowers" in rebuilt.stdout


def test_a_plugin_experiment_gives_a_harness_task(site, tmp_path):
    listed = gvbench("list", site=site, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "blobs" in listed.stdout
    done = gvbench(
        *("sweep", "blobs", "--estimators", "st_gumbel_softmax", "--tau", "0.5", "--k", "1"),
        *("--reps", "8", "--reference-reps", "16", "--no-progress", "--out", "blobs.nc"),
        site=site,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "blobs.nc").is_file()
    assert (tmp_path / "results" / "blobs" / "checkpoints").is_dir()


def test_every_field_of_gvbench_s_own_experiments_has_its_help():
    from gvbench import study
    from gvbench.cli.train import field_help
    from gvbench.experiment import Experiment

    trained = [s for s in study.registered().values() if isinstance(s, Experiment)]
    assert {s.name for s in trained} >= {"listops", "vae"}
    for experiment in trained:
        fields = [f.name for f in dataclasses.fields(experiment.Config) if f.init]
        missing = [name for name in fields if field_help(experiment.Config, name) is None]
        assert not missing, (experiment.name, missing)
