"""Named ListOps experiments: the paper's grid (for a GPU) and a small one for 2 CPU cores.

A preset trains every (L, τ, estimator) configuration through any executor, then measures
the gradient variance of ST-GS and GR-MCK over K at a briefly trained checkpoint per L, and
stores one summary Dataset: test accuracy by (estimator, τ, L) and variance by (τ, K, L).
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
from gvbench.listops.task import listops
from gvbench.listops.train import TrainConfig, train
from gvbench.training import train_many


@dataclasses.dataclass(frozen=True)
class Preset:
    max_lengths: tuple[int, ...]
    taus: tuple[float, ...]
    estimators: tuple[tuple[str, int], ...]  # (name, K); K ignored by estimators without one
    steps: int
    sizes: tuple[int, int, int]
    d_hidden: int
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int
    eval_every: int


PRESETS = {
    # Minutes on 2 CPU cores: L = 10, two temperatures, ST-GS against GR-MC10.
    "small": Preset(
        max_lengths=(10,),
        taus=(0.1, 1.0),
        estimators=(("st_gumbel_softmax", 1), ("gumbel_rao", 10)),
        steps=1500,
        sizes=(3000, 300, 300),
        d_hidden=32,
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
        eval_every=250,
    ),
    # The paper's grid (Paulus et al. 2021, §5.2): hours on a GPU.
    "paper": Preset(
        max_lengths=(10, 25, 50),
        taus=(0.01, 0.1, 1.0),
        estimators=(
            ("st_gumbel_softmax", 1),
            ("gumbel_rao", 10),
            ("gumbel_rao", 100),
            ("gumbel_rao", 1000),
        ),
        steps=50_000,
        sizes=(90_000, 5_000, 5_000),
        d_hidden=128,
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
        eval_every=1000,
    ),
}


VARIANCE_METRICS = ["variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se"]


def _label(name: str, k: int) -> str:
    return "ST-GS" if name == "st_gumbel_softmax" else f"GR-MC{k}"


def run_preset(
    name: str,
    out_dir: str | Path = "results/listops",
    executor: Any = None,
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Train and measure every configuration of preset ``name``; write ``out_dir/NAME.nc``."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown ListOps preset {name!r}; available: {', '.join(PRESETS)}"
        ) from None
    out_dir = Path(out_dir)
    configs = {
        (_label(est, k), tau, length): TrainConfig(
            estimator=est,
            tau=tau,
            k=k,
            max_length=length,
            d_hidden=preset.d_hidden,
            steps=preset.steps,
            sizes=preset.sizes,
            eval_every=preset.eval_every,
            variance_every=preset.steps,
            seed=seed,
        )
        for length in preset.max_lengths
        for tau in preset.taus
        for est, k in preset.estimators
    }
    results = train_many(
        train,
        list(configs.values()),
        out_dir / "runs",
        executor,
        progress=progress,
        desc=f"{name} preset runs",
    )
    accuracy = {key: float(r["test_accuracy"]) for key, r in zip(configs, results, strict=True)}
    labels = list(dict.fromkeys(key[0] for key in configs))
    grid = np.array(
        [
            [[accuracy[(lab, t, L)] for L in preset.max_lengths] for t in preset.taus]
            for lab in labels
        ]
    )
    lengths = list(preset.max_lengths)
    tasks = [
        listops(
            max_length=length,
            d_hidden=preset.d_hidden,
            train_steps=max(300, preset.steps // 5),
            seed=seed,
            checkpoint_dir=str(out_dir / "checkpoints"),
        )
        for length in lengths
    ]
    measured = sweep_over(
        tasks,
        {"max_length": lengths},
        folder=out_dir / f"{name}-variance",
        progress=progress,
        per_task=[{"batch_size": length} for length in lengths],  # B = L, as in training
        estimators=["st_gumbel_softmax", "gumbel_rao"],
        tau=list(preset.taus),
        k=list(preset.variance_k),
        reps=preset.variance_reps,
        seed=seed,
        executor=executor,
        reference_reps=preset.reference_reps,
    ).swap_dims(point="max_length")
    variance = (
        measured[VARIANCE_METRICS].sel(batch_size=measured["max_length"]).drop_vars("batch_size")
    )
    summary = variance.merge(
        xr.Dataset(
            {
                "test_accuracy": (
                    ("run", "tau", "max_length"),
                    grid,
                    {
                        "long_name": "test accuracy of the model selected on validation",
                        "units": "1",
                    },
                )
            },
            coords={
                "run": labels,
                "tau": list(preset.taus),
                "max_length": list(preset.max_lengths),
            },
        )
    )
    summary.attrs.update(
        preset=name,
        config=json.dumps(dataclasses.asdict(preset)),
        seed=seed,
        gvbench_version=gvbench.__version__,
    )
    write_atomic(summary, out_dir / f"{name}.nc")
    return summary


def summary_table(summary: xr.Dataset) -> dict[str, Any]:
    """The two tables of a preset, as pandas objects (for printing)."""
    accuracy = summary["test_accuracy"].to_dataframe().unstack("tau")["test_accuracy"]
    variance = (
        summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
    )
    st = (
        summary["variance"].sel(estimator="st_gumbel_softmax").isel(k=0).to_series().rename("ST-GS")
    )
    return {"accuracy": accuracy, "variance": variance.join(st)}
