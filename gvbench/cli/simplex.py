"""``gvbench simplex``: the paper's Figure 1, GR-MCK's variance reduction over the simplex."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gvbench import engine
from gvbench.cli.options import cluster, progress
from gvbench.harness.store import write_atomic
from gvbench.plots import plot_simplex, save_figure
from gvbench.simplex import simplex_sweep


def add_parser(commands: Any) -> None:
    simplex = commands.add_parser(
        "simplex",
        parents=[cluster(1), progress()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the paper's Figure 1: GR-MCK's variance reduction over the 3-category simplex",
        description="Sweep ST-GS and GR-MCK on the toy task at every point of a triangular grid "
        "of the probability simplex and draw log10 tr Cov(ST-GS) − log10 tr Cov(GR-MCK).",
    )
    add = simplex.add_argument
    add("--tau", nargs="+", type=float, default=[0.1, 0.5, 1.0], help="temperatures, a panel each")
    add(
        "--k", nargs="+", type=int, default=[1000], help="K of GR-MCK (the figure uses the largest)"
    )
    add("--resolution", type=int, default=12, help="grid points per edge (>= 3)")
    add("--reps", type=int, default=2000, help="gradient draws per cell")
    add("--seed", type=int, default=0, help="master seed")
    add("--out", default="results/simplex.nc", help="results file; figures go beside it")
    simplex.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """ST-GS against GR-MCK at every point of the 3-simplex, saved and drawn."""
    out = Path(args.out)
    with engine.client(args.workers, args.scheduler) as executor:
        ds = simplex_sweep(
            args.resolution,
            tau=args.tau,
            k=args.k,
            reps=args.reps,
            seed=args.seed,
            folder=out.parent / f"{out.stem}-points",
            executor=executor,
            progress=not args.no_progress,
        )
    write_atomic(ds, out)
    save_figure(plot_simplex(ds), out.with_suffix(""), ("png", "pdf"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({ds.sizes['point']} points)")
    return 0
