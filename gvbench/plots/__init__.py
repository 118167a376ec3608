"""Figures of gvbench's results (seaborn). Plots read datasets; they never run estimators.

- :mod:`gvbench.plots.style`: one colour, marker and line style per estimator, legends, log
  axes;
- :mod:`gvbench.plots.bands`: a metric with its 95% band against τ, seeds pooled;
- :mod:`gvbench.plots.sweep`: one sweep's figures (a metric per K and B, Gumbel-Rao's
  advantage, a heat map over an estimator's variants), of its total or of one parameter
  group (:func:`gvbench.harness.select_group`);
- :mod:`gvbench.plots.comparison`: the variance–cost frontier, and several sweeps side by side;
- :mod:`gvbench.plots.curves`: a training run's curves;
- :mod:`gvbench.plots.simplex`: the paper's Figure 1 over the probability simplex;
- :mod:`gvbench.plots.files`: the figures of any file gvbench writes, saved beside it.
"""

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is assumed

from gvbench.plots.bands import Z95, long_table, pool_seeds
from gvbench.plots.comparison import plot_comparison, plot_frontier
from gvbench.plots.curves import plot_curves
from gvbench.plots.files import file_kind, plot_file, plot_files, plot_sweep, save_figure
from gvbench.plots.simplex import plot_simplex
from gvbench.plots.style import (
    DECADES,
    STYLE,
    estimator_dashes,
    estimator_style,
    legend_for,
    tidy_log_axis,
)
from gvbench.plots.sweep import plot_gumbel_rao_advantage, plot_metric, plot_option_grid

__all__ = [
    "DECADES",
    "STYLE",
    "Z95",
    "estimator_dashes",
    "estimator_style",
    "file_kind",
    "legend_for",
    "long_table",
    "plot_comparison",
    "plot_curves",
    "plot_file",
    "plot_files",
    "plot_frontier",
    "plot_gumbel_rao_advantage",
    "plot_metric",
    "plot_option_grid",
    "plot_simplex",
    "plot_sweep",
    "pool_seeds",
    "save_figure",
    "tidy_log_axis",
]
