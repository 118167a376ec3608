"""The shape every trained experiment shares: data, an ordinary ``nn.Module``, a loss, what
it reports — and, written once here, its training (many runs as one, on any device), its
harness task (the model at a trained checkpoint, measured through ``ModuleTask``) and, as a
:class:`~gvbench.study.Study`, its presets, claims and report section.

An experiment subclasses :class:`Experiment` and fills in the hooks; its model is a module
like a user's, whose ``forward(*inputs, sample=…)`` calls the sampler at every discrete
choice. Registered under the ``gvbench.experiments`` entry point, it gets ``gvbench train
NAME``, ``gvbench reproduce --only NAME``, a report section and ``gvbench sweep NAME``
(``tests/test_experiment.py`` writes one in a short file; ``docs/experiments.md`` packages it).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.harness.draws import gradient_draws
from gvbench.harness.metrics import trace_variance
from gvbench.harness.quantities import ERRORS, quantity
from gvbench.study import PresetRun, Study
from gvbench.tasks.module import ModuleTask
from gvbench.threads import pinned_threads
from gvbench.training import (
    SGD,
    Optimizer,
    Run,
    RunConfig,
    Steps,
    TrainingDiverged,
    cached_checkpoint,
    check_one_group,
    finish_run,
    fit_runs,
    read_parameters,
    vectorised,
)
from gvbench.training.runs import BatchTransform

Splits = dict[str, tuple[Tensor, ...]]
ConfigT = TypeVar("ConfigT", bound=RunConfig)
# What a preset keeps of its variance sweep at a checkpoint: the error metrics and their SEs.
VARIANCE_METRICS = [variable for name in ERRORS for variable in quantity(name).variables]


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """The options of an experiment's harness task (``gvbench sweep NAME --task-option``):
    the model at a checkpoint, or briefly trained with ST-GS (τ = 1) and cached.

    An experiment subclasses it with the configuration fields its model is built from;
    they come first, as they do in the task's stored configuration.
    """

    train_steps: int = 300
    seed: int = 0
    checkpoint: str | None = None
    batch_pool: int = 64
    checkpoint_dir: str | None = None  # default: results/NAME/checkpoints


class Experiment(Study, Generic[ConfigT]):
    """An experiment: what to train and how to judge it. Subclass and fill in the hooks
    (``data``, ``model``, ``loss`` and ``score`` are abstract: a subclass without one
    cannot be made).

    Class attributes:
        name: the experiment's name (``gvbench train NAME``, the harness task's name).
        title: one line for ``gvbench train --help`` and its report section.
        Config: its :class:`~gvbench.training.RunConfig` subclass; every field becomes a
            ``gvbench train NAME`` option, with the help in its ``metadata["help"]``.
        presets: preset name → sizes (data), run by :meth:`run_preset`; none by default.
        Options: its :class:`TaskOptions` subclass (the harness task's options).
        selection: the validation figure runs are selected on (``valid_accuracy``, …).
        selection_units: its units.
        higher_is_better: whether a higher selection figure is better.
        relaxed_inputs, sequential_choices, max_draws_per_pass, reference_reps: what the
            harness needs to know of the model (see :class:`~gvbench.tasks.ModuleTask`).
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    Config: type[ConfigT]
    presets: ClassVar[Mapping[str, Any]] = {}
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    selection: ClassVar[str]
    selection_units: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    relaxed_inputs: ClassVar[bool] = False
    sequential_choices: ClassVar[bool] = False
    max_draws_per_pass: ClassVar[int | None] = None
    reference_reps: ClassVar[int] = 4000
    # The exact expected per-example losses, ``expected_loss(model, *inputs)`` → ``(B,)``
    # differentiable in the model's parameters, for an experiment that has them (independent
    # variables, or few enough outcomes to enumerate): a method of that name in the subclass.
    # Its harness task then measures bias² against the exact gradient. None: it has none.
    expected_loss: ClassVar[Callable[..., Tensor] | None] = None

    # -- the hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def data(self, config: ConfigT) -> tuple[Splits, str]:
        """``{"train", "valid", "test"}`` → the module's input tensors, and where they came from."""
        ...

    @abc.abstractmethod
    def model(self, config: ConfigT) -> nn.Module:
        """A fresh model, initialised from ``config.seed`` alone."""
        ...

    @abc.abstractmethod
    def loss(self, output: Any, *inputs: Tensor) -> Tensor:
        """Per-example training losses, shape ``(B,)``."""
        ...

    @abc.abstractmethod
    def score(self, output: Any, *inputs: Tensor) -> Tensor:
        """Per-example validation scores ``(B,)``; their mean is the selection figure."""
        ...

    def evaluation_sampler(self, generator: Any) -> Sampler:
        """The sampler scores are computed with (greedy, or hard samples from ``generator``)."""
        return lambda logits, *, dim=-1: E.categorical_one_hot(logits, dim, generator)

    def batch_transform(self, config: ConfigT) -> BatchTransform | None:
        """What becomes of each training batch a run draws, before its step:
        ``transform(inputs, generator) -> inputs``, its noise from the run's own generator
        for it (kept in its checkpoint, apart from its data order's and samples'; see
        :mod:`gvbench.training.runs`): dynamic binarization, a fresh Bernoulli draw of
        every pixel at every step, is one. ``None`` (the default): the batch as drawn.
        Validation and test inputs are never transformed."""
        return None

    def test_figures(self, model: nn.Module, splits: Splits, config: ConfigT) -> dict[str, Any]:
        """Test figures of a finished run's selected model (the run's own numbers alone)."""
        return {}

    def arity(self, config: ConfigT) -> int | None:
        """The number of categories of every choice, where it is one number."""
        return None

    def optimizer(self, config: ConfigT) -> Optimizer:
        """How a run's parameters move, from its own configuration: by default SGD with the
        run's ``lr`` and ``momentum`` after clipping its gradient to norm 5. An experiment
        that follows another protocol returns its own (see
        :class:`~gvbench.training.optimizers.Optimizer`)."""
        return Optimizer((("", SGD(config.lr, config.momentum)),), max_norm=5.0)

    def batch_size(self, config: ConfigT) -> int:
        """Examples a training step averages over."""
        return config.batch_size  # type: ignore[attr-defined]

    def units(self) -> dict[str, str]:
        return {self.selection: self.selection_units}

    def measured_parameters(self) -> Callable[[str, Tensor], bool] | None:
        """Which of the model's parameters its harness task differentiates (all: None)."""
        return None

    # -- what a reproduction runs ------------------------------------------------------------
    def run_preset(
        self, preset: str, out_dir: str | Path, run: PresetRun | None = None
    ) -> xr.Dataset:
        """Run every configuration of ``preset`` (resumable) and write ``out_dir/PRESET.nc``,
        one summary Dataset; ``run.seed`` offsets the preset's seeds. An experiment with
        presets overrides this; without any, every name is refused."""
        self.preset(preset)  # the KeyError that lists the presets there are
        raise TypeError(f"{type(self).__name__} has presets but does not define run_preset")

    def summary_table(self, summary: xr.Dataset) -> dict[str, Any]:
        """A preset's summary as titled pandas tables, for ``gvbench train NAME --preset``."""
        return {}

    def reproduce(self, preset: str, folder: Path, run: PresetRun) -> dict[str, str]:
        """:meth:`run_preset` into ``folder/NAME``; its one results file."""
        self.run_preset(preset, folder / self.name, run)
        return {self.name: f"{self.name}/{preset}.nc"}

    # -- the harness task --------------------------------------------------------------------
    def task(self, **options: Any) -> ModuleTask:
        """The model at a checkpoint as a harness task (``gvbench sweep NAME``), measured on
        the first B of ``batch_pool`` validation examples. Without ``checkpoint``, a model
        is trained for ``train_steps`` steps with ST-GS (τ = 1) and cached under
        ``checkpoint_dir``. The options are the fields of the experiment's ``Options``."""
        fields = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise TypeError(
                f"the {self.name} task takes no option {', '.join(unknown)}; its options: "
                f"{', '.join(fields)}"
            )
        given = dataclasses.asdict(self.Options(**options))
        shared = [f.name for f in dataclasses.fields(TaskOptions)]
        # The model's own fields first, as the task's stored configuration lists them.
        values = {k: given[k] for k in [*(f for f in fields if f not in shared), *shared]}
        checkpoint_dir = values.pop("checkpoint_dir") or Path("results") / self.name / "checkpoints"
        check_count(values["train_steps"], "train_steps", 1)
        filtered = self.measured_parameters()
        return self.checkpoint_task(
            values["checkpoint"],
            self.brief_run(values),
            checkpoint_dir,
            values["batch_pool"],
            {"task": self.name, **values},
            **({} if filtered is None else {"parameters": filtered}),
        )

    def brief_run(self, options: Mapping[str, Any]) -> ConfigT:
        """The run a task without a checkpoint trains: ST-GS at τ = 1 for ``train_steps``
        steps, from the task's options that are configuration fields."""
        steps = options["train_steps"]
        fields = {f.name for f in dataclasses.fields(self.Config)}
        given = {k: v for k, v in options.items() if k in fields}
        return self.Config(
            **{
                "estimator": "st_gumbel_softmax",
                "tau": 1.0,
                **given,
                "steps": steps,
                "eval_every": steps,
                "variance_every": 0,
            }
        )

    # -- what every experiment gets -----------------------------------------------------------
    def module_task(
        self,
        model: nn.Module,
        inputs: Sequence[Tensor],
        run_config: ConfigT,
        *,
        batched: bool | str = True,
        **options: Any,
    ) -> ModuleTask:
        """``model`` on a fixed batch as a harness task (vmap draws by default, not "auto":
        a choice made by timing would make an experiment's numbers depend on the machine)."""
        defaults = {
            "name": self.name,
            "arity": self.arity(run_config),
            "relaxed_inputs": self.relaxed_inputs,
            "sequential_choices": self.sequential_choices,
            "max_draws_per_pass": self.max_draws_per_pass,
            "reference_reps": self.reference_reps,
            "batched": batched,
            "expected_loss": self.expected_loss,
        }
        return ModuleTask(model, tuple(inputs), self.loss, **(defaults | options))

    def checkpoint_task(
        self,
        checkpoint: str | Path | None,
        brief_run: ConfigT,
        checkpoint_dir: str | Path,
        batch_pool: int,
        task_config: Mapping[str, Any],
        **options: Any,
    ) -> ModuleTask:
        """The harness task of the model at ``checkpoint`` — without one, at ``brief_run``
        (trained once, then cached in ``checkpoint_dir``) — measured on the first B of
        ``batch_pool`` validation examples of the run's own data."""
        check_count(batch_pool, "batch_pool", 1)
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise ValueError(f"checkpoint {checkpoint} is not a file")
        if checkpoint is None:
            checkpoint = cached_checkpoint(self.train, brief_run, checkpoint_dir)
        model, run_config, _ = checkpoint_model(self, checkpoint)
        splits, source = self.data(run_config)
        inputs = [x[:batch_pool] for x in splits["valid"]]
        config = {**task_config, "data": source}
        return self.module_task(model, inputs, run_config, config=config, **options)

    def train(
        self,
        configs: ConfigT | Sequence[ConfigT],
        out_dir: str | Path | None = None,
        progress: bool = True,
        final_checkpoints: Sequence[str | Path | None] | None = None,
    ) -> Any:
        """Train ``configs`` as one (see :mod:`gvbench.training`); resume from ``out_dir``.

        Writes ``out_dir/NAME/{checkpoint.pt, curves.nc}`` per run. One configuration: its
        curves, or :class:`TrainingDiverged`. Several: a list with each run's curves or its
        ``TrainingDiverged`` (one run's divergence does not stop the others).
        """
        single = isinstance(configs, RunConfig)
        configs = [configs] if single else list(configs)
        if not configs:
            return []
        out_dir = Path(out_dir) if out_dir is not None else Path("results") / self.name
        final_checkpoints = list(final_checkpoints or [None] * len(configs))
        check_one_group(configs)
        names = [config.name() for config in configs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # one folder, one checkpoint: the two would overwrite each other
            raise ValueError(f"configs lists a run twice: {', '.join(twice)}")
        first = configs[0]
        with pinned_threads(first.threads):
            data = [self.data(config) for config in configs]
            runs = self._runs(configs, data, out_dir)
            results = fit_runs(
                runs,
                self._steps(first),
                progress=progress,
                desc=f"{self.name}: {len(configs)} run{'s' * (len(configs) > 1)} as one",
            )
            out = [
                result if isinstance(result, TrainingDiverged) else self._finish(*parts, result)
                for *parts, result in zip(
                    configs, runs, data, final_checkpoints, results, strict=True
                )
            ]
        if single:
            if isinstance(out[0], TrainingDiverged):
                raise out[0]
            return out[0]
        return out

    def _runs(
        self, configs: list[ConfigT], data: list[tuple[Splits, str]], out_dir: Path
    ) -> list[Run]:
        """Each configuration's run, its model and data on its device."""
        device = torch.device(configs[0].device)
        for config, (splits, source) in zip(configs, data, strict=True):
            examples = len(splits["train"][0])
            if self.batch_size(config) > examples:  # it would train on the whole set
                raise ValueError(
                    f"batch_size must be at most the {examples} training examples of "
                    f"{source}, got {self.batch_size(config)}"
                )
        return [
            Run(
                directory=out_dir / config.name(),
                config=config.as_dict(),
                seed=config.seed,
                optimizer=self.optimizer(config),
                tau=config.estimator_options().get("tau"),
                tau_schedule=None if config.tau_schedule is None else config.temperature,
                model=self.model(config).to(device),
                train=_on(splits["train"], device),
                valid=_on(splits["valid"], device),
                transform=self.batch_transform(config),
            )
            for config, (splits, _) in zip(configs, data, strict=True)
        ]

    def _finish(
        self,
        config: ConfigT,
        run: Run,
        data: tuple[Splits, str],
        final: str | Path | None,
        result: Any,
    ) -> xr.Dataset:
        """A finished run's curves and test figures, written beside its checkpoint."""
        splits, source = data
        device = torch.device(config.device)
        best = copy.deepcopy(run.model)
        best.load_state_dict(result["best"]["params"], strict=False)
        figures = {
            "data": source,
            f"best_{self.selection}": result["best_score"],
            f"initial_{self.selection}": result["initial_score"],
            # The score at the last step: a search can prefer rates that still hold at the end.
            f"final_{self.selection}": result["rows"][-1]["selection"],
            **self.test_figures(best, {k: _on(v, device) for k, v in splits.items()}, config),
        }
        return finish_run(
            run.directory,
            config,
            result,
            f"{self.name} training curves: {config.name()}",
            figures,
            {**self.units(), "gradient_variance": "1", "gradient_variance_se": "1"},
            final,
        )

    def _steps(self, config: ConfigT) -> Steps:
        batch_size = self.batch_size(config)
        options = config.estimator_options()

        measure = None
        if config.variance_every:

            def measure(
                run: Run, model: nn.Module, estimator: E.Estimator, generator: torch.Generator
            ) -> tuple[float, float]:
                # vmap where the estimator can run under it, not "auto": a choice made by
                # timing would make the curve depend on how busy the machine was. Measured on
                # the first B of the run's own validation examples, with the estimator's
                # state frozen where it is.
                task = self.module_task(
                    model,
                    [x[:batch_size] for x in run.valid],
                    config,
                    batched=vectorised(estimator),
                )
                with warnings.catch_warnings():
                    # An estimator that branches on values falls back to one draw per pass,
                    # as the training itself did; the curve need not say so every time.
                    warnings.filterwarnings("ignore", ".*cannot be measured under torch.func")
                    draws = gradient_draws(
                        task, estimator.freeze(), config.variance_reps, batch_size, generator
                    )
                return trace_variance(draws)

        return Steps(
            estimator=lambda **run: E.get(config.estimator, **{**options, **run}),
            loss=self.loss,
            score=self.score,
            evaluation_sampler=self.evaluation_sampler,
            steps=config.steps,
            batch_size=batch_size,
            eval_every=config.eval_every,
            variance=measure,
            variance_every=config.variance_every,
            higher_is_better=self.higher_is_better,
            selection=self.selection,
        )


def _on(inputs: tuple[Tensor, ...], device: Any) -> tuple[Tensor, ...]:
    return tuple(x.to(device) for x in inputs)


def checkpoint_model(
    experiment: Experiment, checkpoint: str | Path
) -> tuple[nn.Module, RunConfig, Mapping[str, Any]]:
    """The model a best-parameters checkpoint holds, its configuration, and the raw file."""
    saved = read_parameters(checkpoint)
    fields = {f.name for f in dataclasses.fields(experiment.Config)}
    stored = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()}
    config = experiment.Config(**{k: v for k, v in stored.items() if k in fields})
    model = experiment.model(config)
    model.load_state_dict(saved["params"], strict=False)
    return model, config, saved


def curves_of(out_dir: str | Path, config: RunConfig) -> xr.Dataset:
    return xr.load_dataset(Path(out_dir) / config.name() / "curves.nc")
