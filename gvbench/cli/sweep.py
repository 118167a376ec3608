"""``gvbench sweep TASK``: variance, bias² and MSE over a grid of τ, K and B; resumable."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gvbench.tasks
from gvbench import engine
from gvbench.cli.options import at_least, cluster, positive_seconds, progress, reference_size
from gvbench.harness.cell import check_applicable
from gvbench.harness.sweep import (
    DEFAULT_K,
    DEFAULT_REPS,
    DEFAULT_TAU,
    DEFAULT_WARMUP,
    MAX_WARMUP_SECONDS,
    sweep,
)
from gvbench.tasks.memory import parse_memory


def task_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs as keywords, each value read as JSON where it is JSON."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-option takes key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def add_parser(commands: Any) -> None:
    sweep_parser = commands.add_parser(
        "sweep",
        parents=[cluster(1), progress()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="variance, bias² and MSE over a grid of τ, K and B; resumable",
        description="Measure every estimator on TASK over a grid and store an xarray Dataset "
        "(netCDF). Rerunning over an existing file computes only its missing cells.",
    )
    sweep_parser.add_argument("task", help=f"task name ({', '.join(gvbench.tasks.available())})")
    _grid(sweep_parser.add_argument_group("the grid"))
    _how(sweep_parser.add_argument_group("how it runs"))
    sweep_parser.set_defaults(run=run)


def _grid(group: Any) -> None:
    """What is measured: the estimators, τ, K, B, the draws, the reference, the seeds."""
    add = group.add_argument
    add(
        "--estimators",
        nargs="+",
        default=None,
        metavar="NAME",
        help="estimators to measure (default: those marked default in `gvbench list`)",
    )
    add(
        "--tau",
        nargs="+",
        type=float,
        default=list(DEFAULT_TAU),
        metavar="T",
        help="temperatures τ > 0",
    )
    add(
        "--k",
        nargs="+",
        type=int,
        default=list(DEFAULT_K),
        metavar="K",
        help="Monte Carlo samples K >= 1 for GR-MCK, RLOO and US-BL",
    )
    add(
        "--batch-size",
        nargs="+",
        type=int,
        default=[1],
        metavar="B",
        help="examples averaged into one gradient",
    )
    add("--reps", type=int, default=DEFAULT_REPS, help="gradient draws per cell, >= 4")
    add(
        "--reference-reps",
        type=reference_size,
        default="auto",
        help="RLOO draws of the reference where the task cannot enumerate (>= 2), or auto: "
        "until its noise is a tenth of the smallest bias² a cell resolves, at most the "
        "task's own size (4000 for gvbench's experiments); the choice is printed",
    )
    add(
        "--seed",
        nargs="+",
        type=int,
        default=[0],
        help="master seed; several add a 'seed' dimension",
    )


def memory_size(text: str) -> int:
    """An argparse type: a size like 4G or 512M, in bytes."""
    try:
        return parse_memory(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("memory ")) from None


def _how(group: Any) -> None:
    """How it runs: the warmup, the threads, the device, the task's options, the file."""
    add = group.add_argument
    add(
        "--warmup",
        type=at_least(0),
        default=DEFAULT_WARMUP,
        help="steps (of 16 draws) an estimator with state (REINFORCE, REBAR, RELAX) adapts at "
        "the fixed parameters before it is frozen and measured",
    )
    add(
        "--max-warmup-seconds",
        type=positive_seconds,
        default=MAX_WARMUP_SECONDS,
        help="the longest the adaptation of all cells may take (estimated from a few timed "
        "steps before any work); a longer plan is refused with its time",
    )
    add(
        "--time-budget",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="the longest the sweep may take: the warm-up and an auto reference shrink to fit "
        "(from a pilot before any work), and the plan says what precision that buys",
    )
    add(
        "--memory",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="what one pass of a ModuleTask's draws may take, e.g. 4G or 512M (default: half "
        "the memory available where it runs, measured by pilot passes); a cell whose one draw "
        "needs more fails, saying how much it needs",
    )
    add(
        "--threads-per-cell",
        type=int,
        default=1,
        help="torch threads inside a cell (fixed, so results do not depend on --workers)",
    )
    add(
        "--device",
        default=None,
        help="run the task on this torch device, e.g. cuda or cuda:1 (default: the CPU); "
        "draws and their reduction stay there, only metrics come back",
    )
    add(
        "--task-option",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="task configuration, values as JSON (e.g. n=5 m=2 'theta=[0,1,2]')",
    )
    add("--out", default=None, help="results file (default: results/TASK.nc)")


def run(args: argparse.Namespace) -> int:
    """The sweep, its file written; a non-zero exit where a grid point failed."""
    task = gvbench.tasks.get(args.task, **task_options(args.task_option))
    check_applicable(task, args.estimators, args.tau, args.k, args.batch_size)
    out = Path(args.out or f"results/{args.task}.nc")
    start = time.perf_counter()
    with engine.client(args.workers, args.scheduler) as executor:
        ds = sweep(
            task,
            estimators=args.estimators,
            tau=args.tau,
            k=args.k,
            batch_size=args.batch_size,
            reps=args.reps,
            reference_reps=args.reference_reps,
            seed=args.seed if len(args.seed) > 1 else args.seed[0],
            path=out,
            progress=not args.no_progress,
            threads_per_cell=args.threads_per_cell,
            device=args.device,
            warmup=args.warmup,
            max_warmup_seconds=args.max_warmup_seconds,
            memory=args.memory,
            time_budget=args.time_budget,
            confirm=ask if sys.stdin.isatty() else None,
            executor=executor,
        )
    written_sweep(ds, out, time.perf_counter() - start)
    return 0


def ask(question: str) -> bool:
    """Whether the person at the terminal, shown ``question``, answers yes."""
    print(f"gvbench: {question}", file=sys.stderr)
    try:
        return input("compute it anyway? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def written_sweep(ds: Any, out: Path, seconds: float) -> None:
    """Say where the sweep went; exit non-zero where a grid point failed."""
    print(f"wrote {out} ({int(ds['status'].size)} grid points, {seconds:.1f} s)")
    failed = int((ds["status"].astype(str).str.startswith("failed")).sum())
    if failed:
        raise SystemExit(f"gvbench: {failed} grid point(s) failed; see the 'status' variable")
