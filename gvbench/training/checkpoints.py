"""A run's files: its checkpoint while it trains (atomic, with a digest), and when it is done
its learning curves and its best parameters."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from gvbench import provenance
from gvbench.atomic_files import save_torch
from gvbench.training.config import RunConfig, Train


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: damaged, of another run, or changed."""


# What every training checkpoint holds (a best-parameters checkpoint: config, params, step,
# digest). One of a run with a batch transform holds its generator too, "transform_generator"
# (see gvbench.training.runs.RunState): a run without one saves the keys it always saved.
CHECKPOINT_KEYS = ("config", "digest", "params", "optimizer", "generator", "estimator", "state")


def cached_checkpoint(train: Train[Any], run: RunConfig, folder: str | os.PathLike[str]) -> str:
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
    and optionally its best parameters as a checkpoint; return the curves.

    ``result``: the run's outcome from :func:`~gvbench.training.fit_runs`.
    """
    from gvbench.harness.store import write_atomic

    attrs = {
        "title": title,
        "config": json.dumps(config.as_dict(), sort_keys=True),
        "estimator": config.estimator,
        "best_step": result["best"]["step"],
        **figures,
        **provenance.stamp(),
    }
    if config.tau_schedule is not None:  # as the run applied it: where its annealing ends
        attrs["tau_schedule"] = str(config.temperature)
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
