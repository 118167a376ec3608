"""What the harness's standard errors cover: repeated experiments on draws of known law.

Each experiment draws N gradients from a law whose mean and covariance are known, measures
them against a reference (exact, or itself the mean of N_ref draws of the same law, as an
RLOO reference is), and asks whether the two-sided 95% interval ``value ± 1.96 SE`` of each
metric holds the exact value. The share of experiments whose interval does is the coverage.

Laws: Gaussian (a pathwise estimator's draws), three-valued and skewed (a straight-through
estimator's), Student-t with ν = 10 (heavy-tailed; finite moments below the 10th). Bias: zero
(the reference is the mean) or large (every coordinate off by 2, about 40 standard errors).

``python -m tests.coverage`` prints the tables docs/guide/harness.md quotes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import numpy as np
import torch

from gvbench.harness.metrics import GradientMoments, Reference, gradient_metrics

P = 4
MU = np.array([1.0, -0.5, 0.2, 0.0])
SCALE = np.array([1.0, 2.0, 0.5, 0.1])
VALUES = np.array([[2.0, -1.0, 0.5, 0.0], [-3.0, 0.5, 1.0, 2.0], [0.5, 0.5, -4.0, 1.0]])
WEIGHTS = np.array([0.6, 0.3, 0.1])
METRICS = ("variance", "bias2", "mse", "cosine", "snr")
Z95 = 1.959964
NU = 10


@dataclasses.dataclass(frozen=True)
class Law:
    """Draws of known mean and covariance."""

    name: str
    mean: np.ndarray
    covariance: np.ndarray
    draw: Callable[[int, np.random.Generator], np.ndarray]


def _gaussian(n: int, rng: np.random.Generator) -> np.ndarray:
    return MU + SCALE * rng.standard_normal((n, P))


def _three_valued(n: int, rng: np.random.Generator) -> np.ndarray:
    return VALUES[rng.choice(3, size=n, p=WEIGHTS)]


def _student(n: int, rng: np.random.Generator) -> np.ndarray:
    # A scale mixture of Gaussians: covariance SCALE², tails like |x|^-(ν+1).
    mixing = np.sqrt((NU - 2) / rng.chisquare(NU, size=(n, 1)))
    return MU + SCALE * rng.standard_normal((n, P)) * mixing


def _three_valued_covariance() -> np.ndarray:
    centred = VALUES - WEIGHTS @ VALUES
    return (WEIGHTS[:, None] * centred).T @ centred


LAWS = {
    "gaussian": Law("gaussian", MU, np.diag(SCALE**2), _gaussian),
    "three-valued": Law(
        "three-valued", WEIGHTS @ VALUES, _three_valued_covariance(), _three_valued
    ),
    "student-t": Law("student-t", MU, np.diag(SCALE**2), _student),
}


def exact_values(law: Law, reference: np.ndarray) -> dict[str, float]:
    trace = float(np.trace(law.covariance))
    bias2 = float(((law.mean - reference) ** 2).sum())
    norms = np.linalg.norm(law.mean) * np.linalg.norm(reference)
    return {
        "variance": trace,
        "bias2": bias2,
        "mse": bias2 + trace,
        "cosine": float(law.mean @ reference / norms),
        "snr": float(np.linalg.norm(law.mean) / np.sqrt(trace / P)),
    }


def sampled_reference(law: Law, offset: float, count: int, rng: np.random.Generator) -> Reference:
    """A reference as the harness makes one: the mean of ``count`` draws, with the spread of
    those draws measured (shifted by ``offset``, so that the estimator has that bias)."""
    draws = law.draw(count, rng)
    mean = draws.mean(0)
    spread = GradientMoments(Reference(np.zeros(P)))
    spread.add(torch.as_tensor(draws.copy()))
    return Reference(
        mean + offset,
        variance=float(((draws - mean) ** 2).sum() / (count - 1)),
        count=count,
        kind="sampled",
        covariance_square=spread.covariance_square(),
        variance_se=spread.metrics()["variance_se"],
    )


def coverage(
    law: Law, offset: float, draws: int, seeds: int, reference_draws: int = 0
) -> dict[str, float]:
    """The share of ``seeds`` experiments whose 95% interval holds each metric's exact value."""
    exact = exact_values(law, law.mean + offset)
    held = dict.fromkeys(METRICS, 0)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        if reference_draws:
            reference = sampled_reference(law, offset, reference_draws, rng)
        else:
            reference = Reference(law.mean + offset)
        measured = gradient_metrics(law.draw(draws, rng), reference)
        for name in METRICS:
            held[name] += abs(measured[name] - exact[name]) <= Z95 * measured[f"{name}_se"]
    return {name: count / seeds for name, count in held.items()}


# The harness's own draws on the toy (exact reference): a pathwise, a score-function and an
# adapted stateful estimator. Their exact metrics come from one long run of the same cell.
ESTIMATORS = {
    "gumbel_softmax": "pathwise (GS, τ = 0.5)",
    "rloo": "score function (RLOO, K = 2)",
    "reinforce": "adapted baseline (REINFORCE, 1000 steps)",
}


def estimator_coverage(seeds: int = 200, draws: int = 1000, long: int = 400_000) -> dict:
    """Coverage of each metric's interval for cells of the harness's own draws, across
    ``seeds`` master seeds, against the metrics of one ``long`` cell of the same estimator."""
    import warnings

    import gvbench
    from gvbench.tasks import Toy

    task = Toy(theta=[0.6, -0.2, 0.1])
    grid = {"estimators": list(ESTIMATORS), "tau": [0.5], "k": [2], "warmup": 1000}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = gvbench.sweep(task, reps=long, seed=10**6, progress=False, **grid)
        cells = gvbench.sweep(task, reps=draws, seed=list(range(seeds)), progress=False, **grid)
    shares = {}
    for name in ESTIMATORS:
        truth, measured = exact.sel(estimator=name).squeeze(), cells.sel(estimator=name).squeeze()
        shares[name] = {
            m: float((abs(measured[m] - truth[m]) <= Z95 * measured[f"{m}_se"]).mean())
            for m in METRICS
        }
    return shares


def main() -> None:
    print("coverage of the harness's own cells (toy, τ = 0.5, 1000 draws, 200 seeds)")
    print(f"{'estimator':42s}  " + "  ".join(f"{m:>8s}" for m in METRICS))
    for name, shares in estimator_coverage().items():
        print(f"{ESTIMATORS[name]:42s}  " + "  ".join(f"{shares[m]:8.3f}" for m in METRICS))
    draws, seeds = 1000, 1000
    print(f"coverage of value ± 1.96 SE over {seeds} experiments of {draws} draws each")
    print(f"{'law':13s} {'bias':5s} {'reference':>9s}  " + "  ".join(f"{m:>8s}" for m in METRICS))
    for law in LAWS.values():
        for label, offset in (("zero", 0.0), ("large", 2.0)):
            for reference_draws in (0, 2000):
                shares = coverage(law, offset, draws, seeds, reference_draws)
                shown = "exact" if not reference_draws else f"{reference_draws}"
                cells = "  ".join(f"{shares[m]:8.3f}" for m in METRICS)
                print(f"{law.name:13s} {label:5s} {shown:>9s}  {cells}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
