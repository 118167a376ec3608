"""Named ListOps experiments (paper §5.2): the paper's grid for a GPU, a small and a medium
one for 2 CPU cores and a tiny one that checks the pipeline in seconds.

A preset trains every (estimator, τ, L, seed) configuration through any executor, then
measures the gradient variance of ST-GS and GR-MCK over K at a briefly trained checkpoint per
L, and stores one summary Dataset: test accuracy by (run, τ, L, seed), the gradient variance
measured during training by step, and the variance by (τ, K, L).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from gvbench import provenance
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.listops.experiment import LISTOPS, TrainConfig, listops
from gvbench.training import train_grid

VARIANCE_METRICS = ["variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se"]
CURVES = ["gradient_variance", "gradient_variance_se", "valid_accuracy"]


@dataclasses.dataclass(frozen=True)
class Preset:
    max_lengths: tuple[int, ...]
    taus: tuple[float, ...]
    runs: tuple[tuple[str, str, int], ...]  # (label, estimator, K)
    seeds: int  # seeds 0 … seeds − 1 of every configuration
    steps: int
    sizes: tuple[int, int, int]
    d_hidden: int
    lr: float
    eval_every: int
    variance_every: int  # the gradient variance is measured during training this often
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int


PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        max_lengths=(6,),
        taus=(0.01, 1.0),
        runs=(("ST-GS", "st_gumbel_softmax", 1), ("GR-MC10", "gumbel_rao", 10)),
        seeds=2,
        steps=20,
        sizes=(200, 40, 40),
        d_hidden=8,
        lr=0.02,
        eval_every=10,
        variance_every=10,
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
    ),
    # 6-7 min on 2 CPU cores (measured, Dask with 2 workers): L = 10, the paper's three
    # temperatures, four seeds.
    "small": Preset(
        max_lengths=(10,),
        taus=(0.01, 0.1, 1.0),
        runs=(
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
            ("GR-MC100", "gumbel_rao", 100),
        ),
        seeds=4,
        steps=2000,
        sizes=(5000, 500, 500),
        d_hidden=32,
        lr=0.02,
        eval_every=250,
        variance_every=500,
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
    ),
    # The paper's grid (Paulus et al. 2021, §5.2): its training at least 3.5 hours on one
    # H200 (counted by suites/benchmarks/step_cost.py, launch-bound; 6.4 if nothing overlaps).
    "paper": Preset(
        max_lengths=(10, 25, 50),
        taus=(0.01, 0.1, 1.0),
        runs=(
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
            ("GR-MC100", "gumbel_rao", 100),
            ("GR-MC1000", "gumbel_rao", 1000),
        ),
        seeds=5,
        steps=50_000,
        sizes=(90_000, 5_000, 5_000),
        d_hidden=128,
        lr=0.02,
        eval_every=1000,
        variance_every=5000,
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
    ),
}


# Further on 2 CPU cores (a cell's τ and seeds train as one stack): five times small's steps
# on four times its training data.
PRESETS["medium"] = dataclasses.replace(
    PRESETS["small"], steps=10_000, sizes=(20_000, 1000, 1000), eval_every=500, variance_every=2500
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown ListOps preset {name!r}; available: {', '.join(PRESETS)}"
        ) from None


def training_configs(
    preset: Preset, seeds: Sequence[int], device: str = "cpu"
) -> dict[tuple[str, float, int, int], TrainConfig]:
    """Every run the preset trains, keyed ``(label, τ, max_length, seed)``."""
    return {
        (label, tau, length, s): TrainConfig(
            estimator=estimator,
            tau=tau,
            k=k,
            max_length=length,
            d_hidden=preset.d_hidden,
            lr=preset.lr,
            steps=preset.steps,
            sizes=preset.sizes,
            eval_every=preset.eval_every,
            variance_every=preset.variance_every,
            seed=s,
            device=device,
        )
        for length in preset.max_lengths
        for tau in preset.taus
        for label, estimator, k in preset.runs
        for s in seeds
    }


def run_preset(
    name: str,
    out_dir: str | Path = "results/listops",
    executor: Any = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> xr.Dataset:
    """Train and measure every configuration of preset ``name``; write ``out_dir/NAME.nc``.

    ``seed`` offsets the preset's seeds (``seed … seed + seeds − 1``).
    """
    preset = get_preset(name)
    out_dir = Path(out_dir)
    seeds = range(seed, seed + preset.seeds)
    # The variance sweep first: a folder holding another experiment is refused before any
    # run is trained.
    lengths = list(preset.max_lengths)
    tasks = [
        listops(
            max_length=length,
            d_hidden=preset.d_hidden,
            train_steps=max(10, preset.steps // 5),
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
        device=device,
    ).swap_dims(point="max_length")
    trained = train_grid(
        LISTOPS.train,
        training_configs(preset, seeds, device),
        ("run", "tau", "max_length", "seed"),
        {
            "test_accuracy": ("test accuracy of the model selected on validation", "1"),
            "best_valid_accuracy": ("best validation accuracy", "1"),
            "test_majority_accuracy": (
                "test accuracy of always answering the commonest label",
                "1",
            ),
        },
        out_dir / "runs",
        executor,
        curves=CURVES,
        progress=progress,
        desc=f"ListOps {name} runs",
    )
    variance = (
        measured[VARIANCE_METRICS].sel(batch_size=measured["max_length"]).drop_vars("batch_size")
    )
    summary = variance.merge(trained)
    summary.attrs.update(
        experiment="listops",
        preset=name,
        config=json.dumps(dataclasses.asdict(preset)),
        **provenance.stamp(),
    )
    write_atomic(summary, out_dir / f"{name}.nc")
    return summary


def summary_table(summary: xr.Dataset) -> dict[str, Any]:
    """The two tables of a preset (mean over seeds), as pandas objects (for printing)."""
    accuracy = summary["test_accuracy"].mean("seed")
    accuracy = accuracy.to_dataframe()["test_accuracy"].unstack("tau")
    variance = (
        summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
    )
    st = (
        summary["variance"].sel(estimator="st_gumbel_softmax").isel(k=0).to_series().rename("ST-GS")
    )
    return {"test accuracy (mean over seeds)": accuracy, "variance": variance.join(st)}
