"""One colour and marker per estimator in every figure, their legends, and readable log axes."""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.lines import Line2D

# A log axis shows this many decades below its largest value; smaller values are marked ▼ on
# its floor (ST's variance of 1e-156 at τ = 0.01 would otherwise flatten every other line).
DECADES = 6

# One colour and marker per estimator in every figure. The paper's estimators get the
# Okabe-Ito colours (colour-blind safe); the others Paul Tol's muted set; markers tell apart
# what a colour-blind reader or a grey-scale print could still confuse.
STYLE = {
    "ST": ("#D55E00", "v"),
    "ST-GS": ("#E69F00", "s"),
    "GS": ("#009E73", "^"),
    "GR-MCK": ("#0072B2", "o"),
    "REINFORCE": ("#CC79A7", "D"),
    "RLOO": ("#56B4E9", "P"),
    "ReinMax": ("#000000", "X"),
    "GST-1.0": ("#332288", "<"),
    "GST-p": ("#88CCEE", ">"),
    "US-BL": ("#44AA99", "h"),
    "REBAR": ("#117733", "p"),
    "RELAX": ("#999933", "*"),
    "FouST (reconstruction)": ("#882255", "d"),
    "ARM": ("#AA4499", "H"),
    "DisARM": ("#DDCC77", "8"),
    "Exact": ("#777777", "."),
    # the field's estimators since 2021: Paul Tol's vibrant set (every filled marker is taken)
    "IndeCateR": ("#EE3377", "s"),
    "ARMS": ("#0077BB", "^"),
    "CARMS": ("#33BBEE", "v"),
    "DisARM (categorical)": ("#CC3311", "8"),
    "Double CV": ("#009988", "D"),
    "RODEO": ("#EE7733", "*"),
    "Decoupled ST": ("#CC6677", "<"),
}
_OTHERS = sns.color_palette("colorblind", 10).as_hex()


def estimator_style(label: str) -> tuple[str, str]:
    """``(colour, marker)`` of an estimator's label, the same in every figure.

    GR-MC10, GR-MC100, … share GR-MCK's hue, lighter for smaller K; a variant
    ("Decoupled ST (forward_tau=0.5)") its estimator's hue, shaded by its options; a label
    gvbench does not know (a user's estimator) gets a stable colour from its name.
    """
    if label in STYLE:
        return STYLE[label]
    variant = re.fullmatch(r"(.+) \((.+=.+)\)", label)  # "Decoupled ST (forward_tau=0.5)"
    if variant and variant.group(1) in STYLE:
        colour, marker = STYLE[variant.group(1)]
        lighten = (0.0, 0.3, 0.55)[sum(map(ord, variant.group(2))) % 3]
        rgb = np.array(mcolors.to_rgb(colour))
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), marker
    match = re.fullmatch(r"GR-MC(\d+)", label)
    if match:
        lighten = max(0.0, 0.6 - 0.2 * np.log10(int(match.group(1))))  # K = 1000: full colour
        rgb = np.array(mcolors.to_rgb(STYLE["GR-MCK"][0]))
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), "o"
    return _OTHERS[sum(map(ord, label)) % len(_OTHERS)], "o"


def tidy_log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log-axis ticks that stay readable: no minor-tick labels, and on a range narrower than
    a decade plain numbers (0.8, 1, 1.5) instead of "6×10⁰"."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    target.set_minor_formatter(ticker.NullFormatter())
    if low > 0 and high / low < 10:
        target.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        target.set_major_formatter(ticker.FormatStrFormatter("%g"))


def legend_for(labels: Sequence[str]) -> list[Line2D]:
    """Legend handles for the estimators actually drawn (no entry without a line)."""
    handles = []
    for label in labels:
        colour, marker = estimator_style(label)
        handles.append(Line2D([], [], color=colour, marker=marker, markersize=4, label=label))
    return handles
