"""Command line: ``gvbench list | sweep | plot | demo``.

The CLI parses, validates and delegates; it computes no statistics of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gvbench.estimators as E
import gvbench.tasks

EPILOG = """examples:
  gvbench list
  gvbench sweep toy --tau 0.01 0.1 1 --k 1 10 100 --reps 10000 --workers 2
  gvbench sweep toy --estimators st_gumbel_softmax gumbel_rao --task-option n=5 m=2
  gvbench plot results/toy.nc
"""


def _task_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"gvbench: --task-option takes key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def command_list(args: argparse.Namespace) -> int:
    print("Estimators (gvbench.estimators.get(NAME, **hyper)):\n")
    _print_table([entry.summary() for entry in E.available().values()])
    print("\nTasks (gvbench.tasks.get(NAME, **config)):\n")
    _print_table(
        [
            {"name": name, "summary": (cls.__doc__ or "").strip().splitlines()[0]}
            for name, cls in gvbench.tasks.available().items()
        ]
    )
    return 0


def run_sweep(args: argparse.Namespace) -> Path:
    from gvbench.harness import process_pool, sweep

    try:
        task = gvbench.tasks.get(args.task, **_task_options(args.task_option))
    except (KeyError, TypeError, ValueError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    out = Path(args.out or f"results/{args.task}.nc")
    options = dict(
        estimators=args.estimators,
        tau=args.tau,
        k=args.k,
        batch_size=args.batch_size,
        reps=args.reps,
        seed=args.seed if len(args.seed) > 1 else args.seed[0],
        path=out,
        progress=not args.no_progress,
        threads_per_cell=args.threads_per_cell,
    )
    start = time.perf_counter()
    try:
        if args.workers > 1:
            with process_pool(args.workers) as pool:
                ds = sweep(task, executor=pool, **options)
        else:
            ds = sweep(task, **options)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    elapsed = time.perf_counter() - start
    failed = int((ds["status"].astype(str).str.startswith("failed")).sum())
    print(f"wrote {out} ({int(ds['status'].size)} grid points, {elapsed:.1f} s)")
    if failed:
        raise SystemExit(f"gvbench: {failed} grid point(s) failed; see the 'status' variable")
    return out


def command_sweep(args: argparse.Namespace) -> int:
    run_sweep(args)
    return 0


def command_plot(args: argparse.Namespace) -> int:
    from gvbench.plots import plot_sweep

    path = Path(args.result)
    if not path.exists():
        raise SystemExit(f"gvbench: no such results file: {path}")
    for written in plot_sweep(path, out_dir=args.out_dir, metrics=args.metrics):
        print(f"wrote {written}")
    return 0


def command_train(args: argparse.Namespace) -> int:
    """Train on an experiment: one run from the options, or every run of a named preset."""
    import pandas as pd

    from gvbench.harness import process_pool
    from gvbench.listops.presets import run_preset, summary_table
    from gvbench.listops.train import TrainConfig, train

    out_dir = args.out_dir or f"results/{args.experiment}"
    if args.preset:
        try:
            if args.workers > 1:
                with process_pool(args.workers) as pool:
                    summary = run_preset(
                        args.preset,
                        out_dir,
                        executor=pool,
                        seed=args.seed,
                        progress=not args.no_progress,
                    )
            else:
                summary = run_preset(
                    args.preset, out_dir, seed=args.seed, progress=not args.no_progress
                )
        except KeyError as error:
            raise SystemExit(f"gvbench: {error}") from None
        tables = summary_table(summary)
        with pd.option_context("display.width", 120):
            print("Test accuracy (model selected on validation):")
            print(tables["accuracy"].round(3).to_string())
            print("\nGradient variance at a trained checkpoint (GR-MCK by K, and ST-GS):")
            print(tables["variance"].round(4).to_string())
        print(f"wrote {Path(out_dir) / (args.preset + '.nc')}")
        return 0
    try:
        config = TrainConfig(
            estimator=args.estimator,
            tau=args.tau,
            k=args.k,
            max_length=args.max_length,
            d_hidden=args.d_hidden,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            momentum=args.momentum,
            eval_every=args.eval_every,
            variance_every=args.variance_every,
            seed=args.seed,
        )
    except (KeyError, ValueError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    curves = train(config, out_dir=out_dir, progress=not args.no_progress)
    print(
        f"{config.name()}: best validation accuracy {curves.attrs['best_valid_accuracy']:.3f} "
        f"at step {curves.attrs['best_step']}; test accuracy {curves.attrs['test_accuracy']:.3f} "
        f"(majority class {curves.attrs['test_majority_accuracy']:.3f})"
    )
    print(f"wrote {Path(out_dir) / config.name() / 'curves.nc'}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """The paper-scale toy sweep and its figures (what `make demo` runs)."""
    from gvbench.harness import DEFAULT_K, DEFAULT_TAU
    from gvbench.harness.store import read
    from gvbench.plots import plot_sweep

    parser = build_parser()
    sweep_args = parser.parse_args(
        [
            "sweep",
            "toy",
            "--reps",
            str(args.reps),
            "--workers",
            str(args.workers),
            "--out",
            args.out,
            "--tau",
            *map(str, DEFAULT_TAU),
            "--k",
            *map(str, DEFAULT_K),
        ]
    )
    out = run_sweep(sweep_args)
    for written in plot_sweep(out):
        print(f"wrote {written}")
    ds = read(out).sel(batch_size=1)
    table = (ds["variance"] / ds["variance"].sel(estimator="gumbel_rao")).sel(
        estimator="st_gumbel_softmax"
    )
    print("\nVariance of ST-GS over GR-MCK on the toy task (same bias; > 1: Gumbel-Rao wins):")
    print(table.to_pandas().round(2).to_string())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gvbench",
        description="Gradient-variance analysis of estimators for discrete random variables.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "list", help="list estimators (with their properties) and tasks"
    ).set_defaults(run=command_list)

    sweep = commands.add_parser(
        "sweep",
        help="variance, bias² and MSE over a grid of τ, K and B; resumable",
        description="Measure every estimator on TASK over a grid and store an xarray Dataset "
        "(netCDF). Rerunning over an existing file computes only its missing cells.",
    )
    sweep.add_argument("task", help=f"task name ({', '.join(gvbench.tasks.available())})")
    sweep.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="NAME",
        help="estimators to measure (default: all but 'exact'; see `gvbench list`)",
    )
    sweep.add_argument(
        "--tau",
        nargs="+",
        type=float,
        default=[0.1, 0.5, 1.0],
        metavar="T",
        help="temperatures τ > 0 (default: 0.1 0.5 1)",
    )
    sweep.add_argument(
        "--k",
        nargs="+",
        type=int,
        default=[1, 10, 100],
        metavar="K",
        help="Monte Carlo samples K >= 1 for GR-MCK and RLOO (default: 1 10 100)",
    )
    sweep.add_argument(
        "--batch-size",
        nargs="+",
        type=int,
        default=[1],
        metavar="B",
        help="examples averaged into one gradient (default: 1)",
    )
    sweep.add_argument(
        "--reps", type=int, default=10_000, help="gradient draws per cell, >= 2 (default: 10000)"
    )
    sweep.add_argument(
        "--seed",
        nargs="+",
        type=int,
        default=[0],
        help="master seed; several add a 'seed' dimension (default: 0)",
    )
    sweep.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes running cells in parallel (default: 1, in-process)",
    )
    sweep.add_argument(
        "--threads-per-cell",
        type=int,
        default=1,
        help="torch threads inside a cell (fixed, so results do not depend on --workers)",
    )
    sweep.add_argument(
        "--task-option",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="task configuration, values as JSON (e.g. n=5 m=2 'theta=[0,1,2]')",
    )
    sweep.add_argument("--out", default=None, help="results file (default: results/TASK.nc)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(run=command_sweep)

    plot = commands.add_parser("plot", help="seaborn figures of a results file (PNG and PDF)")
    plot.add_argument("result", help="a netCDF file written by `gvbench sweep`")
    plot.add_argument("--out-dir", default=None, help="where figures go (default: beside the file)")
    plot.add_argument(
        "--metrics",
        nargs="+",
        default=["variance", "bias2", "mse"],
        choices=["variance", "variance_per_coord", "bias2", "mse", "cosine", "snr"],
    )
    plot.set_defaults(run=command_plot)

    train = commands.add_parser(
        "train",
        help="train a model of an experiment with an estimator (resumable), or a whole preset",
        description="Train with SGD, select on validation, report test accuracy; curves and "
        "checkpoints go to --out-dir and a rerun resumes. --preset runs a named grid.",
    )
    train.add_argument("experiment", choices=["listops"], help="the experiment")
    train.add_argument(
        "--preset", default=None, help="a named grid: small (2 CPU cores, minutes) or paper (GPU)"
    )
    train.add_argument(
        "--estimator", default="st_gumbel_softmax", help="a registered one-hot estimator"
    )
    train.add_argument("--tau", type=float, default=1.0, help="temperature τ > 0")
    train.add_argument("--k", type=int, default=1, help="K for GR-MCK / RLOO")
    train.add_argument(
        "--max-length", type=int, default=10, help="maximum tokens L (10, 25, 50 in the paper)"
    )
    train.add_argument("--steps", type=int, default=2000, help="SGD steps")
    train.add_argument("--batch-size", type=int, default=0, help="0: equal to L, as in the paper")
    train.add_argument("--lr", type=float, default=0.02)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--d-hidden", type=int, default=32)
    train.add_argument("--eval-every", type=int, default=100)
    train.add_argument("--variance-every", type=int, default=500, help="0: never")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=1, help="processes for a preset's runs")
    train.add_argument("--out-dir", default=None, help="default: results/EXPERIMENT")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=command_train)

    demo = commands.add_parser("demo", help="the paper-scale toy sweep with its figures")
    demo.add_argument("--reps", type=int, default=10_000)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--out", default="results/toy.nc")
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
