"""Training: many runs as one against one run, in the same process, interleaved."""

from __future__ import annotations

import tempfile

import torch

from benchmarks.step_cost import step_cost
from benchmarks.workloads import interleaved_ratio
from gvbench.listops.experiment import LISTOPS
from gvbench.listops.experiment import TrainConfig as ListOpsConfig
from gvbench.vae.experiment import VAE_EXPERIMENT
from gvbench.vae.experiment import TrainConfig as VAEConfig


class RunsAsOne:
    """Eight ListOps seeds (or eight VAE trials of a learning-rate search) trained as one,
    over one of them alone: what the seven others add (the goal: at most 2×). A run alone
    pays for the spare run every stack carries (see gvbench.run_group)."""

    params = (["listops", "vae"],)
    quick_params = (["listops-quick", "vae-quick"],)
    param_names = ("experiment",)
    number = 1
    repeat = 1
    timeout = 1800

    def setup(self, experiment):
        torch.set_num_threads(1)
        quick = experiment.endswith("-quick")  # make test: a pipeline check, not a measurement
        steps, self.rounds = (20, 1) if quick else (400, 3)
        if experiment.startswith("listops"):
            self.experiment = LISTOPS
            small = {"sizes": (200, 40, 40), "d_hidden": 8} if quick else {}
            self.runs = [
                ListOpsConfig(tau=0.5, steps=steps, seed=seed, variance_every=0, **small)
                for seed in range(8)
            ]
        else:
            self.experiment = VAE_EXPERIMENT
            small = {"hidden": 32, "latent_dim": 16, "iw_samples": 2} if quick else {}
            self.runs = [
                VAEConfig(
                    tau=0.5, steps=steps, lr=10 ** (-3 + trial / 4), variance_every=0, **small
                )
                for trial in range(8)
            ]
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
    """Kernels one training step launches for a stack of the ``small`` presets' shapes (four
    runs, GR-MC10): on a GPU each launch costs microseconds whatever its size, so this is
    what a step costs there at least; counted on the CPU (see benchmarks.step_cost)."""

    params = (["listops", "vae"],)
    param_names = ("experiment",)
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, experiment):
        torch.set_num_threads(1)
        if experiment == "listops":
            self.experiment = LISTOPS
            shared = dict(estimator="gumbel_rao", k=10, tau=0.5, d_hidden=32, sizes=(300, 50, 50))
            self.stack = [ListOpsConfig(seed=seed, **shared) for seed in range(4)]
        else:
            self.experiment = VAE_EXPERIMENT
            shared = dict(estimator="gumbel_rao", k=10, tau=0.5, arity=8, batch_size=200)
            shared |= dict(hidden=128, latent_dim=64, iw_samples=2)
            self.stack = [VAEConfig(seed=seed, **shared) for seed in range(4)]
        self.cost = step_cost(self.experiment.train, self.stack, variance_every=0)

    def track_kernels(self, experiment):
        return self.cost["kernels"]

    track_kernels.unit = "kernels a step"
