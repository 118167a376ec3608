r"""What a categorical-VAE preset runs, and its summary.

Per protocol: the gradient analysis along training (ReinMax's ``analyze_gradient``: at each
checkpoint, the harness's sweep of every analysed estimator against the exact gradient where
the codes can be enumerated), then every run of the preset at the protocol's learning rate
and τ. The summary holds, over ``protocol``:

- the analysis over ``(checkpoint, estimator)``: variance, bias², MSE and cosine with their
  SEs, and ReinMax's ratios

  .. math::
      \text{relative bias} = \frac{\lVert \bar g - \nabla \rVert}{\lVert \nabla \rVert}
      = \sqrt{\mathrm{bias}^2 / \lVert\nabla\rVert^2},\qquad
      \text{relative std} = \frac{\sqrt{\operatorname{tr}\operatorname{Cov} g}}{\lVert \bar g
      \rVert},

  (``VAE.analyze_gradient``'s first and third figures; :math:`\nabla` the exact gradient);
- the runs over ``(run, seed)``: test bound, test negative ELBO, best validation negative ELBO,
  and the validation curve.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from gvbench import provenance
from gvbench.experiments.categorical_vae.presets import Preset, ProtocolPreset
from gvbench.experiments.categorical_vae.protocols import protocol
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.study import PresetRun
from gvbench.training import RunConfig, train_grid

if TYPE_CHECKING:
    from gvbench.experiments.categorical_vae.experiment import CategoricalVAEExperiment

ANALYSIS = [
    "variance",
    "variance_se",
    "bias2",
    "bias2_se",
    "mse",
    "mse_se",
    "cosine",
    "cosine_se",
    "mean_norm",
    "reference_norm2",
    "reference_variance",
]
FIGURES = {
    "test_iw_nll": ("test −log p(x), importance-weighted bound", "nats"),
    "test_negative_elbo": ("test negative ELBO of the model selected on validation", "nats"),
    "best_valid_negative_elbo": ("best validation negative ELBO", "nats"),
    "initial_valid_negative_elbo": ("validation negative ELBO before training", "nats"),
}


def training_configs(
    config_type: type[RunConfig],
    preset: Preset,
    first_seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
) -> dict[tuple[str, str, int], Any]:
    """Every run of ``preset``, keyed ``(protocol, label, seed)``."""
    configs = {}
    for part in preset.parts():
        chosen = protocol(part.protocol)
        for label, estimator, k in part.runs:
            for seed in range(first_seed, first_seed + part.seeds):
                configs[part.protocol, label, seed] = config_type(
                    protocol=part.protocol,  # type: ignore[call-arg]
                    estimator=estimator,
                    k=k,
                    tau=chosen.tau,
                    latents=part.latents,
                    categories=part.categories,
                    hidden=part.hidden,
                    batch_size=part.batch_size,
                    steps=part.steps,
                    eval_every=part.eval_every,
                    variance_every=0,
                    test_samples=part.test_samples,
                    seed=seed,
                    data_dir=data_dir,
                    device=device,
                    dynamic_binarization=part.dynamic_binarization,
                )
    return configs


def analysis(
    experiment: CategoricalVAEExperiment,
    part: ProtocolPreset,
    name: str,
    out_dir: Path,
    run: PresetRun,
) -> xr.Dataset:
    """One protocol's gradient analysis over ``(checkpoint, estimator)`` (module docstring)."""
    chosen = protocol(part.protocol)
    tasks = [
        experiment.task(
            protocol=part.protocol,
            latents=part.latents,
            categories=part.categories,
            hidden=part.hidden,
            batch_size=part.batch_size,
            train_steps=steps,
            seed=run.seed,
            data_dir=run.data_dir,
            checkpoint_dir=str(out_dir / "checkpoints"),
            batch_pool=part.analysis_batch,
        )
        for steps in part.checkpoints
    ]
    measured = sweep_over(
        tasks,
        {"checkpoint": list(part.checkpoints)},
        folder=out_dir / f"{name}-{part.protocol}-analysis",
        progress=run.progress,
        estimators=list(part.analysis),
        tau=[chosen.tau],
        k=[part.analysis_k],
        batch_size=[part.analysis_batch],
        reps=part.analysis_reps,
        seed=run.seed,
        executor=run.executor,
        reference_reps=part.reference_reps,
        warmup=part.warmup,
        device=run.device,
    ).swap_dims(point="checkpoint")
    kept = measured[ANALYSIS].squeeze(["tau", "k", "batch_size"], drop=True)
    relative_bias = np.sqrt(kept["bias2"].clip(min=0) / kept["reference_norm2"])
    relative_std = np.sqrt(kept["variance"]) / kept["mean_norm"]
    return kept.assign(
        relative_bias=relative_bias.assign_attrs(
            long_name="relative bias ‖mean − exact‖ / ‖exact‖", units="1"
        ),
        relative_std=relative_std.assign_attrs(
            long_name="relative std √(tr Cov) / ‖mean‖", units="1"
        ),
    )


def run_preset(
    experiment: CategoricalVAEExperiment, name: str, out_dir: Path, run: PresetRun
) -> xr.Dataset:
    """Both protocols of preset ``name`` (resumable); the summary, written to
    ``out_dir/NAME.nc``."""
    preset = experiment.preset(name)
    parts = preset.parts()
    analysed = xr.concat(
        [analysis(experiment, part, name, out_dir, run) for part in parts],
        dim=xr.DataArray(
            np.array([part.protocol for part in parts], dtype=object), dims="protocol"
        ),
        join="outer",
        combine_attrs="drop",
    )
    trained = train_grid(
        experiment.train,
        training_configs(experiment.Config, preset, run.seed, run.data_dir, run.device),
        ("protocol", "run", "seed"),
        FIGURES,
        out_dir / "runs",
        run.executor,
        curves=["valid_negative_elbo"],
        progress=run.progress,
        desc=f"categorical VAE {name} runs",
    )
    summary = xr.merge([analysed, trained], combine_attrs="drop")
    summary.attrs.update(
        experiment=experiment.name,
        preset=name,
        config=json.dumps(dataclasses.asdict(preset)),
        **provenance.stamp(),
    )
    write_atomic(summary, out_dir / f"{name}.nc")
    return summary


def tables(summary: xr.Dataset) -> dict[str, Any]:
    """The summary's tables as pandas objects (for printing)."""
    bound = summary["test_iw_nll"]
    n = bound.count("seed")
    outcome = pd.DataFrame(
        {
            "test bound (nats)": bound.mean("seed").to_series(),
            "SE": (bound.std("seed", ddof=1) / np.sqrt(n)).to_series(),
            "seeds": n.to_series(),
        }
    ).dropna(subset=["test bound (nats)"])
    ratios = ["relative_bias", "cosine", "relative_std", "variance", "bias2"]
    measured = summary[ratios].to_dataframe()[ratios].dropna(how="all")
    return {
        "test −log p(x) bound, mean ± SE over seeds": outcome,
        "gradient analysis along training": measured,
    }
