"""One colour, marker and line style per estimator in every figure, their legends, readable log
axes, and how a caption names what was measured."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.lines import Line2D
from xarray import Dataset

# A log axis shows this many decades below its largest value; smaller values are marked ▼ on
# its floor (ST's variance of 1e-156 at τ = 0.01 would otherwise flatten every other line).
DECADES = 6

# One colour and marker per estimator in every figure. The paper's estimators get the
# Okabe-Ito colours (colour-blind safe); the others Paul Tol's muted set, and the field's
# estimators since 2021 the colours of Tol's vibrant, light and dark sets farthest (CIELAB)
# from all of those. Markers tell apart what a colour-blind reader or a grey-scale print could
# still confuse, and line styles (:func:`estimator_dashes`) what markers alone cannot.
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
    "IndeCateR": ("#EE3377", "s"),
    "IndeCateR-D": ("#FFAABB", "d"),
    "ARMS": ("#EE8866", "^"),
    "CARMS": ("#222255", "v"),
    "DisARM (categorical)": ("#666633", "8"),
    "Double CV": ("#663333", "D"),
    "RODEO": ("#BBCC33", "*"),
    "Decoupled ST": ("#225555", "<"),
    "ZGR": ("#A58DE6", "o"),
    "α-ReinMax": ("#8C4310", "v"),
    "ReinMax-Rao": ("#D6AA9A", "^"),
    "ReinMax-CV": ("#90C07F", "<"),
    "ARSM": ("#63506E", ">"),
    "bitflip-1": ("#CB646D", "s"),
    "UGC": ("#0D4C2C", "p"),
    "DARN": ("#1BA1FF", "*"),
    "SIMPLE": ("#6B236E", "h"),
    "I-MLE": ("#52781F", "D"),
    "AIMLE": ("#C79050", "D"),
    "REINFORCE (subset)": ("#C1ACCD", "d"),
    "RLOO (subset)": ("#4A412D", "P"),
    "SFESS": ("#57C2CC", "o"),
    "Relaxed top-k": ("#3B539B", "v"),
    "ST Gumbel top-k": ("#7D1D2F", "v"),
}
# Drawn solid: the paper's estimators and the exact gradient; every other estimator dashed,
# so that the nearest colours (RLOO and GST-p, GS and US-BL: ΔE < 20) differ in line too.
SOLID = frozenset({"ST", "ST-GS", "GS", "GR-MCK", "REINFORCE", "RLOO", "ReinMax", "Exact"})
# The third round (ZGR on, and the k-subset estimators) dash-dotted: their colours, chosen at
# least ΔE 24 from each other in CIELAB, may come near an older estimator's, whose line and
# marker then differ from theirs.
DASH_DOT = frozenset(
    {"ZGR", "α-ReinMax", "ReinMax-Rao", "ReinMax-CV", "ARSM", "bitflip-1", "UGC", "DARN"}
    | {"SIMPLE", "I-MLE", "AIMLE", "REINFORCE (subset)", "RLOO (subset)", "SFESS"}
    | {"Relaxed top-k", "ST Gumbel top-k"}
)
# Variants and estimators gvbench does not know take thin markers, which no registered
# estimator uses, and dotted or dash-dotted lines.
THIN_MARKERS = ("1", "2", "3", "4", "x", "+")
_OTHERS = sns.color_palette("colorblind", 10).as_hex()


def _hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (``hash`` of a str is salted)."""
    return zlib.crc32(text.encode())


def _variant(label: str) -> tuple[str, str] | None:
    """``(estimator's label, options)`` of a variant's label ("Decoupled ST
    (forward_tau=0.5)"), or None."""
    match = re.fullmatch(r"(.+) \((.+=.+)\)", label)
    return (match.group(1), match.group(2)) if match and match.group(1) in STYLE else None


def estimator_style(label: str) -> tuple[str, str]:
    """``(colour, marker)`` of an estimator's label, the same in every figure.

    GR-MC10, GR-MC100, … share GR-MCK's hue, lighter for smaller K; a variant
    ("Decoupled ST (forward_tau=0.5)") its estimator's hue, shaded by its options, with a thin
    marker of its own; a label gvbench does not know (a user's estimator) gets a stable colour
    and thin marker from its name.
    """
    if label in STYLE:
        return STYLE[label]
    variant = _variant(label)
    if variant:
        colour, _ = STYLE[variant[0]]
        code = _hash(variant[1])
        lighten = (0.25, 0.5)[code % 2]
        rgb = np.array(mcolors.to_rgb(colour))
        marker = THIN_MARKERS[(code // 2) % len(THIN_MARKERS)]
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), marker
    match = re.fullmatch(r"GR-MC(\d+)", label)
    if match:
        lighten = max(0.0, 0.6 - 0.2 * np.log10(int(match.group(1))))  # K = 1000: full colour
        rgb = np.array(mcolors.to_rgb(STYLE["GR-MCK"][0]))
        return mcolors.to_hex(rgb + (1 - rgb) * lighten), "o"
    code = _hash(label)
    return _OTHERS[code % len(_OTHERS)], THIN_MARKERS[(code // len(_OTHERS)) % len(THIN_MARKERS)]


def estimator_dashes(label: str) -> str:
    """The line style of an estimator's label, the same in every figure: solid for the
    paper's estimators (and GR-MC10, …), dashed for the others, dotted or dash-dotted for a
    variant (by its options) and dotted for an estimator gvbench does not know."""
    if label in STYLE:
        return "-" if label in SOLID else "-." if label in DASH_DOT else "--"
    variant = _variant(label)
    if variant:
        return (":", "-.")[(_hash(variant[1]) // 12) % 2]
    return "-" if re.fullmatch(r"GR-MC(\d+)", label) else ":"


def tidy_log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log-axis ticks that stay readable: no minor-tick labels, and on a range narrower than
    a decade plain numbers (0.8, 1, 1.5) instead of "6×10⁰"."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    target.set_minor_formatter(ticker.NullFormatter())
    if low > 0 and high / low < 10:
        target.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        target.set_major_formatter(ticker.FormatStrFormatter("%g"))


# A legend entry's height, in inches, at the figures' font size.
ENTRY_HEIGHT = 0.2


def add_legend(grid: sns.FacetGrid, handles: Sequence[Line2D], title: str) -> None:
    """``handles`` as the grid's legend, right of its panels, in as many columns as keep it
    within the figure's height (25 estimators beside one row of panels would otherwise run
    into the title)."""
    height = grid.figure.get_figheight()
    per_column = max(4, int(height / ENTRY_HEIGHT) - 2)
    columns = -(-len(handles) // per_column)
    grid.add_legend(
        legend_data={h.get_label(): h for h in handles}, title=title, ncol=max(1, columns)
    )


def legend_for(labels: Sequence[str], dashes: bool = False) -> list[Line2D]:
    """Legend handles for the estimators actually drawn (no entry without a line), with
    their line styles where the figure draws them (``dashes``)."""
    handles = []
    for label in labels:
        colour, marker = estimator_style(label)
        style = estimator_dashes(label) if dashes else "-"
        handles.append(
            Line2D([], [], color=colour, marker=marker, ls=style, markersize=4, label=label)
        )
    return handles


def measured(ds: Dataset) -> str:
    """How a caption names what a sweep measured: "the gradient", or one parameter group's
    part of it (a :func:`~gvbench.harness.select_group` view)."""
    group = ds.attrs.get("group")
    return f"the gradient of group {group}" if group else "the gradient"
