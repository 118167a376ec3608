"""Random search over learning rate, momentum and temperature, as the paper tunes each
estimator."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from gvbench.training.config import ConfigT, Train
from gvbench.training.grid import train_many
from gvbench.training.runs import TrainingDiverged


def random_search(
    train: Train[ConfigT], base: ConfigT, trials: int = 20, **options: Any
) -> xr.Dataset:
    """:func:`random_searches` of one base configuration."""
    return random_searches(train, [base], trials, **options)[0]


def random_searches(
    train: Train[ConfigT],
    bases: Sequence[ConfigT],
    trials: int = 20,
    *,
    lr: tuple[float, float] = (1e-3, 1e-1),
    momentum: tuple[float, float] | None = (0.5, 0.99),
    tau: tuple[float, float] | None = None,
    selection: str,
    higher_is_better: bool,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    executor: Any = None,
    progress: bool = True,
) -> list[xr.Dataset]:
    """Random search over learning rate (log-uniform), momentum (uniform) and, for estimators
    that take one, temperature τ (log-uniform), as the paper tunes each estimator (twenty
    trials), for every configuration in ``bases``. ``momentum=None`` or ``tau=None`` keeps the
    base's value. All trials run through one :func:`~gvbench.training.train_many` (a cluster
    sees every trial at once) and are resumable like any run.

    ``train`` must return, per configuration, curves whose attrs hold ``selection`` or a
    :class:`~gvbench.training.TrainingDiverged`. Trials that differ only in lr and momentum
    train as one. A trial whose training diverges scores NaN and is never chosen.

    Returns:
        One Dataset per base, over ``trial``, with ``lr``, ``momentum``, ``tau`` and the
        selection score; attrs name the best trial and its configuration.

    Raises:
        TrainingDiverged: every trial of a base diverged.
    """
    scheduled = [base.name() for base in bases if base.tau_schedule is not None]
    if tau is not None and scheduled:
        raise ValueError(
            f"tau: a τ range cannot be searched for a run whose tau_schedule sets τ at every "
            f"step ({scheduled[0]}); pass tau=None to search lr and momentum only"
        )
    # Each base's trials are drawn from the same seed: adding a base changes no other.
    configs = [
        config
        for base in bases
        for config in _trials(base, trials, lr, momentum, tau, np.random.default_rng(seed))
    ]
    results = train_many(
        train, configs, out_dir, executor, progress=progress, desc="random-search trials"
    )
    searches = []
    for start in range(0, len(configs), trials):
        tried = configs[start : start + trials]
        # NaN: the trial diverged.
        scores = np.array(
            [float(r.get(selection, np.nan)) for r in results[start : start + trials]]
        )
        if not np.isfinite(scores).any():
            raise TrainingDiverged(
                f"all {trials} random-search trials of {tried[0].estimator} diverged (lr in "
                f"[{lr[0]:g}, {lr[1]:g}]): lower the learning-rate range"
            )
        searches.append(_search(tried, scores, selection, higher_is_better))
    return searches


def _trials(
    base: ConfigT,
    trials: int,
    lr: tuple[float, float],
    momentum: tuple[float, float] | None,
    tau: tuple[float, float] | None,
    rng: np.random.Generator,
) -> list[ConfigT]:
    """``trials`` copies of ``base`` with lr, momentum and τ drawn from ``rng`` in that order."""
    from gvbench.estimators import info

    tunes_tau = tau is not None and "tau" in info(base.estimator).hyper

    def log_uniform(low: float, high: float) -> float:
        return float(10 ** rng.uniform(np.log10(low), np.log10(high)))

    configs = []
    for _ in range(trials):
        drawn = {
            "lr": log_uniform(*lr),
            "momentum": float(rng.uniform(*momentum)) if momentum else base.momentum,
        }
        if tau is not None:
            drawn["tau"] = log_uniform(*tau) if tunes_tau else base.tau
        configs.append(dataclasses.replace(base, **drawn))
    return configs


def _search(
    tried: Sequence[ConfigT], scores: np.ndarray, selection: str, higher_is_better: bool
) -> xr.Dataset:
    """One base's trials and their scores, with the best (a finite score) named."""
    finite = np.where(np.isfinite(scores), scores, -np.inf if higher_is_better else np.inf)
    best = int(np.argmax(finite) if higher_is_better else np.argmin(finite))
    return xr.Dataset(
        {
            "lr": ("trial", np.array([c.lr for c in tried])),
            "momentum": ("trial", np.array([c.momentum for c in tried])),
            "tau": ("trial", np.array([c.tau for c in tried])),
            selection: ("trial", scores),
        },
        coords={"trial": np.arange(len(tried))},
        attrs={
            "best_trial": best,
            "best_config": json.dumps(tried[best].as_dict(), sort_keys=True),
        },
    )
