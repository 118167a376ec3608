"""``gvbench train NAME``: one run (several seeds as one), a random search, or a preset of an
installed experiment. Its options are the experiment's configuration fields, each with the
help its dataclass field carries (``field(metadata={"help": …})``)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from gvbench import engine, study
from gvbench.cli.options import at_least, cluster, progress
from gvbench.experiment import Experiment
from gvbench.harness.store import write_atomic
from gvbench.training import random_search


def experiments() -> dict[str, Experiment]:
    """The installed studies that train a model."""
    return {n: s for n, s in study.registered().items() if isinstance(s, Experiment)}


def add_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train an experiment's model with an estimator (resumable), a random search, or "
        "a preset",
        description="Train with SGD (momentum), select on validation, report test figures; "
        "curves and checkpoints go to --out-dir and a rerun resumes. --search N tunes lr and "
        "momentum by random search; --preset runs a named grid. `gvbench train EXPERIMENT "
        "--help` lists the experiment's own options with their defaults.",
    )
    named = train.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, experiment in experiments().items():
        _add_experiment(named, name, experiment)
    train.set_defaults(run=run)


def field_help(config_type: type, name: str) -> str | None:
    """The help of field ``name``: its own, or that of the class it overrides a default of."""
    for cls in config_type.__mro__:
        field = getattr(cls, "__dataclass_fields__", {}).get(name)
        if field is not None and "help" in field.metadata:
            return str(field.metadata["help"])
    return None


def _field_option(config_type: type, field: dataclasses.Field, hints: dict[str, Any]) -> dict:
    """argparse keywords for a configuration field, from its type and default."""
    kind = hints[field.name]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is tuple:
        return {"type": args[0], "nargs": len(args), "default": field.default}
    base = args[0] if args and typing.get_origin(kind) is not None else kind
    if base is bool:
        return {"action": argparse.BooleanOptionalAction, "default": field.default}
    several = {"nargs": "+", "default": [field.default]} if field.name == "seed" else {}
    return {"type": base if base in (int, float, str) else str, "default": field.default} | several


def _add_experiment(named: Any, name: str, experiment: Experiment) -> None:
    """`gvbench train NAME`: its configuration's fields as options, with their defaults."""
    command = named.add_parser(
        name,
        parents=[cluster(1), progress()],
        help=experiment.title,
        description=f"Train {experiment.title}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = command.add_argument_group("what to run")
    run.add_argument(
        "--preset",
        default=None,
        help=f"a named grid: {', '.join(experiment.presets) or 'none defined'}",
    )
    run.add_argument(
        "--search",
        type=at_least(0),
        default=0,
        metavar="N",
        help="random search: N trials over lr and momentum (0: one run)",
    )
    run.add_argument("--out-dir", default=f"results/{name}", help="curves and checkpoints")
    options = command.add_argument_group(f"the {name} run")
    config_type = experiment.Config
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        text = field_help(config_type, field.name)
        if text is None:  # still an option: a missing help must not hide the field
            warnings.warn(
                f"{config_type.__name__}.{field.name} has no help (field metadata 'help')",
                stacklevel=2,
            )
            text = "(undocumented)"
        options.add_argument(
            "--" + field.name.replace("_", "-"),
            help=text,
            **_field_option(config_type, field, hints),
        )


def _configs(args: argparse.Namespace, experiment: Experiment) -> list[Any]:
    """The experiment's configuration for each ``--seed``, from the options it has."""
    fields = {f.name for f in dataclasses.fields(experiment.Config) if f.init}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    given = {k: tuple(v) if isinstance(v, list) and k != "seed" else v for k, v in given.items()}
    seeds = given.pop("seed", [0])
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seed lists a seed twice: {' '.join(map(str, seeds))}")
    return [experiment.Config(**given, seed=seed) for seed in seeds]


def run(args: argparse.Namespace) -> int:
    """Train on an experiment: one run, a random search over it, or a named preset."""
    experiment = experiments()[args.experiment]
    if args.preset and args.search:
        raise ValueError(
            "--search and --preset are exclusive: a preset names its own runs and "
            "searches (run the search without --preset)"
        )
    if args.preset and args.tau_schedule is not None:
        raise ValueError(
            "--tau-schedule and --preset are exclusive: a preset names its own runs' τ (train "
            "one run with --tau-schedule instead)"
        )
    if args.preset and len(args.seed) > 1:
        raise ValueError("--preset takes one --seed (its first seed)")
    configs = [] if args.preset else _configs(args, experiment)
    if args.search and len(configs) > 1:
        raise ValueError("--search takes one --seed (it seeds the search)")
    with engine.client(args.workers, args.scheduler) as pool:
        if args.preset:
            return _preset(args, experiment, pool)
        if args.search:
            return _search(args, experiment, configs[0], pool)
        # Every seed in one vectorised loop: seed 3 among eight is seed 3 alone, bit for bit.
        results = experiment.train(configs, out_dir=args.out_dir, progress=not args.no_progress)
    return _said(configs, results, Path(args.out_dir))


def _preset(args: argparse.Namespace, experiment: Experiment, pool: Any) -> int:
    run = study.PresetRun(
        executor=pool,
        seed=args.seed[0],
        progress=not args.no_progress,
        device=args.device,
        data_dir=getattr(args, "data_dir", None),
    )
    summary = experiment.run_preset(args.preset, args.out_dir, run)
    with pd.option_context("display.width", 150):
        for title, table in experiment.summary_table(summary).items():
            print(f"\n{title}:\n{table.round(4).to_string()}")
    print(f"wrote {Path(args.out_dir) / (args.preset + '.nc')}")
    return 0


def _search(args: argparse.Namespace, experiment: Experiment, config: Any, pool: Any) -> int:
    result = random_search(
        experiment.train,
        config,
        args.search,
        selection=f"best_{experiment.selection}",
        higher_is_better=experiment.higher_is_better,
        out_dir=Path(args.out_dir) / "search",
        seed=config.seed,
        executor=pool,
        progress=not args.no_progress,
    )
    print(result.to_dataframe().round(4).to_string())
    print(f"best: {result.attrs['best_config']}")
    write_atomic(result, Path(args.out_dir) / f"search-{config.name()}.nc")
    return 0


def _said(configs: list[Any], results: list[Any], out_dir: Path) -> int:
    """Each run's figures and curves file; a one-line exit per run that diverged."""
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
        print(f"wrote {out_dir / config.name() / 'curves.nc'}")
    if diverged:
        raise SystemExit("\n".join(diverged))
    return 0
