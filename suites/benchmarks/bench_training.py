"""Training: many runs as one against one run, in the same process, interleaved, for every
installed experiment that trains a model."""

from __future__ import annotations

import dataclasses
import tempfile

import torch

from benchmarks.step_cost import step_cost, trained_experiments
from benchmarks.workloads import interleaved_ratio

EXPERIMENTS = sorted(trained_experiments())


# The preset a measurement takes its first run from: the paper's studies' small, the field's
# tasks' cpu (both sized for 2 cores).
MEASURED_PRESETS = ("small", "cpu")


def _stack(experiment, preset: str | None, runs: int, **fields):
    """``runs`` seeds of the first run of ``preset`` (None: the first of MEASURED_PRESETS the
    experiment has), with ``fields`` changed: a stack. An experiment that lists no runs of
    such a preset cannot be measured here (asv's NotImplementedError)."""
    if preset is None:
        preset = next((p for p in MEASURED_PRESETS if p in experiment.presets), None)
    if preset not in experiment.presets or not hasattr(experiment, "preset_runs"):
        raise NotImplementedError(f"{experiment.name} lists no runs of a {preset} preset")
    first = experiment.preset_runs(preset)[0]
    return [dataclasses.replace(first, seed=seed, **fields) for seed in range(runs)]


class RunsAsOne:
    """Eight seeds of each experiment's first ``small`` (or ``cpu``) run trained as one, over one of them
    alone: what the seven others add (the goal: at most 2×). A run alone pays for the spare
    run every stack carries (see gvbench.training)."""

    params = (EXPERIMENTS,)
    quick_params = ([f"{name}-quick" for name in EXPERIMENTS],)
    param_names = ("experiment",)
    number = 1
    repeat = 1
    timeout = 1800

    def setup(self, experiment):
        torch.set_num_threads(1)
        quick = experiment.endswith("-quick")  # make test: a pipeline check, not a measurement
        name = experiment.removesuffix("-quick")
        steps, self.rounds = (20, 1) if quick else (400, 3)
        self.experiment = trained_experiments()[name]
        fields = {"steps": steps, "variance_every": 0}
        self.runs = _stack(self.experiment, "tiny" if quick else None, 8, **fields)
        self.alone = self.runs[3]

    def train(self, configs):
        with tempfile.TemporaryDirectory() as folder:
            self.experiment.train(configs, out_dir=folder, progress=False)

    def track_eight_over_one(self, experiment):
        return interleaved_ratio(
            lambda: self.train(self.runs), lambda: self.train(self.alone), rounds=self.rounds
        )

    track_eight_over_one.unit = "× one run"


class StepLaunches:
    """Kernels one training step launches for a stack of four seeds of each experiment's
    first ``small`` (or ``cpu``) run: on a GPU each launch costs microseconds whatever its size, so this
    is what a step costs there at least; counted on the CPU (see benchmarks.step_cost)."""

    params = (EXPERIMENTS,)
    param_names = ("experiment",)
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, experiment):
        torch.set_num_threads(1)
        self.experiment = trained_experiments()[experiment]
        stack = _stack(self.experiment, None, 4)
        if not hasattr(self.experiment, "counting_overrides"):
            raise NotImplementedError(f"{experiment} says no sizes to count its kernels at")
        shrunk = self.experiment.counting_overrides(stack[0])
        self.cost = step_cost(self.experiment.train, stack, **shrunk)

    def track_kernels(self, experiment):
        return self.cost["kernels"]

    track_kernels.unit = "kernels a step"
