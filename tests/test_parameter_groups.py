"""Figures and tables per parameter group: a task whose total variance is dominated by
parameters the estimator does not touch (a decoder's weights, a supernet's) is compared on
the group it does touch, and `gvbench compare` says each group's share of the total."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

import gvbench
from gvbench.cli import main
from gvbench.harness import read, select_group, table, variance_shares
from gvbench.harness.compare import variance_ratio
from gvbench.plots import plot_frontier, plot_gumbel_rao_advantage, plot_metric
from gvbench.tasks import ModuleTask


class WideDecoder(nn.Module):
    """Three latents of arity 3 and a decoder of 640 weights, whose gradient (which the
    estimator barely touches) holds nearly all of the total variance."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(8, 3 * 3), nn.Linear(3 * 3, 64)

    def forward(self, x, y, sample):
        z = sample(self.encoder(x).view(len(x), 3, 3))
        return ((self.decoder(z.flatten(1)) - y) ** 2).sum(-1)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A sweep of ST-GS and GR-MCK on the model, at one example (exact reference)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x = torch.randn(4, 8, generator=generator, dtype=torch.float64)
    y = 3 * torch.randn(4, 64, generator=generator, dtype=torch.float64)
    task = ModuleTask(WideDecoder().double(), (x, y), arity=3, batched=False)
    path = tmp_path_factory.mktemp("groups") / "wide.nc"
    gvbench.sweep(
        task,
        estimators=["st_gumbel_softmax", "gumbel_rao", "disarm"],
        tau=[0.5, 1.0],
        k=[4, 16],
        reps=64,
        progress=False,
        path=path,
    )
    return path


def test_a_group_s_view_is_its_metrics_in_place_of_the_totals(grouped):
    ds = read(grouped)
    view = select_group(ds, "encoder")
    for name in ("variance", "bias2_se", "mse", "parameters", "reference_norm2"):
        np.testing.assert_array_equal(
            view[name].values, ds[f"group_{name}"].sel(group="encoder").values
        )
    assert "group" not in view.dims and "digest" not in view and view.attrs["group"] == "encoder"
    np.testing.assert_array_equal(view["parameters"].values[ds.status.values == "done"], 81.0)
    # a draw costs what it costs: the equal-cost variance is the group's times the same cost
    np.testing.assert_array_equal(
        view["work_normalized_variance"].values, view["variance"].values * ds["evaluations"].values
    )
    assert not np.array_equal(view["variance"].values, ds["variance"].values)
    # the Gumbel-Rao advantage of the group is the ratio of the group's variances
    ratio = variance_ratio(view)["ratio"]
    encoder = ds["group_variance"].sel(group="encoder")
    expected = encoder.sel(estimator="st_gumbel_softmax") / encoder.sel(estimator="gumbel_rao")
    np.testing.assert_array_equal(ratio.values, expected.values)


def test_a_group_the_sweep_does_not_have_is_one_line_naming_its_groups(grouped):
    ds = read(grouped)
    with pytest.raises(ValueError, match=r"did you mean 'encoder'\? its groups: decoder, encoder"):
        select_group(ds, "encodr")
    toy = gvbench.sweep(
        "toy", estimators=["st_gumbel_softmax"], tau=1.0, k=1, reps=8, progress=False
    )
    with pytest.raises(ValueError, match="no parameter groups"):
        select_group(toy, "encoder")
    with pytest.raises(SystemExit, match="no parameter group 'nope'"):
        main(["compare", str(grouped), "--group", "nope"])


def test_shares_of_the_total_variance_sum_to_one_per_cell(grouped):
    ds = read(grouped)
    shares = variance_shares(ds)
    # ST-GS: one row per τ (it takes no K); GR-MCK: per τ and K; DisARM does not apply.
    assert sorted(shares["label"]) == ["GR-MCK"] * 4 + ["ST-GS"] * 2
    assert shares.loc[shares["label"] == "ST-GS", "k"].isna().all()
    np.testing.assert_allclose(shares["decoder"] + shares["encoder"], 1.0, rtol=1e-12)
    assert (shares["decoder"] > 0.5).all()


def test_compare_states_each_group_s_share_and_compares_a_group(grouped, capsys):
    assert main(["compare", str(grouped)]) == 0
    out = capsys.readouterr().out
    assert "each parameter group's share of the total variance" in out
    shares = variance_shares(read(grouped))
    top = shares.loc[shares["decoder"].idxmax()]
    assert f"{100 * top['decoder']:.1f}%" in out
    assert (shares["decoder"] >= 0.9).all()  # the wide decoder dominates, as built
    assert "decoder holds at least 90% of the total variance in every cell" in out
    assert "--group encoder compares the estimators on encoder" in out
    assert main(["compare", str(grouped), "--group", "encoder", "--metric", "mse"]) == 0
    out = capsys.readouterr().out
    assert "the tables below are of group encoder" in out
    assert "frontier (evaluations per draw, group encoder)" in out
    view = select_group(read(grouped), "encoder")
    gr = float(view["variance"].sel(estimator="gumbel_rao", tau=1.0, k=16, batch_size=1))
    assert f"{gr:.6f}"[:6] in out


def test_every_figure_is_drawn_per_group(grouped, tmp_path, capsys):
    assert main(["plot", str(grouped), "--group", "encoder", "--out-dir", str(tmp_path)]) == 0
    written = capsys.readouterr().out
    for name in ("variance", "bias2", "mse", "frontier-evaluations", "gumbel-rao-advantage"):
        path = tmp_path / f"wide-group-encoder-{name}.png"
        assert path.stat().st_size > 1000 and str(path) in written
    view = select_group(read(grouped), "encoder")
    figure = plot_gumbel_rao_advantage(view)
    assert "group encoder" in figure._suptitle.get_text()
    grid = plot_metric(view, "variance")
    assert "of the gradient of group encoder" in grid.figure._suptitle.get_text()
    frontier = plot_frontier(view)
    assert "(group encoder)" in frontier.figure._suptitle.get_text()
    for drawn in (figure, grid.figure, frontier.figure):
        plt.close(drawn)


def test_the_tidy_table_has_one_row_per_cell(grouped):
    ds = read(grouped)
    frame = table(ds)
    assert len(frame) == ds["status"].size
    assert list(frame.columns[:4]) == ["estimator", "tau", "k", "batch_size"]
    assert {"label", "unbiased", "status", "variance", "variance_se", "seconds"} <= set(frame)
    assert "digest" not in frame and not any(c.startswith("group_") for c in frame)
    row = frame[(frame.estimator == "gumbel_rao") & (frame.tau == 0.5) & (frame.k == 16)]
    cell = ds.sel(estimator="gumbel_rao", tau=0.5, k=16, batch_size=1)
    assert row["variance"].item() == float(cell["variance"]) and row["label"].item() == "GR-MCK"
    encoder = table(ds, group="encoder")
    np.testing.assert_array_equal(
        encoder["variance"].to_numpy(), select_group(ds, "encoder")["variance"].values.ravel()
    )


def test_the_tidy_table_keeps_seeds_as_a_column():
    ds = gvbench.sweep(
        "toy", estimators=["st_gumbel_softmax", "rloo"], tau=[0.5], k=[2], reps=16,
        seed=[0, 1], progress=False,
    )  # fmt: skip
    frame = table(ds)
    assert len(frame) == 4 and "seed" in frame and set(frame["seed"]) == {0, 1}
    assert (frame["status"] == "done").all()
    pivot = frame.pivot_table("variance", index="seed", columns="label")
    assert pivot.shape == (2, 2)
