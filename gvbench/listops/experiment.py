r"""ListOps (paper §5.2): the Gumbel Tree-LSTM of Choi, Yoo & Lee (2018), an ordinary
``nn.Module`` whose merge choices are made by any sampler.

Leaves are :math:`(h, c) = W_{leaf} e + b`. While more than one node remains, every adjacent
pair is composed by a binary Tree-LSTM cell,
:math:`[i, f_l, f_r, o, g] = W[h_l; h_r] + b`,
:math:`c = \sigma(f_l + 1) c_l + \sigma(f_r + 1) c_r + \sigma(i)\tanh g`, :math:`h = \sigma(o)\tanh c`,
each candidate parent is scored by :math:`q^\top h`, and one is *chosen by the sampler*
(masked to the sequence's real nodes). With the one-hot choice :math:`s`, the next row is
:math:`(1 - \mathrm{cumsum}\,s)\odot\text{left} + s\odot\text{parent} + (\mathrm{cumsum}\,s - s)\odot\text{right}`.
The root's :math:`h` feeds an MLP over the 10 classes; the loss is the cross-entropy, the
validation score the accuracy with greedy (argmax) merges.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from torch.nn import functional as F

import gvbench.estimators as E
from gvbench import provenance
from gvbench.estimators import Sampler
from gvbench.experiment import VARIANCE_METRICS, Experiment, Splits, TaskOptions
from gvbench.harness.store import write_atomic
from gvbench.harness.sweep import sweep_over
from gvbench.leaderboard.column import Column
from gvbench.listops import report as listops_report
from gvbench.listops.data import CLASSES, PAD, VOCABULARY, generate_splits
from gvbench.listops.leaderboard import listops_columns
from gvbench.listops.presets import PRESETS, Preset
from gvbench.report.builder import Report
from gvbench.report.claims import Claim
from gvbench.study import PresetRun
from gvbench.training import RunConfig, TemperatureSchedule, option, random_searches, train_grid

CURVES = ["gradient_variance", "gradient_variance_se", "valid_accuracy"]


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """One ListOps run. ``batch_size`` 0 means the maximum length L, as in the paper."""

    max_length: int = option(10, "maximum tokens L of an expression (10, 25, 50 in the paper)")
    d_hidden: int = option(32, "Tree-LSTM hidden size")
    batch_size: int = option(0, "examples per step (0: L, as in the paper)")
    lr: float = 0.02
    sizes: tuple[int, int, int] = option(
        (5000, 500, 500), "generated expressions for training, validation and test"
    )

    COUNTS: ClassVar[dict[str, int]] = {
        **RunConfig.COUNTS,
        "max_length": 4,
        "d_hidden": 1,
        "batch_size": 0,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if E.info(self.estimator).relaxed:
            raise ValueError(f"{self.estimator} feeds relaxed samples; ListOps needs hard merges")

    @property
    def batch(self) -> int:
        return self.batch_size or self.max_length

    def prefix(self) -> str:
        return f"L{self.max_length}"


@functools.lru_cache(maxsize=16)
def _generated(max_length: int, sizes: tuple[int, int, int], seed: int) -> Splits:
    # Cached: the runs of a preset's cell share their seeds' data over τ, and drawing it is
    # pure Python (about a second per 5,000 expressions). Nothing writes to these tensors.
    splits = generate_splits(max_length, sizes, seed=seed)
    return {
        name: (_padded(s.tokens, max_length), s.lengths, s.labels) for name, s in splits.items()
    }


def greedy(logits: Tensor, *, dim: int = -1) -> Tensor:
    """The deterministic choice used for evaluation: the highest-scoring merge."""
    index = logits.argmax(dim, keepdim=True)
    return torch.zeros_like(logits).scatter(dim, index, 1.0)


class GumbelTreeLSTM(nn.Module):
    """``model(tokens, lengths, sample=…) -> (B, 10)`` class logits for token ids ``(B, L)``.

    ``sample`` is called L − 2 times with merge logits ``(B, n − 1)`` (the last merge has a
    single candidate); a sequence that is already one node sees one valid candidate.
    """

    def __init__(self, d_hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def weight(fan_in: int, fan_out: int) -> Tensor:
            # (out, in), scaled by 1/sqrt(fan-in), from the run's own seed alone.
            return (torch.randn(fan_in, fan_out, generator=generator) / math.sqrt(fan_in)).T

        self.embedding = nn.Embedding(len(VOCABULARY), d_hidden)
        self.leaf = nn.Linear(d_hidden, 2 * d_hidden)
        self.compose = nn.Linear(2 * d_hidden, 5 * d_hidden)
        self.query = nn.Parameter(torch.empty(d_hidden))
        self.hidden = nn.Linear(d_hidden, d_hidden)
        self.classes = nn.Linear(d_hidden, CLASSES)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(len(VOCABULARY), d_hidden, generator=generator))
            for layer in (self.leaf, self.compose):
                layer.weight.copy_(weight(layer.in_features, layer.out_features))
                layer.bias.zero_()
            self.query.copy_(torch.randn(d_hidden, generator=generator) / math.sqrt(d_hidden))
            for layer in (self.hidden, self.classes):
                layer.weight.copy_(weight(layer.in_features, layer.out_features))
                layer.bias.zero_()

    def forward(
        self, tokens: Tensor, lengths: Tensor, labels: Tensor | None = None, *, sample: Sampler
    ) -> Tensor:
        # ``labels`` is read by the loss, not here: a ModuleTask hands every input to both.
        # A ListOps step is a few hundred small ops per merge level, so the cell keeps a node's
        # h and c side by side (one blend, one select) and its gates in one sigmoid, and the
        # masks of every level are made once: fewer ops forward and backward.
        width, d = tokens.shape[-1], self.query.shape[0]
        state = self.leaf(self.embedding(tokens))  # (B, width, 2d): [h, c] of every node
        levels = torch.arange(width - 1, device=tokens.device)
        nodes = (lengths[:, None] - levels).clamp_min(1)  # (B, level): nodes left
        done = nodes <= 1
        positions = levels  # candidate positions run over the same range as the levels
        valid = (positions < (nodes - 1)[..., None]) | (done[..., None] & (positions == 0))
        # σ(f + 1) for both forget gates: the gates' shift, added before one sigmoid.
        shift = torch.zeros(4 * d, dtype=state.dtype, device=state.device)
        shift[d : 3 * d] = 1.0
        for level in range(width - 1):
            left, right = state[:, :-1], state[:, 1:]
            z = self.compose(torch.cat([left[..., :d], right[..., :d]], -1))
            i, f_left, f_right, o = torch.sigmoid(z[..., : 4 * d] + shift).chunk(4, -1)
            parent_c = (
                f_left * left[..., d:] + f_right * right[..., d:] + i * torch.tanh(z[..., 4 * d :])
            )
            parent_h = o * torch.tanh(parent_c)
            candidates = width - level - 1
            if candidates > 1:
                scores = (parent_h * self.query).sum(-1)
                select = sample(scores.masked_fill(~valid[:, level, :candidates], -torch.inf))
            else:  # one pair left: merging it is certain, there is nothing to sample
                select = parent_h.new_ones(parent_h.shape[:-1])
            cumulative = select.cumsum(-1)
            parent = torch.cat([parent_h, parent_c], -1)
            merged = (
                (1 - cumulative)[..., None] * left
                + select[..., None] * parent
                + (cumulative - select)[..., None] * right
            )
            state = torch.where(done[:, level, None, None], left, merged)
        return self.classes(torch.relu(self.hidden(state[:, 0, :d])))


def _padded(tokens: Tensor, width: int) -> Tensor:
    """Tokens padded to ``width``: every batch of every run has one shape (runs stack)."""
    return F.pad(tokens, (0, width - tokens.shape[-1]), value=PAD)


@dataclasses.dataclass(frozen=True)
class ListOpsOptions(TaskOptions):
    """The ListOps task: the gradient of the cross-entropy w.r.t. all weights. Every merge
    is a discrete choice (L − 1 per sequence, each depending on the previous ones);
    relaxed samples do not apply (the tree needs hard merges); the reference is the
    harness's high-sample RLOO estimate."""

    max_length: int = 10
    d_hidden: int = 32


class ListOps(Experiment[TrainConfig]):
    """The Gumbel Tree-LSTM on ListOps (paper §5.2)."""

    name = "listops"
    title = "the Gumbel Tree-LSTM on ListOps (paper §5.2)"
    Config = TrainConfig
    Options = ListOpsOptions
    presets = PRESETS
    order = 20
    selection = "valid_accuracy"
    higher_is_better = True
    sequential_choices = True  # each merge's candidates depend on the merges before it
    max_draws_per_pass = 32  # R × B × L × 5d activations per merge step stay small
    reference_reps = 4000

    def data(self, config: TrainConfig) -> tuple[Splits, str]:
        source = (
            f"generated ListOps, L <= {config.max_length}, seed {config.seed}, sizes {config.sizes}"
        )
        return _generated(config.max_length, config.sizes, config.seed), source

    def model(self, config: TrainConfig) -> nn.Module:
        return GumbelTreeLSTM(config.d_hidden, seed=config.seed)

    def loss(self, output: Tensor, tokens: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(output, labels, reduction="none")

    def score(self, output: Tensor, tokens: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
        return (output.argmax(-1) == labels).to(output.dtype)

    def evaluation_sampler(self, generator: Any) -> Sampler:
        return greedy

    def batch_size(self, config: TrainConfig) -> int:
        return config.batch

    def test_figures(self, model: nn.Module, splits: Splits, config: TrainConfig) -> dict[str, Any]:
        tokens, lengths, labels = splits["test"]
        with torch.no_grad():
            predicted = torch.cat(
                [
                    model(tokens[i : i + 500], lengths[i : i + 500], sample=greedy).argmax(-1)
                    for i in range(0, len(labels), 500)
                ]
            )
        return {
            "test_accuracy": float((predicted == labels).double().mean()),
            "test_majority_accuracy": float(torch.bincount(labels, minlength=CLASSES).max())
            / len(labels),
        }

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """Its column of ``gvbench leaderboard`` (:mod:`gvbench.listops.leaderboard`)."""
        return listops_columns(self, preset)

    def run_preset(
        self, name: str, out_dir: str | Path = "results/listops", run: PresetRun | None = None
    ) -> xr.Dataset:
        """Train every (estimator, τ, L, seed) configuration of preset ``name``, then measure
        the gradient variance of ST-GS and GR-MCK over K at a briefly trained checkpoint per
        L; write one summary to ``out_dir/NAME.nc``: test accuracy by (run, τ, L, seed), the
        gradient variance measured during training by step, and the variance by (τ, K, L).

        ``run.seed`` offsets the preset's seeds (``seed … seed + seeds − 1``); the data is
        generated, so ``run.data_dir`` is not used.
        """
        preset = self.preset(name)
        out_dir = Path(out_dir)
        run = run or PresetRun()
        seed, executor, progress, device = run.seed, run.executor, run.progress, run.device
        seeds = range(seed, seed + preset.seeds)
        # The variance sweep first: a folder holding another experiment is refused before any
        # run is trained.
        measured = self._checkpoint_variance(
            preset, name, out_dir, seed=seed, executor=executor, progress=progress, device=device
        )
        tuned = self.tune(preset, out_dir, executor, seed, progress, device)
        trained = train_grid(
            self.train,
            training_configs(preset, seeds, device, tuned),
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
            measured[VARIANCE_METRICS]
            .sel(batch_size=measured["max_length"])
            .drop_vars("batch_size")
        )
        summary = variance.merge(trained)
        if tuned is not None:
            summary = summary.merge(tuned)
        summary.attrs.update(
            experiment="listops",
            preset=name,
            # A fixed-τ preset's record reads as it did before presets could anneal.
            config=json.dumps(
                {k: v for k, v in dataclasses.asdict(preset).items() if v is not None}
            ),
            **provenance.stamp(),
        )
        write_atomic(summary, out_dir / f"{name}.nc")
        return summary

    def tune(
        self,
        preset: Preset,
        out_dir: Path,
        executor: Any = None,
        seed: int = 0,
        progress: bool = True,
        device: str = "cpu",
    ) -> xr.Dataset | None:
        """The preset's random search of the learning rate per (run, τ, L), selected on
        validation accuracy (the test split is never read): every trial's lr and score, and
        the chosen lr, over ``(run, tau, max_length)``; None for a preset without a search."""
        if not preset.search_trials:
            return None
        if preset.search_steps is None or preset.lr_range is None:
            raise ValueError("a ListOps preset with search_trials needs search_steps and lr_range")
        ranked = preset.search_selection or "best"
        if ranked not in ("best", "final"):
            raise ValueError(f"search_selection must be 'best' or 'final', got {ranked!r}")
        selection = f"{ranked}_valid_accuracy"
        configs = training_configs(preset, [seed], device)
        keys = list(configs)
        bases = [
            dataclasses.replace(config, steps=preset.search_steps, variance_every=0)
            for config in configs.values()
        ]
        searches = random_searches(
            self.train,
            bases,
            preset.search_trials,
            lr=preset.lr_range,
            momentum=None,
            selection=selection,
            higher_is_better=True,
            out_dir=out_dir / "search",
            seed=seed,
            executor=executor,
            progress=progress,
        )
        coords = {
            "run": list(dict.fromkeys(label for label, *_ in keys)),
            "tau": list(dict.fromkeys(tau for _, tau, *_ in keys)),
            "max_length": list(dict.fromkeys(length for _, _, length, _ in keys)),
            "trial": range(preset.search_trials),
        }
        shape = [len(values) for values in coords.values()]
        trials = {name: np.full(shape, np.nan) for name in ("search_lr", "search_valid_accuracy")}
        chosen = np.full(shape[:-1], np.nan)
        for (label, tau, length, _), search in zip(keys, searches, strict=True):
            at = (coords["run"].index(label), coords["tau"].index(tau))
            at += (coords["max_length"].index(length),)
            trials["search_lr"][at] = search["lr"].values
            trials["search_valid_accuracy"][at] = search[selection].values
            chosen[at] = float(search["lr"][search.attrs["best_trial"]])
        dims = ("run", "tau", "max_length")
        return xr.Dataset(
            {
                "search_lr": (
                    (*dims, "trial"),
                    trials["search_lr"],
                    {"long_name": "learning rate of a random-search trial"},
                ),
                "search_valid_accuracy": (
                    (*dims, "trial"),
                    trials["search_valid_accuracy"],
                    {"long_name": f"{ranked} validation accuracy of a random-search trial"},
                ),
                "tuned_lr": (dims, chosen, {"long_name": "learning rate chosen by random search"}),
            },
            coords={**coords, "run": np.array(coords["run"], dtype=object)},
        )

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
    ) -> xr.Dataset:
        """ST-GS and GR-MCK over τ and K at a briefly trained checkpoint per L (B = L)."""
        lengths = list(preset.max_lengths)
        tasks = [
            self.task(
                max_length=length,
                d_hidden=preset.d_hidden,
                train_steps=max(10, preset.steps // 5),
                seed=seed,
                checkpoint_dir=str(out_dir / "checkpoints"),
            )
            for length in lengths
        ]
        return sweep_over(
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

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """The two tables of a preset (mean over seeds), as pandas objects (for printing)."""
        accuracy = summary["test_accuracy"].mean("seed")
        accuracy = accuracy.to_dataframe()["test_accuracy"].unstack("tau")
        variance = (
            summary["variance"].sel(estimator="gumbel_rao").to_dataframe()["variance"].unstack("k")
        )
        st = (
            summary["variance"]
            .sel(estimator="st_gumbel_softmax")
            .isel(k=0)
            .to_series()
            .rename("ST-GS")
        )
        return {"test accuracy (mean over seeds)": accuracy, "variance": variance.join(st)}

    def preset_runs(self, name: str) -> list[TrainConfig]:
        """Every run preset ``name`` trains (its first seeds)."""
        preset = self.preset(name)
        return list(training_configs(preset, range(preset.seeds)).values())

    def counting_overrides(self, config: TrainConfig) -> dict[str, Any]:
        """Fields a training step's cost does not depend on, set small to count it quickly."""
        return {"sizes": (max(300, config.batch), 50, 50), "variance_every": 0}

    def claims(self, data: Mapping[str, xr.Dataset]) -> list[Claim]:
        return listops_report.listops_claims(data[self.name]) if self.name in data else []

    def report(self, report: Report, data: Mapping[str, xr.Dataset]) -> None:
        if self.name in data:
            listops_report.listops_section(report, data[self.name])


LISTOPS = ListOps()


def training_configs(
    preset: Preset, seeds: Sequence[int], device: str = "cpu", tuned: xr.Dataset | None = None
) -> dict[tuple[str, float, int, int], TrainConfig]:
    """Every run the preset trains, keyed ``(label, τ, max_length, seed)`` (τ: where an
    annealing preset's schedule starts), at the preset's lr or the one ``tuned`` chose
    (:meth:`ListOps.tune`)."""

    def lr(label: str, tau: float, length: int) -> float:
        if tuned is None:
            return preset.lr
        return float(tuned["tuned_lr"].sel(run=label, tau=tau, max_length=length))

    return {
        (label, tau, length, s): TrainConfig(
            estimator=estimator,
            tau=tau,
            tau_schedule=annealed(preset.anneal, tau),
            k=k,
            max_length=length,
            d_hidden=preset.d_hidden,
            lr=lr(label, tau, length),
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


def annealed(anneal: str | None, tau: float) -> str | None:
    """The schedule of a run that starts at ``tau`` under a preset's ``anneal``
    (``"exp->0.1"`` → ``"exp:1.0->0.1"``); ``None`` for a fixed τ."""
    if anneal is None:
        return None
    kind, arrow, end = anneal.partition("->")
    if not arrow or kind not in ("exp", "linear"):
        raise ValueError(f"anneal must read 'exp->END' or 'linear->END', got {anneal!r}")
    return str(TemperatureSchedule.parse(f"{kind}:{tau!r}->{end}"))
