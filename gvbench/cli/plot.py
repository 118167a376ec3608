"""``gvbench plot``: seaborn figures of a results file, or of several sweeps side by side."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gvbench.harness.quantities import ERRORS, METRICS
from gvbench.plots import plot_file, plot_files


def add_parser(commands: Any) -> None:
    plot = commands.add_parser(
        "plot",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="seaborn figures of a results file, or of several sweeps side by side (PNG, PDF)",
    )
    plot.add_argument(
        "result",
        nargs="+",
        help="a netCDF file written by gvbench; several sweeps of one problem are drawn "
        "side by side (line style per sweep)",
    )
    plot.add_argument("--out-dir", default=None, help="where figures go (default: beside the file)")
    plot.add_argument(
        "--metrics",
        nargs="+",
        default=list(ERRORS),
        choices=METRICS,
        help="metrics of a sweep to draw, one figure each (with 95%% bands)",
    )
    plot.add_argument(
        "--frontier",
        action="store_true",
        help="only the variance–cost frontiers, side by side (sweeps of any tasks)",
    )
    plot.add_argument(
        "--group",
        default=None,
        metavar="NAME",
        help="draw every figure of one parameter group's part of the gradient (a ModuleTask's "
        "group, e.g. encoder): files named FILE-group-NAME-…",
    )
    plot.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in args.result:
        if not Path(name).exists():
            raise FileNotFoundError(f"no such results file: {name}")
    if len(args.result) == 1 and not args.frontier:
        written = plot_file(
            args.result[0], out_dir=args.out_dir, metrics=args.metrics, group=args.group
        )
    else:
        written = plot_files(
            args.result,
            out_dir=args.out_dir,
            metrics=args.metrics,
            frontier_only=args.frontier,
            group=args.group,
        )
    for target in written:
        print(f"wrote {target}")
    return 0
