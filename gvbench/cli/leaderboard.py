"""``gvbench leaderboard``: every registered estimator on every registered study's columns,
at matched budgets (:func:`gvbench.leaderboard.fill.fill` computes; this parses and prints)."""

from __future__ import annotations

import argparse
from typing import Any

from gvbench import engine
from gvbench.cli.options import at_least, cluster, progress
from gvbench.leaderboard.fill import fill
from gvbench.leaderboard.presets import PRESETS


def add_parser(commands: Any) -> None:
    command = commands.add_parser(
        "leaderboard",
        parents=[cluster(1), progress()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="every estimator on every installed study's tasks at matched budgets: CSV, "
        "figures, claims and an HTML page; resumable",
        description="Rows: every registered estimator that applies; columns: every installed "
        "study's tasks at the preset. Per column: gradient variance, bias², MSE and cosine "
        "at a fixed checkpoint, per draw, per evaluation and per second, each with its SE; "
        "the training outcome after a random search of the same size for every estimator, "
        "mean ± SE over seeds, and its cost per step. Each column's best is marked only "
        "where it is resolved; the field's claims are decided with their SEs. A rerun "
        "resumes from the sweeps and checkpoints in OUT.",
    )
    add = command.add_argument
    add(
        "--preset",
        choices=tuple(PRESETS),
        default="cpu",
        help="tiny: a pipeline check in seconds; cpu: far enough to separate estimators on "
        "2 CPU cores; paper: the published sizes, for a GPU or a cluster",
    )
    add("--out", default=None, help="output folder (default: results/leaderboard/PRESET)")
    add(
        "--estimators",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the rows (default: tiny's short list, else each column's default set in "
        "`gvbench list`)",
    )
    add("--columns", nargs="+", default=None, metavar="NAME", help="the columns (default: all)")
    add("--seed", type=at_least(0), default=0, help="master seed of the sweeps and searches")
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fill the leaderboard, then say where it is and what its claims found."""
    with engine.client(args.workers, args.scheduler) as executor:
        board = fill(
            args.preset,
            args.out,
            estimators=args.estimators,
            columns=args.columns,
            seed=args.seed,
            executor=executor,
            progress=not args.no_progress,
        )
    for line in board.without:
        print(line)
    for claim in board.claims:
        print(f"[{claim.verdict}] {claim.experiment}: {claim.statement}")
    print(f"wrote {board.page} ({len(board.tables)} tables beside it, figures/, claims.csv)")
    return 0
