"""Statistics tracked next to speed: a commit that changes an estimator's law shows here."""

from __future__ import annotations

import torch

import gvbench.estimators as E
from gvbench.harness import gradient_draws, gradient_metrics, reference_gradient
from gvbench.tasks import Toy

CONFIGURATIONS = {
    "st_gumbel_softmax(tau=0.1)": ("st_gumbel_softmax", {"tau": 0.1}),
    "gumbel_rao(tau=0.1,k=10)": ("gumbel_rao", {"tau": 0.1, "k": 10}),
    "gumbel_rao(tau=0.1,k=100)": ("gumbel_rao", {"tau": 0.1, "k": 100}),
    "reinmax(tau=1)": ("reinmax", {"tau": 1.0}),
    "reinforce": ("reinforce", {}),
    "rloo(k=4)": ("rloo", {"k": 4}),
}


class ToyStatistics:
    """Variance and MSE on the paper's toy (n = 3, fixed θ), 20 000 seeded draws."""

    params = (list(CONFIGURATIONS),)
    param_names = ("estimator",)
    # The numbers are deterministic: one evaluation is enough.
    number = 1
    repeat = 1

    def setup(self, configuration):
        name, options = CONFIGURATIONS[configuration]
        task = Toy(theta=[0.6, -0.2, 0.1])
        draws = gradient_draws(
            task, E.get(name, **options), 20_000, 1, torch.Generator().manual_seed(0)
        )
        self.metrics = gradient_metrics(draws, reference_gradient(task, 1))

    def track_variance(self, configuration):
        return self.metrics["variance"]

    track_variance.unit = "gradient variance (trace)"

    def track_mse(self, configuration):
        # MSE rather than bias², which is finite-sample corrected and can be negative: asv
        # judges changes by ratios, which mean nothing across zero.
        return self.metrics["mse"]

    track_mse.unit = "mean squared error"
