"""The shape every experiment shares: data, an ordinary ``nn.Module``, a loss, what it
reports — and, written once here, its training (many runs as one, on any device) and its
harness task (the model at a trained checkpoint, measured through ``ModuleTask``).

An experiment subclasses :class:`Experiment` and fills in the hooks; its model is a module
like a user's, whose ``forward(*inputs, sample=…)`` calls the sampler at every discrete
choice. ``tests/test_experiment.py`` writes a third experiment in one short file.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import xarray as xr
from torch import Tensor, nn

import gvbench.estimators as E
from gvbench.estimators import Sampler
from gvbench.estimators.validation import check_count
from gvbench.harness.draws import gradient_draws
from gvbench.harness.metrics import trace_variance
from gvbench.run_group import Run, Steps, fit_runs, vectorised
from gvbench.tasks.module import ModuleTask
from gvbench.threads import pinned_threads
from gvbench.training import (
    RunConfig,
    TrainingDiverged,
    cached_checkpoint,
    check_one_group,
    finish_run,
    read_parameters,
)

Splits = dict[str, tuple[Tensor, ...]]


class Experiment(abc.ABC):
    """An experiment: what to train and how to judge it. Subclass and fill in the hooks
    (``data``, ``model``, ``loss`` and ``score`` are abstract: a subclass without one
    cannot be made).

    Class attributes:
        name: the experiment's name (``gvbench train NAME``, the harness task's name).
        Config: its :class:`~gvbench.training.RunConfig` subclass.
        selection: the validation figure runs are selected on (``valid_accuracy``, …).
        selection_units: its units.
        higher_is_better: whether a higher selection figure is better.
        relaxed_inputs, sequential_choices, max_draws_per_pass, reference_reps: what the
            harness needs to know of the model (see :class:`~gvbench.tasks.ModuleTask`).
    """

    name: ClassVar[str]
    Config: ClassVar[type[RunConfig]]
    selection: ClassVar[str]
    selection_units: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    relaxed_inputs: ClassVar[bool] = False
    sequential_choices: ClassVar[bool] = False
    max_draws_per_pass: ClassVar[int | None] = None
    reference_reps: ClassVar[int] = 4000

    # -- the hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def data(self, config: RunConfig) -> tuple[Splits, str]:
        """``{"train", "valid", "test"}`` → the module's input tensors, and where they came from."""
        ...

    @abc.abstractmethod
    def model(self, config: RunConfig) -> nn.Module:
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

    def report(self, model: nn.Module, splits: Splits, config: RunConfig) -> dict[str, Any]:
        """Test figures of a finished run's selected model (the run's own numbers alone)."""
        return {}

    def arity(self, config: RunConfig) -> int | None:
        """The number of categories of every choice, where it is one number."""
        return None

    def batch_size(self, config: RunConfig) -> int:
        return config.batch_size  # type: ignore[attr-defined]

    def units(self) -> dict[str, str]:
        return {self.selection: self.selection_units}

    # -- what every experiment gets -----------------------------------------------------------
    def module_task(
        self,
        model: nn.Module,
        inputs: Sequence[Tensor],
        run_config: RunConfig,
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
        }
        return ModuleTask(model, tuple(inputs), self.loss, **(defaults | options))

    def checkpoint_task(
        self,
        checkpoint: str | Path | None,
        brief_run: RunConfig,
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
        configs: RunConfig | Sequence[RunConfig],
        out_dir: str | Path | None = None,
        progress: bool = True,
        final_checkpoints: Sequence[str | Path | None] | None = None,
    ) -> Any:
        """Train ``configs`` as one (see :mod:`gvbench.run_group`); resume from ``out_dir``.

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
        device = torch.device(first.device)
        with pinned_threads(first.threads):
            data = [self.data(config) for config in configs]
            for config, (splits, source) in zip(configs, data, strict=True):
                examples = len(splits["train"][0])
                if self.batch_size(config) > examples:  # it would train on the whole set
                    raise ValueError(
                        f"batch_size must be at most the {examples} training examples of "
                        f"{source}, got {self.batch_size(config)}"
                    )
            runs = [
                Run(
                    directory=out_dir / config.name(),
                    config=config.as_dict(),
                    seed=config.seed,
                    lr=config.lr,
                    momentum=config.momentum,
                    tau=config.estimator_options().get("tau"),
                    model=self.model(config).to(device),
                    train=_on(splits["train"], device),
                    valid=_on(splits["valid"], device),
                )
                for config, (splits, _) in zip(configs, data, strict=True)
            ]
            results = fit_runs(
                runs,
                self._steps(first),
                progress=progress,
                desc=f"{self.name}: {len(configs)} run{'s' * (len(configs) > 1)} as one",
            )
            out = []
            for config, run, (splits, source), result, final in zip(
                configs, runs, data, results, final_checkpoints, strict=True
            ):
                if isinstance(result, TrainingDiverged):
                    out.append(result)
                    continue
                best = copy.deepcopy(run.model)
                best.load_state_dict(result["best"]["params"], strict=False)
                figures = {
                    "data": source,
                    f"best_{self.selection}": result["best_score"],
                    f"initial_{self.selection}": result["initial_score"],
                    **self.report(best, {k: _on(v, device) for k, v in splits.items()}, config),
                }
                out.append(
                    finish_run(
                        run.directory,
                        config,
                        result,
                        f"{self.name} training curves: {config.name()}",
                        figures,
                        {**self.units(), "gradient_variance": "1", "gradient_variance_se": "1"},
                        final,
                    )
                )
        if single:
            if isinstance(out[0], TrainingDiverged):
                raise out[0]
            return out[0]
        return out

    def _steps(self, config: RunConfig) -> Steps:
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
