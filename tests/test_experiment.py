"""A third experiment is one short file: data, an ordinary module, a loss, a score. It trains
many runs as one and is measured by the harness like ListOps and the VAE."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

import gvbench
from gvbench.experiment import Experiment
from gvbench.training import RunConfig

# -- the whole experiment ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClusterConfig(RunConfig):
    batch_size: int = 16
    clusters: int = 4


class ClusterModel(nn.Module):
    """Assign a point to one of C clusters (the discrete choice), reconstruct it from there."""

    def __init__(self, clusters: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.assign, self.centres = nn.Linear(2, clusters), nn.Linear(clusters, 2)

    def forward(self, x, sample):
        return self.centres(sample(self.assign(x)))


class Clusters(Experiment):
    name = "clusters"
    Config = ClusterConfig
    selection = "valid_error"
    higher_is_better = False

    def data(self, config):
        g = torch.Generator().manual_seed(config.seed)
        centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
        points = centres[torch.randint(4, (600,), generator=g)] + 0.3 * torch.randn(
            600, 2, generator=g
        )
        return {
            "train": (points[:400],),
            "valid": (points[400:500],),
            "test": (points[500:],),
        }, "4 blobs"

    def model(self, config):
        return ClusterModel(config.clusters, config.seed)

    def loss(self, output, x):
        return ((output - x) ** 2).sum(-1)

    score = loss


# -- what it gets ------------------------------------------------------------------------


def test_a_third_experiment_trains_runs_as_one_and_is_measured(tmp_path):
    clusters = Clusters()
    run = dict(steps=150, eval_every=50, variance_every=150, variance_reps=8, lr=0.05, tau=0.5)
    group = clusters.train(
        [ClusterConfig(seed=s, **run) for s in range(3)], tmp_path, progress=False
    )
    alone = clusters.train(ClusterConfig(seed=1, **run), tmp_path / "alone", progress=False)
    np.testing.assert_array_equal(group[1].train_loss, alone.train_loss)
    for curves in group:  # it learns: the error falls well below where it started
        assert curves.attrs["best_valid_error"] < 0.5 * curves.attrs["initial_valid_error"]
    model = clusters.model(ClusterConfig(seed=0))
    x = clusters.data(ClusterConfig(seed=0))[0]["valid"][0][:32]
    task = clusters.module_task(model, (x,), ClusterConfig(), reference_reps=400)
    ds = gvbench.sweep(
        task,
        estimators=["st_gumbel_softmax", "rloo"],
        tau=1.0,
        k=[4],
        batch_size=8,
        reps=64,
        progress=False,
    )
    assert (ds.status == "done").all() and np.isfinite(ds.variance).all()


def test_an_experiment_without_a_hook_cannot_be_made():
    class NoScore(Experiment):
        name = "no-score"
        data, model, loss = Clusters.data, Clusters.model, Clusters.loss

    try:
        NoScore()
    except TypeError as error:
        assert "score" in str(error)
    else:
        raise AssertionError("an experiment without score was made")
