"""``gvbench reproduce`` (every installed experiment at a preset, then the report) and
``gvbench report`` (the report rebuilt from a reproduction's results)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gvbench import engine, study
from gvbench.cli.options import at_least, cluster, progress
from gvbench.report import build_report
from gvbench.reproduce import presets, reproduce, select


def add_parser(commands: Any) -> None:
    installed = study.registered()
    described = "; ".join(f"{name}: {each.title}" for name, each in installed.items())
    command = commands.add_parser(
        "reproduce",
        parents=[cluster(2), progress()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="every installed experiment at a preset, and a report (HTML, figures, CSV); resumable",
        description="Run each installed experiment's preset (for gvbench's own: the toy sweep "
        "and simplex of Figure 1, the ListOps and VAE presets with seeds, τ and random search "
        "as in the paper), decide each claim from the results with its standard error, and "
        "write OUT/index.html with figures/ and tables/. A rerun resumes: finished cells, "
        f"runs and searches are reused. Installed: {described}.",
    )
    add = command.add_argument
    add(
        "--preset",
        choices=presets(),
        default="small",
        help="tiny: a pipeline check in about a minute; small: about 20 minutes on 2 CPU cores; "
        "medium: the trained experiments further, about two hours on 2 CPU cores; paper: the "
        "paper's grids, for a GPU or a cluster",
    )
    add("--out", default="results/report", help="folder of results and report")
    add(
        "--only",
        nargs="+",
        choices=tuple(installed),
        default=None,
        help="experiments to run; none named: every installed one that has the preset, each "
        "one left out said in a line",
    )
    add("--seed", type=at_least(0), default=0, help="first seed")
    add(
        "--device",
        default="cpu",
        help="torch device of the experiments' training and variance sweeps: cpu, cuda",
    )
    add(
        "--data-dir",
        default=None,
        help="folder of the data files an experiment reads (the VAE: "
        "binarized_mnist_{train,valid,test}.amat); none: the data each ships or generates",
    )
    command.set_defaults(run=run)

    report = commands.add_parser(
        "report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="rebuild a reproduction's report from its results",
    )
    report.add_argument(
        "folder", nargs="?", default="results/report", help="the --out of reproduce"
    )
    report.set_defaults(run=run_report)


def run(args: argparse.Namespace) -> int:
    """The installed experiments at a preset (saying which it leaves out), then the report."""
    selection = select(args.preset, args.only)
    for line in selection.left_out:
        print(line)
    with engine.client(args.workers, args.scheduler) as executor:
        index = reproduce(
            args.preset,
            args.out,
            executor,
            seed=args.seed,
            data_dir=args.data_dir,
            experiments=tuple(each.name for each in selection.studies),
            progress=not args.no_progress,
            workers=args.scheduler or args.workers,
            device=args.device,
        )
    _print_claims(index.parent)
    print(f"wrote {index} (figures/, tables/, claims.json beside it)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Rebuild the report from a reproduction's results (no estimator runs)."""
    index = build_report(args.folder)
    _print_claims(index.parent)
    print(f"wrote {index}")
    return 0


def _print_claims(folder: Path) -> None:
    for claim in json.loads((folder / "claims.json").read_text()):
        print(f"[{claim['verdict']}] {claim['experiment']}: {claim['statement']}")
