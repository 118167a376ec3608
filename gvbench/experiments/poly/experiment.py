r"""Polynomial programming (ReinMax) and the quadratic toy (REBAR, RELAX, ARM) as one
experiment: :class:`~gvbench.experiments.poly.model.PolynomialProgram` trained with Adam, its
runs selected on the *exact* expected loss.

Where each part of the protocol comes from:

- **Polynomial programming** — Liu, Dong, Liu, Yu & Gao, "Bridging Discrete and
  Backpropagation: Straight-Through and Beyond" (NeurIPS 2023), §6, and its code
  (``github.com/LiyuanLucasLiu/ReinMax``, ``poly/poly_programming.py``, ``poly/reinmax.sh``):
  128 variables, each two logits :math:`\theta_i \in \mathbb{R}^2` initialised
  :math:`U(-0.01, 0.01)`, :math:`z_i` the first category of the one-hot draw, loss
  :math:`\sum_i |z_i - 0.45|^p / 128` with :math:`p \in \{1.5, 2, 3\}`, 64 draws a step, Adam
  at :math:`10^{-3}`, 40 epochs of 200 steps (8,000 steps), τ = 1, seeds 0–9; reported is the
  loss over the last epoch, averaged over the ten seeds, and its training curve.
- **The quadratic toy** — Tucker et al. (REBAR, NeurIPS 2017) with :math:`t = 0.45`;
  Grathwohl et al. (RELAX, ICLR 2018), code ``github.com/duvenaud/relax``, ``rebar_toy.py``:
  one variable, :math:`\min \mathbb{E}[(b - 0.499)^2]`, logit 0, one draw a step, Adam at
  :math:`10^{-2}`, 5,000 steps; Yin & Zhou (ARM, ICLR 2019), §4: :math:`p_0 \in \{0.49, 0.499,
  0.501, 0.51\}` (there maximised), the true gradient :math:`(1 - 2p_0)\sigma(\phi)(1 -
  \sigma(\phi))` plotted against each estimator's; Dimitriev & Zhou (ARMS, ICML 2021), code
  ``github.com/alekdimi/arms``, ``toy_problem.py``: the variance of ARM, DisARM and RLOO on
  :math:`(b - 0.49)^2` against :math:`\sigma(\phi)` from :math:`\sigma(\phi) = 0.1`. DisARM's
  own toy (Dong, Mnih & Tucker, NeurIPS 2020) could not be read here; its code
  (``google-research/disarm``) has none.

**No data.** Each example is one draw of the variables: ``data`` gives dummy index inputs whose
values nothing reads (a training step of B examples is B independent draws, an evaluation
scores the exact expected loss, the same for every example). **Selection is noise-free**: the
score is the exact expected loss, so the selected run is the one whose distribution is best,
not the one whose draws were lucky. :meth:`Polynomial.expected_loss` gives the harness task
its exact gradient (bias² against it, not a sampled reference).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from gvbench import provenance
from gvbench.estimators.validation import check_count
from gvbench.experiment import Experiment, Splits, TaskOptions
from gvbench.experiments.poly import report as poly_report
from gvbench.experiments.poly.config import PolyConfig, protocol_configs
from gvbench.experiments.poly.model import Outcome, PolynomialProgram
from gvbench.experiments.poly.presets import PRESETS
from gvbench.harness.store import write_atomic
from gvbench.report.builder import Report
from gvbench.report.claims import Claim
from gvbench.study import PresetRun
from gvbench.tasks.module import ModuleTask
from gvbench.training import train_grid
from gvbench.training.optimizers import Adam, Optimizer

# Dummy examples of the validation split (the harness task's draws come from its first B).
VALID_EXAMPLES = 256
SOURCE = "none: each example is one draw of the variables"
DIMS = ("run", "power", "target", "seed")
FIGURES = {
    "best_expected_loss": ("lowest exact expected loss over the run's evaluations", "1"),
    "initial_expected_loss": ("exact expected loss before training", "1"),
}


@dataclasses.dataclass(frozen=True)
class PolyOptions(TaskOptions):
    """The harness task: the gradient of the expected loss w.r.t. the logits, bias² against
    its exact value. ``train_steps`` 0 (the default) measures the model at its initialisation
    for ``seed``; more trains it that many ST-GS steps first (cached); ``checkpoint`` reads a
    trained run's best parameters."""

    variables: int = 128
    power: float = 2.0
    target: float = 0.45
    initial_probability: float = 0.5
    init_scale: float = 0.01
    train_steps: int = 0


class Polynomial(Experiment[PolyConfig]):
    """Polynomial programming and the quadratic toy: binary variables, exact expected loss."""

    name = "poly"
    title = "polynomial programming (ReinMax) and the quadratic toy (REBAR, RELAX, ARM)"
    Config = PolyConfig
    Options = PolyOptions
    presets = PRESETS
    order = 40
    selection = "expected_loss"
    higher_is_better = False
    relaxed_inputs = True  # |z − c|^p is defined on relaxed z in [0, 1]

    def data(self, config: PolyConfig) -> tuple[Splits, str]:
        """Dummy indices: a training split of one step's draws, a validation split the
        harness task takes its B from, a test split nothing reads."""
        return {
            "train": (torch.arange(config.batch_size),),
            "valid": (torch.arange(VALID_EXAMPLES),),
            "test": (torch.arange(1),),
        }, SOURCE

    def model(self, config: PolyConfig) -> nn.Module:
        return PolynomialProgram(
            config.variables,
            config.power,
            config.target,
            initial_probability=config.initial_probability,
            init_scale=config.init_scale,
            seed=config.seed,
        )

    def loss(self, output: Outcome, x: Tensor) -> Tensor:
        return output.loss

    def score(self, output: Outcome, x: Tensor) -> Tensor:
        return output.expected

    def expected_loss(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.expected(len(x))  # type: ignore[operator]

    def arity(self, config: PolyConfig) -> int:
        return 2

    def optimizer(self, config: PolyConfig) -> Optimizer:
        """Adam at the run's ``lr``, unclipped, as ReinMax's and RELAX's code train."""
        return Optimizer((("", Adam(config.lr)),), max_norm=None)

    # -- the harness task --------------------------------------------------------------------
    def task(self, **options: Any) -> ModuleTask:
        """The model as a harness task (``gvbench sweep poly --task-option power=3``): at its
        initialisation for ``seed`` unless ``train_steps`` > 0 or a ``checkpoint`` is given
        (then as :meth:`Experiment.task <gvbench.experiment.Experiment.task>` makes it)."""
        given = dataclasses.asdict(self.Options(**_known(options, self.Options, self.name)))
        check_count(given["batch_pool"], "batch_pool", 1)
        check_count(given["train_steps"], "train_steps", 0)
        if given["checkpoint"] is not None or given["train_steps"] > 0:
            # With a checkpoint no step is trained; the brief run it would need is still built.
            return super().task(**{**options, "train_steps": max(1, given["train_steps"])})
        fields = {f.name for f in dataclasses.fields(PolyConfig)}
        config = PolyConfig(**{k: v for k, v in given.items() if k in fields})
        inputs = (torch.arange(given["batch_pool"]),)
        values = {k: v for k, v in given.items() if k not in ("checkpoint_dir", "checkpoint")}
        description = {"task": self.name, **values, "data": SOURCE}
        return self.module_task(self.model(config), inputs, config, config=description)

    # -- what a preset runs ------------------------------------------------------------------
    def run_preset(
        self, preset: str, out_dir: str | Path = "results/poly", run: PresetRun | None = None
    ) -> xr.Dataset:
        """Train every (estimator, p, c, seed) of ``preset``'s polynomial programming and
        quadratic toy at the published learning rate and τ; write ``out_dir/PRESET.nc``.

        The summary holds, over ``(run, power, target, seed)``, the exact expected loss before
        training, the lowest over the run's evaluations and the final one (the last point of
        its curve, ``expected_loss`` over ``step``); the toy's the same, each name prefixed
        ``toy_``. ``run.seed`` offsets the preset's seeds.
        """
        chosen = self.preset(preset)
        out_dir, run = Path(out_dir), run or PresetRun()
        parts = []
        for prefix, protocol in (("", chosen.poly), ("toy_", chosen.toy)):
            configs = protocol_configs(protocol, range(run.seed, run.seed + protocol.seeds))
            configs = {k: dataclasses.replace(c, device=run.device) for k, c in configs.items()}
            grid = train_grid(
                self.train,
                configs,
                DIMS,
                FIGURES,
                out_dir / "runs",
                run.executor,
                curves=["expected_loss"],
                progress=run.progress,
                desc=f"poly {preset}: {prefix or 'poly_'}runs",
            )
            grid["final_expected_loss"] = grid["expected_loss"].isel(step=-1, drop=True)
            grid["final_expected_loss"].attrs.update(
                long_name="exact expected loss at the run's last step", units="1"
            )
            names = [*grid.data_vars, *DIMS, "step"]
            parts.append(grid.rename({n: f"{prefix}{n}" for n in names}) if prefix else grid)
        summary = xr.merge(parts)
        summary.attrs.update(
            experiment=self.name,
            preset=preset,
            config=json.dumps(dataclasses.asdict(chosen)),
            data=SOURCE,
            **provenance.stamp(),
        )
        write_atomic(summary, out_dir / f"{preset}.nc")
        return summary

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """The final exact expected loss per estimator and setting, mean and SE over seeds,
        and its gap to the optimum as a fraction of the loss's range: :math:`(E - \\min) /
        (\\max - \\min)`, the mean probability of each variable's worse value (the toy's
        losses differ in their fourth decimal, its gaps in their first)."""
        tables = {}
        for prefix, title in (("", "polynomial programming"), ("toy_", "quadratic toy")):
            final = summary[f"{prefix}final_expected_loss"]
            power, target = summary[f"{prefix}power"], summary[f"{prefix}target"]
            one, zero = abs(1 - target) ** power, abs(target) ** power
            gap = (final - np.minimum(one, zero)) / abs(one - zero)
            seed = f"{prefix}seed"
            columns = {}
            for name, values in (("loss", final), ("gap", gap)):
                columns[name] = values.mean(seed)
                columns[f"{name} SE"] = values.std(seed, ddof=1) / np.sqrt(values.count(seed))
            frame = xr.Dataset(columns).to_dataframe()
            tables[f"{title}: final exact expected loss and its gap, over seeds"] = frame
        return tables

    def preset_runs(self, name: str) -> list[PolyConfig]:
        """Every run preset ``name`` trains (its first seeds), the polynomial's first."""
        chosen = self.preset(name)
        return [
            config
            for protocol in (chosen.poly, chosen.toy)
            for config in protocol_configs(protocol, range(protocol.seeds)).values()
        ]

    def counting_overrides(self, config: PolyConfig) -> dict[str, Any]:
        """Fields a training step's cost does not depend on, set small to count it quickly."""
        return {"variance_every": 0}

    def claims(self, data: Mapping[str, xr.Dataset]) -> list[Claim]:
        return poly_report.poly_claims(data[self.name]) if self.name in data else []

    def report(self, report: Report, data: Mapping[str, xr.Dataset]) -> None:
        if self.name in data:
            poly_report.poly_section(report, data[self.name])

    def leaderboard(self, preset: str) -> tuple[Any, ...]:
        """One column per p of the polynomial and one per target of the quadratic toy (see
        :mod:`gvbench.experiments.poly.leaderboard`); none at a preset it does not have."""
        from gvbench.experiments.poly.leaderboard import columns

        return columns(self, self.presets[preset]) if preset in self.presets else ()


def _known(options: dict[str, Any], options_type: type, name: str) -> dict[str, Any]:
    """``options`` where each is a field of ``options_type``; a TypeError listing them."""
    fields = [f.name for f in dataclasses.fields(options_type)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(
            f"the {name} task takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(fields)}"
        )
    return options


POLY = Polynomial()
