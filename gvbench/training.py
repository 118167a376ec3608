"""What every training run needs around its loop (:mod:`gvbench.run_group`): a
configuration base, which runs may train as one, atomic checkpoints with digests, learning
curves as xarray, grids of runs and random search."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from gvbench import engine, provenance
from gvbench.atomic_files import save_torch
from gvbench.estimators.validation import check_count, check_real, check_tau


class TrainingDiverged(ValueError):
    """The training loss or gradient stopped being finite; the last checkpoint is kept."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: damaged, of another run, or changed."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The fields every training run has; an experiment subclasses it with its own.

    Validated on construction (unknown estimator, τ ≤ 0, K below the estimator's minimum,
    counts below their least value, a learning rate or momentum out of range) so that a bad run
    fails before any work. ``threads`` fixes torch's intra-op threads for the run: the same
    configuration gives the same numbers however many runs share the machine. ``device``
    is where it trains (``"cpu"``, ``"cuda"``, ``"cuda:1"``); it is part of the run's name,
    since another device gives other (equally valid) numbers.
    """

    estimator: str = "st_gumbel_softmax"
    tau: float = 1.0
    k: int = 1
    steps: int = 2000
    lr: float = 0.05
    momentum: float = 0.9
    eval_every: int = 100
    variance_every: int = 500
    variance_reps: int = 32
    seed: int = 0
    threads: int = 1
    device: str = "cpu"

    # Integer fields and their least value.
    COUNTS: ClassVar[dict[str, int]] = {
        "steps": 1,
        "eval_every": 1,
        "variance_every": 0,
        "variance_reps": 2,
        "seed": 0,
        "threads": 1,
        "k": 1,
    }

    def __post_init__(self) -> None:
        from gvbench.estimators import get, info

        if not isinstance(self.estimator, str):
            raise TypeError(f"estimator must be a registered name, got {self.estimator!r}")
        if info(self.estimator).exact:
            raise ValueError(
                "estimator exact enumerates every joint outcome of the model's choices; it is a "
                "reference for the harness, not a training estimator"
            )
        get(self.estimator, **self.estimator_options())  # KeyError / ValueError naming the option
        for name, least in self.COUNTS.items():
            check_count(getattr(self, name), name, least, 2**62)
        check_tau(self.tau)  # even where the estimator takes none: a τ ≤ 0 is a mistake
        lr, momentum = check_real(self.lr, "lr"), check_real(self.momentum, "momentum")
        largest = float(torch.finfo(torch.float32).max)  # the optimiser holds it as float32
        if not (0 < lr <= largest):
            raise ValueError(f"lr must be a number in (0, {largest:.3g}], got {self.lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        from gvbench.tasks.base import check_device

        check_device(self.device)

    @property
    def batch(self) -> int:
        """Examples per training step."""
        return getattr(self, "batch_size", 1)

    def work(self) -> float:
        """A rough relative cost of training this run: steps × batch × (1 + log K).

        Only the order of groups on an executor reads it (the costliest start first, so that
        the last one to finish is not a long one started late); it changes no number.
        """
        return self.steps * self.batch * (1.0 + math.log(self.k))

    def estimator_options(self) -> dict[str, Any]:
        """τ and K where the estimator takes them."""
        from gvbench.estimators import info

        return {h: getattr(self, h) for h in info(self.estimator).hyper}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def prefix(self) -> str:
        """The experiment's part of the run's name."""
        return "run"

    def name(self) -> str:
        """Readable, and unique per configuration (a short hash of every field)."""
        options = "".join(f"-{k}{v:g}" for k, v in self.estimator_options().items())
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.prefix()}-{self.estimator}{options}-seed{self.seed}-{digest}"


def cached_checkpoint(train: Any, run: RunConfig, folder: str | os.PathLike[str]) -> str:
    """The best-parameters checkpoint of ``run`` in ``folder``, training it first if missing."""
    path = Path(folder) / f"{run.name()}.pt"
    if not path.exists():
        # Minutes on a CPU the first time: its own progress bar names what it trains. A task
        # is built where no caller's progress flag reaches (on a worker too), so the bar
        # follows tqdm's own switch, which `--no-progress` sets for a command's processes.
        bars = os.environ.get("TQDM_DISABLE", "").lower() in ("", "0", "false")
        train(run, out_dir=Path(folder) / "runs", progress=bars, final_checkpoints=[path])
    return str(path)


def finish_run(
    run_dir: str | os.PathLike[str],
    config: RunConfig,
    result: Mapping[str, Any],
    title: str,
    figures: Mapping[str, Any],
    units: Mapping[str, str],
    final_checkpoint: str | os.PathLike[str] | None = None,
) -> xr.Dataset:
    """Write a finished run's curves (``run_dir/curves.nc``) with its figures and provenance,
    and optionally its best parameters as a checkpoint; return the curves."""
    from gvbench.harness.store import write_atomic

    attrs = {
        "title": title,
        "config": json.dumps(config.as_dict(), sort_keys=True),
        "estimator": config.estimator,
        "best_step": result["best"]["step"],
        **figures,
        **provenance.stamp(),
    }
    rows = [{k: v for k, v in row.items() if k != "selection"} for row in result["rows"]]
    curves = curves_dataset(rows, attrs, {"train_loss": "nats", **units})
    write_atomic(curves, Path(run_dir) / "curves.nc")
    if final_checkpoint is not None:
        best = result["best"]
        save_torch(
            {
                "config": config.as_dict(),
                "params": best["params"],
                "step": best["step"],
                "digest": checkpoint_digest(config.as_dict(), best["params"], best["step"]),
            },
            final_checkpoint,
        )
    return curves


def curves_dataset(
    rows: Sequence[Mapping[str, float]], attrs: Mapping[str, Any], units: Mapping[str, str]
) -> xr.Dataset:
    """Rows of ``{"step": …, metric: …}`` as a Dataset over ``step`` (NaN where not measured)."""
    steps = np.array([int(row["step"]) for row in rows], dtype=np.int64)
    names = sorted({key for row in rows for key in row if key != "step"})
    data = {
        name: (
            "step",
            np.array([float(row.get(name, np.nan)) for row in rows]),
            {"units": units.get(name, "1")},
        )
        for name in names
    }
    return xr.Dataset(data, coords={"step": steps}, attrs=dict(attrs))


CHECKPOINT_KEYS = ("config", "digest", "params", "optimizer", "generator", "estimator", "state")


def checkpoint_digest(
    config: Mapping[str, Any], params: Mapping[str, torch.Tensor], step: int
) -> str:
    """SHA-256 of a checkpoint's configuration, step and parameter values: what proves that
    the parameters are the ones its run saved, unchanged since."""
    digest = hashlib.sha256(json.dumps([dict(config), step], sort_keys=True).encode())
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's best parameters as :func:`finish_run` saved them (``--checkpoint`` of a sweep):
    ``{"config", "params", "step"}``, or a :class:`CheckpointError` of one line naming the
    file where it is not such a file, was changed since it was saved, or is not finite."""
    saved = _load(path, "train the run again to rewrite it")
    missing = [k for k in ("config", "params", "step", "digest") if k not in saved]
    if missing or not isinstance(saved["config"], dict) or not isinstance(saved["params"], dict):
        raise CheckpointError(
            f"{path} is not a run's best-parameters checkpoint (no "
            f"{', '.join(map(repr, missing)) or 'config/params mapping'}); pass one that "
            "gvbench train wrote"
        )
    _check_values(path, saved["config"], saved["params"], saved["step"], saved["digest"], "")
    return saved


def _load(path: str | os.PathLike[str], fix: str) -> Any:
    """``torch.load`` of a file gvbench wrote, any failure a one-line :class:`CheckpointError`.

    Tensors, numbers, strings and containers only (``weights_only``): a checkpoint is data,
    and one passed to ``--checkpoint`` may come from anywhere.
    """
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # whatever a truncated or foreign file makes the unpickler raise
        cause = str(error).splitlines()[0] if str(error) else "unreadable"
        raise CheckpointError(
            f"{path} is damaged ({type(error).__name__}: {cause}); {fix}"
        ) from None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path} is not a gvbench checkpoint (a {type(saved).__name__}); {fix}"
        )
    return saved


def _check_values(
    path: str | os.PathLike[str],
    config: Mapping[str, Any],
    params: Mapping[str, Any],
    step: Any,
    digest: Any,
    fix: str,
) -> None:
    fix = f"; {fix}" if fix else ""
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in params.values()):
        raise CheckpointError(f"{path} holds parameters that are not float tensors{fix}")
    if not isinstance(step, int) or digest != checkpoint_digest(config, params, step):
        raise CheckpointError(f"{path} does not match its digest (changed since it was saved){fix}")
    if not all(bool(torch.isfinite(v).all()) for v in params.values()):
        raise CheckpointError(
            f"{path} holds non-finite parameters (training diverged before it was saved?){fix}"
        )


def read_checkpoint(
    path: str | os.PathLike[str], config: Mapping[str, Any], params: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """The checkpoint at ``path`` of the run ``config`` whose parameters are like ``params``;
    a :class:`CheckpointError` of one line naming the file where it is damaged, of another
    run, changed since it was saved, or holds non-finite parameters."""
    fix = "remove it to train this run afresh, or choose another folder"
    saved = _load(path, fix)
    missing = [k for k in CHECKPOINT_KEYS if k not in saved]
    if missing:
        raise CheckpointError(
            f"{path} is not a gvbench training checkpoint (no {', '.join(map(repr, missing))}); "
            f"{fix}"
        )
    if saved["config"] != dict(config):
        theirs = saved["config"] if isinstance(saved["config"], dict) else {}
        changed = sorted(k for k in set(theirs) | set(config) if theirs.get(k) != config.get(k))
        raise CheckpointError(
            f"{path} belongs to another run (its configuration differs in "
            f"{', '.join(changed)}); {fix}"
        )
    stored = saved["params"]
    if not isinstance(stored, dict) or {
        name: (tuple(v.shape), v.dtype) for name, v in stored.items() if isinstance(v, torch.Tensor)
    } != {name: (tuple(v.shape), v.dtype) for name, v in params.items()}:
        raise CheckpointError(f"{path} holds parameters of another model; {fix}")
    step = saved["state"].get("step") if isinstance(saved["state"], dict) else None
    _check_values(path, config, stored, step, saved["digest"], fix)
    return saved


# Fields in which runs trained as one may differ; τ too where the estimator takes it, on one
# side of τ = 1 (GR-MCK works in float64 above it).
PER_RUN = ("seed", "lr", "momentum")


def _shared(config: RunConfig) -> dict[str, Any]:
    shared = {k: v for k, v in config.as_dict().items() if k not in PER_RUN}
    if "tau" in config.estimator_options():
        shared["tau"] = "above 1" if config.tau > 1.0 else "at most 1"
    return shared


def group_key(config: RunConfig) -> str:
    """What runs must share to train as one: every field but seed, lr, momentum and τ (its
    side of τ = 1 where the estimator takes a τ, all of it where it takes none)."""
    return json.dumps([type(config).__qualname__, _shared(config)], sort_keys=True, default=str)


def check_one_group(configs: Sequence[RunConfig]) -> None:
    """A ValueError naming the fields where ``configs`` cannot train as one."""
    if len({group_key(c) for c in configs}) > 1:
        first = _shared(configs[0])
        differ = sorted(
            {k for c in configs[1:] for k, v in _shared(c).items() if first.get(k) != v} or {"type"}
        )
        raise ValueError(
            "runs trained as one may differ only in seed, lr, momentum and τ (on one side of "
            "τ = 1, where the estimator takes one); these differ in " + ", ".join(differ)
        )


def _train_group(train: Any, configs: list[RunConfig], out_dir: str) -> list[dict[str, Any]]:
    # One run of a group, a grid or a search that diverges is a result (that learning rate is
    # too high), not a reason to stop the others; retrying would diverge again.
    return [
        {"diverged": str(result)} if isinstance(result, TrainingDiverged) else dict(result.attrs)
        for result in train(configs, out_dir=out_dir, progress=False)
    ]


def train_many(
    train: Any,
    configs: Sequence[RunConfig],
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
    train: Any,
    configs: Mapping[tuple[Any, ...], RunConfig],
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


def random_search(train: Any, base: Any, trials: int = 20, **options: Any) -> xr.Dataset:
    """:func:`random_searches` of one base configuration."""
    return random_searches(train, [base], trials, **options)[0]


def random_searches(
    train: Any,
    bases: Sequence[Any],
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
    base's value. All trials run through one :func:`train_many` (a cluster sees every trial at
    once) and are resumable like any run.

    ``train(configs, out_dir=…, progress=False)`` (an experiment's
    :meth:`~gvbench.experiment.Experiment.train`) must return, per configuration, curves
    whose attrs hold ``selection`` or a :class:`TrainingDiverged`; a base is a frozen
    dataclass config with ``lr``, ``momentum`` and ``tau``. Trials that differ only in lr and
    momentum train as one.
    A trial whose training diverges scores NaN and is never chosen.

    Returns:
        One Dataset per base, over ``trial``, with ``lr``, ``momentum``, ``tau`` and the
        selection score; attrs name the best trial and its configuration.

    Raises:
        TrainingDiverged: every trial of a base diverged.
    """
    from gvbench.estimators import info

    configs = []
    for base in bases:
        # Each base's trials are drawn from the same seed: adding a base changes no other.
        rng = np.random.default_rng(seed)
        tunes_tau = tau is not None and "tau" in info(base.estimator).hyper

        def log_uniform(low: float, high: float, rng: Any = rng) -> float:
            return float(10 ** rng.uniform(np.log10(low), np.log10(high)))

        for _ in range(trials):
            drawn = {
                "lr": log_uniform(*lr),
                "momentum": float(rng.uniform(*momentum)) if momentum else base.momentum,
            }
            if tau is not None:
                drawn["tau"] = log_uniform(*tau) if tunes_tau else base.tau
            configs.append(dataclasses.replace(base, **drawn))
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
        finite = np.where(np.isfinite(scores), scores, -np.inf if higher_is_better else np.inf)
        best = int(np.argmax(finite) if higher_is_better else np.argmin(finite))
        searches.append(
            xr.Dataset(
                {
                    "lr": ("trial", np.array([c.lr for c in tried])),
                    "momentum": ("trial", np.array([c.momentum for c in tried])),
                    "tau": ("trial", np.array([c.tau for c in tried])),
                    selection: ("trial", scores),
                },
                coords={"trial": np.arange(trials)},
                attrs={
                    "best_trial": best,
                    "best_config": json.dumps(dataclasses.asdict(tried[best]), sort_keys=True),
                },
            )
        )
    return searches
