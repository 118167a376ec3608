"""The small frictions a new user met: a sweep where nothing applies, a grid extended by an
estimator without τ or K, ties, misspelt estimators, a forward without ``sample=``, a wide
frontier figure, and colours that run out at 25 estimators."""

from __future__ import annotations

import itertools

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench.cli import main
from gvbench.harness import read
from gvbench.harness.compare import best_at_budget, shown_best
from gvbench.plots import estimator_style, plot_frontier
from gvbench.plots.comparison import FRONTIER_COLUMNS
from gvbench.plots.style import estimator_dashes
from gvbench.tasks import ModuleTask
from tests.harness.test_compare import points_table


def test_a_cli_sweep_where_no_estimator_applies_is_an_error_naming_why(tmp_path):
    out = tmp_path / "never.nc"
    argv = ["sweep", "toy", "--estimators", "disarm", "rloo", "--k", "1", "--out", str(out)]
    with pytest.raises(SystemExit, match="no estimator applies to the toy task") as raised:
        main([*argv, "--no-progress"])
    message = str(raised.value)
    assert "DisARM is binary-only" in message and "RLOO needs 2 <= k" in message
    assert "\n" not in message and not out.exists()


def test_an_unknown_estimator_is_one_line_with_a_suggestion():
    with pytest.raises(KeyError) as raised:
        E.info("gumbel_rau")
    text = str(raised.value)
    assert text.startswith("unknown estimator 'gumbel_rau'; did you mean 'gumbel_rao'?")
    assert "\n" not in text  # and printed as it is, not as a quoted repr
    with pytest.raises(KeyError, match="did you mean 'rloo'"):
        E.get("RLOO")  # a label, in any case, finds its name
    with pytest.raises(KeyError, match=r"unknown estimator 'zzz'; available: aimle, arm"):
        E.info("zzz")
    with pytest.raises(SystemExit, match="did you mean 'st_gumbel_softmax'"):
        main(["sweep", "toy", "--estimators", "st_gumbel_sofmax", "--no-progress"])


class NoSampleKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 6)

    def forward(self, x):
        return self.encoder(x).sum(-1)


class AnyKeywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 6)

    def forward(self, x, **options):
        return (options["sample"](self.encoder(x).view(len(x), 2, 3)) ** 2).sum((-2, -1))


def test_a_forward_without_the_sample_keyword_is_one_line():
    with pytest.raises(TypeError) as raised:
        ModuleTask(NoSampleKeyword(), torch.zeros(2, 4))
    text = str(raised.value)
    assert text.startswith("NoSampleKeyword.forward takes no 'sample' keyword")
    assert "passes the sampler as the keyword `sample`" in text and "\n" not in text
    task = ModuleTask(AnyKeywords(), torch.zeros(2, 4), arity=3)  # **kwargs takes it
    one_draw = {name: value[None] for name, value in task.parameters().items()}
    sample = E.get("st_gumbel_softmax", tau=1.0).sampler()
    assert task.loss(one_draw, sample, 2).shape == (1, 2)


def test_ties_are_marked_as_ties_and_never_won():
    tied = best_at_budget(points_table([1.0, 1.0, 2.0], [0.01, 0.02, 0.01])).iloc[0]
    assert tied["z"] == 0.0 and tied["tie"] and tied["tied_with"] == "E1"
    assert tied["winner"] == ""
    clear = best_at_budget(points_table([1.0, 2.0], [0.01, 0.01]))
    assert not clear["tie"].iloc[0] and clear["winner"].iloc[0] == "E0"
    both = pd.concat([best_at_budget(points_table([1.0, 1.0, 1.0], [0.1] * 3)), clear])
    assert shown_best(both).tolist() == ["E0 = E1 = E2 (tie)", "E0"]


def test_the_demo_prints_a_tie_as_a_tie(capsys):
    from gvbench.cli import demo

    ds = gvbench.sweep(
        "toy",
        estimators=["st_gumbel_softmax", "gumbel_rao", "straight_through"],
        tau=[0.5],
        k=[1],
        reps=32,
        progress=False,
    )
    tied = ds.copy(deep=True)  # GR-MC1 given ST's numbers: the lowest MSE, twice
    for name in ("variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se"):
        tied[name].loc[dict(estimator="gumbel_rao")] = ds[name].sel(estimator="straight_through")
    demo._tables(tied)
    assert "GR-MCK K=1 = ST (tie)" in capsys.readouterr().out
    demo._tables(ds)
    assert "= ST (tie)" not in capsys.readouterr().out


def union_cells(ds: xr.Dataset, estimator: str, **where: object) -> xr.DataArray:
    return ds["status"].sel(estimator=estimator, **where)


def test_extending_a_grid_leaves_no_cell_pending_that_a_signature_makes_meaningless(tmp_path):
    path = tmp_path / "toy.nc"
    grid = dict(reps=64, progress=False, path=path)
    gvbench.sweep("toy", estimators=["st_gumbel_softmax", "rloo"], tau=[0.5], k=[2], **grid)
    grown = gvbench.sweep("toy", estimators=["gumbel_rao"], tau=[1.0], k=[4], **grid)
    assert grown.tau.values.tolist() == [0.5, 1.0] and grown.k.values.tolist() == [2, 4]
    # ST-GS takes no K and RLOO no τ: their cells fill the new K and τ, not pending holes.
    assert (union_cells(grown, "st_gumbel_softmax", tau=0.5) == "done").all()
    assert (union_cells(grown, "rloo", k=2) == "done").all()
    # What was never asked for stays pending: ST-GS at τ = 1, RLOO at K = 4.
    assert (union_cells(grown, "st_gumbel_softmax", tau=1.0) == "pending").all()
    assert (union_cells(grown, "rloo", k=4) == "pending").all()
    # REINFORCE takes neither τ nor K: the default τ and K grids do not grow the file's.
    extended = gvbench.sweep(
        "toy", estimators=["reinforce"], tau=[0.01, 0.1, 10.0], k=[1, 10, 100], **grid
    )
    assert extended.tau.values.tolist() == [0.5, 1.0] and extended.k.values.tolist() == [2, 4]
    assert (union_cells(extended, "reinforce") == "done").all()
    assert int((extended.status == "pending").sum()) == int((grown.status == "pending").sum())
    # the filled cells are what one sweep of the whole grid stores there, bit for bit
    fresh = gvbench.sweep(
        "toy",
        estimators=["st_gumbel_softmax", "rloo", "gumbel_rao", "reinforce"],
        tau=[0.5, 1.0],
        k=[2, 4],
        reps=64,
        progress=False,
    )
    done = extended.status == "done"
    for name in ("variance", "mse_se", "draw_seconds"):
        if name == "draw_seconds":  # a time: the same cell, copied, is the same time
            copied = extended[name].sel(estimator="st_gumbel_softmax", tau=0.5)
            assert copied.sel(k=2).item() == copied.sel(k=4).item()
            continue
        xr.testing.assert_identical(extended[name].where(done), fresh[name].where(done))
    xr.testing.assert_identical(read(path)["status"], extended["status"])


def test_the_frontier_wraps_its_panels_and_keeps_its_legend_clear_of_the_title():
    ds = gvbench.sweep(
        "toy",
        estimators=["st_gumbel_softmax", "rloo", "reinforce"],
        tau=[0.01, 0.1, 0.5, 1.0, 2.0, 10.0],
        k=[2, 4],
        reps=16,
        progress=False,
    )
    grid = plot_frontier(ds)
    figure = grid.figure
    figure.canvas.draw()
    rows = {round(ax.get_position().y0, 3) for ax in grid.axes.flat}
    assert len(grid.axes.flat) == 6 and len(rows) == 6 // FRONTIER_COLUMNS
    width, height = figure.get_size_inches()
    assert width / height < 3  # one row of six panels was 6.7 : 1
    renderer = figure.canvas.get_renderer()
    title = figure._suptitle.get_window_extent(renderer)
    legend = grid._legend.get_window_extent(renderer)
    assert not title.overlaps(legend)
    assert len(figure._suptitle.get_text()) < 60  # the key is in the legend, not the title
    labels = [text.get_text() for text in grid._legend.get_texts()]
    assert {"Pareto front (unbiased)", "biased", "ST-GS", "RLOO"} <= set(labels)
    plt.close(figure)


def _lab(colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour: distances of about 20 and more read as different."""
    rgb = np.array(mcolors.to_rgb(colour))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = to_xyz @ linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_25_estimators_stay_distinguishable():
    """Every registered estimator and the demo's two variants of decoupled ST: any two whose
    colours are close (ΔE < 20) differ in both marker and line style."""
    names = [*E.available(), *E.variants("decoupled_straight_through", forward_tau=[0.5, 2.0])]
    labels = [E.info(name).label for name in names]
    assert len(labels) >= 25
    styles = {label: (*estimator_style(label), estimator_dashes(label)) for label in labels}
    assert len(set(styles.values())) == len(labels)
    for a, b in itertools.combinations(labels, 2):
        (colour_a, marker_a, dash_a), (colour_b, marker_b, dash_b) = styles[a], styles[b]
        if np.linalg.norm(_lab(colour_a) - _lab(colour_b)) < 20:
            assert marker_a != marker_b and dash_a != dash_b, (a, b)
    # an estimator gvbench does not know: a marker and line no registered estimator has
    registered = {estimator_style(info.label)[1] for info in E.available().values()}
    marker = estimator_style("my_estimator")[1]
    assert marker not in registered and estimator_dashes("my_estimator") == ":"
