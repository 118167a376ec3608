"""Figures a paper could print: bounded log axes, readable ticks, one style per estimator,
no legend entry without a line, labelled simplex corners."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

import gvbench
import gvbench.estimators as E
from gvbench.plots import estimator_style, plot_metric, plot_simplex, tidy_log_axis


@pytest.fixture(scope="module")
def sweep():
    return gvbench.sweep(
        "toy",
        estimators=["straight_through", "st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo"],
        tau=[0.01, 0.1, 1.0],
        k=[1, 10],
        reps=300,
        progress=False,
    )


def _legend_labels(grid) -> list[str]:
    return [text.get_text() for text in grid._legend.get_texts()]


def test_every_estimator_has_its_own_style():
    labels = [info.label for info in E.available().values()]
    styles = [estimator_style(label) for label in labels]
    assert len(set(styles)) == len(labels)
    assert len({colour for colour, _ in styles}) == len(labels)
    # GR-MCK at several K: the same hue, lighter for smaller K.
    light, full = (mcolors.to_rgb(estimator_style(f"GR-MC{k}")[0]) for k in (10, 1000))
    assert sum(light) > sum(full) and full == mcolors.to_rgb(estimator_style("GR-MCK")[0])
    assert estimator_style("my_estimator") == estimator_style("my_estimator")


def test_the_variance_axis_is_bounded_and_tiny_values_are_marked(sweep):
    grid = plot_metric(sweep, "variance")
    st = float(sweep["variance"].sel(estimator="straight_through", tau=0.01).min())
    top = float(sweep["variance"].max())
    assert st < top * 1e-100  # ST's variance at τ = 0.01 is ~1e-156
    low, high = grid.axes.flat[0].get_ylim()
    assert low >= top * 1e-7 and high <= top * 3
    markers = [line for ax in grid.axes.flat for line in ax.lines if line.get_marker() == "v"]
    assert any(np.allclose(line.get_ydata(), low * 2) for line in markers)
    plt.close(grid.figure)


def test_no_legend_entry_without_a_line(sweep):
    grid = plot_metric(sweep, "bias2")
    labels = _legend_labels(grid)
    assert "RLOO" not in labels and "REINFORCE" not in labels  # unbiased: left out
    drawn = {mcolors.to_hex(line.get_color()) for ax in grid.axes.flat for line in ax.lines}
    for label in labels:
        assert estimator_style(label)[0].lower() in drawn, label
    plt.close(grid.figure)


def test_narrow_log_ranges_get_plain_tick_labels():
    figure, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.9, 1.2, 1.6])
    ax.set_yscale("log")
    ax.set_ylim(0.8, 1.7)
    tidy_log_axis(ax)
    figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in t and "times" not in t for t in labels)
    assert {"1", "1.5"} <= set(labels)
    assert not [t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()]
    plt.close(figure)


def test_simplex_corners_are_labelled(tmp_path):
    from gvbench.simplex import simplex_sweep

    ds = simplex_sweep(4, tau=(1.0,), k=(10,), reps=50, folder=tmp_path, progress=False)
    figure = plot_simplex(ds)
    texts = {t.get_text() for ax in figure.axes for t in ax.texts}
    assert {"p₁ = 1", "p₂ = 1", "p₃ = 1"} <= texts
    plt.close(figure)


def test_an_unresolved_bias_is_an_open_marker_at_its_upper_bound(sweep):
    grid = plot_metric(sweep, "bias2")
    table = sweep[["bias2", "bias2_se"]].to_dataframe().reset_index().dropna()
    unresolved = table[(table.bias2 < 2 * table.bias2_se) & (table.estimator != "reinforce")]
    unresolved = unresolved[unresolved.estimator != "rloo"]
    assert len(unresolved), "the fixture has no unresolved bias² to draw"
    open_markers = [
        line
        for ax in grid.axes.flat
        for line in ax.lines
        if line.get_markerfacecolor() == "none" and line.get_linestyle() == "None"
    ]
    drawn = np.concatenate([line.get_ydata() for line in open_markers])
    for _, cell in unresolved.iterrows():
        upper = cell.bias2 + 2 * cell.bias2_se
        assert np.isclose(drawn, upper).any() or upper < grid.axes.flat[0].get_ylim()[0] * 2
    # Filled markers are resolved values only: none sits where an unresolved one would.
    filled = [line for ax in grid.axes.flat for line in ax.lines if line.get_linestyle() == "-"]
    values = np.concatenate([line.get_ydata() for line in filled])
    low = grid.axes.flat[0].get_ylim()[0]
    assert (values >= low).all()
    assert "open markers: within 2 SE of 0" in grid.figure._suptitle.get_text()
    plt.close(grid.figure)
