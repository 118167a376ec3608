"""Many configurations: those that may train as one grouped, the groups run on an executor,
and a grid's results gathered as arrays."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from gvbench import engine
from gvbench.training.config import ConfigT, Train, group_key
from gvbench.training.runs import TrainingDiverged


def _train_group(
    train: Train[ConfigT], configs: list[ConfigT], out_dir: str
) -> list[dict[str, Any]]:
    # One run of a group, a grid or a search that diverges is a result (that learning rate is
    # too high), not a reason to stop the others; retrying would diverge again.
    return [
        {"diverged": str(result)} if isinstance(result, TrainingDiverged) else dict(result.attrs)
        for result in train(configs, out_dir=out_dir, progress=False)
    ]


def train_many(
    train: Train[ConfigT],
    configs: Sequence[ConfigT],
    out_dir: str | os.PathLike[str],
    executor: Any = None,
    *,
    progress: bool = True,
    desc: str = "training runs",
) -> list[dict[str, Any]]:
    """Run every configuration, those that differ only in seed, lr, momentum and τ as one
    (``train``: an experiment's :meth:`~gvbench.experiment.Experiment.train`); their curves'
    attrs, in order (``{"diverged": message}`` for a run whose training diverged).

    ``executor``: ``None`` (in-process), a ``concurrent.futures`` executor or a
    ``distributed.Client`` (see :mod:`gvbench.engine`): one job per group.
    """
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(group_key(config), []).append(index)
    members = list(groups.values())
    # Longest first: on a few workers, the stage ends when its last group does.
    order = sorted(range(len(members)), key=lambda n: -sum(configs[i].work() for i in members[n]))
    jobs = [
        (number, (train, [configs[i] for i in members[number]], str(out_dir))) for number in order
    ]
    # Each run checkpoints as it goes: a group whose worker dies is rerun by the engine and
    # resumes from its runs' last checkpoints.
    results: dict[int, dict[str, Any]] = {}
    with tqdm(total=len(configs), disable=not progress, unit="run", desc=desc) as bar:
        for number, attrs in engine.run(_train_group, jobs, executor):
            for index, run_attrs in zip(members[number], attrs, strict=True):
                results[index] = run_attrs
            bar.set_postfix_str(configs[members[number][0]].name())
            bar.update(len(members[number]))
    return [results[index] for index in range(len(configs))]


def train_grid(
    train: Train[ConfigT],
    configs: Mapping[tuple[Any, ...], ConfigT],
    dims: Sequence[str],
    figures: Mapping[str, tuple[str, str]],
    out_dir: str | os.PathLike[str],
    executor: Any = None,
    *,
    curves: Sequence[str] = (),
    progress: bool = True,
    desc: str = "training runs",
) -> xr.Dataset:
    """Train a grid of runs and gather their results as arrays over the grid — the shape every
    experiment's preset shares.

    Args:
        configs: one run per key, a tuple of coordinate values in the order of ``dims``.
        figures: the run attributes to gather, ``{name: (long_name, units)}``.
        curves: learning-curve variables (``curves.nc``) to gather over ``(*dims, step)``.

    Returns:
        Dataset with every figure over ``dims`` (NaN where the grid has no run or the run
        diverged; ``diverged`` says which) and every curve over ``(*dims, step)`` (NaN where a
        run did not measure it).
    """
    keys = list(configs)
    if any(len(key) != len(dims) for key in keys):
        raise ValueError(f"every key of configs must have one value per dim {tuple(dims)}")
    results = train_many(
        train, list(configs.values()), out_dir, executor, progress=progress, desc=desc
    )
    axes = {dim: list(dict.fromkeys(key[i] for key in keys)) for i, dim in enumerate(dims)}
    where = [
        tuple(axes[dim].index(value) for dim, value in zip(dims, key, strict=True)) for key in keys
    ]
    shape = tuple(len(axes[dim]) for dim in dims)
    data = {}
    for name, (long_name, units) in figures.items():
        values = np.full(shape, np.nan)
        for index, attrs in zip(where, results, strict=True):
            values[index] = float(attrs.get(name, np.nan))
        data[name] = (tuple(dims), values, {"long_name": long_name, "units": units})
    diverged = np.zeros(shape, dtype=bool)
    for index, attrs in zip(where, results, strict=True):
        diverged[index] = "diverged" in attrs
    data["diverged"] = (tuple(dims), diverged, {"long_name": "the run's training diverged"})
    coords: dict[str, Any] = {
        dim: np.array(values, dtype=object) if isinstance(values[0], str) else np.array(values)
        for dim, values in axes.items()
    }
    if curves:
        runs = [
            xr.Dataset(coords={"step": np.array([], dtype=np.int64)})
            if "diverged" in attrs
            else xr.load_dataset(Path(out_dir) / config.name() / "curves.nc")
            for config, attrs in zip(configs.values(), results, strict=True)
        ]
        steps = np.unique(np.concatenate([run["step"].values for run in runs]))
        coords["step"] = steps
        for name in curves:
            values = np.full((*shape, len(steps)), np.nan)
            for index, run in zip(where, runs, strict=True):
                if name in run:
                    values[index][np.searchsorted(steps, run["step"].values)] = run[name].values
            units = next((run[name].attrs.get("units", "1") for run in runs if name in run), "1")
            data[name] = ((*dims, "step"), values, {"units": units})
    return xr.Dataset(data, coords=coords)
