"""Shapes, devices and objectives shared by the benchmark modules (no benchmarks here)."""

from __future__ import annotations

import math
import statistics
import time

import torch

import gvbench.estimators as E
from gvbench import plugins

plugins.load()  # installed estimators are benchmarked like the built-in ones

# Logits shapes of the paper's experiments (batch, …, categories).
SHAPES = {
    "toy": (10_000, 3),  # 10⁴ draws of the 3-category toy, as the harness batches them
    "latents-20x10": (100, 20, 10),  # the discrete VAE's: 20 latents of arity 10, batch 100
    "latents-60x4": (100, 60, 4),
    "latents-30x16": (100, 30, 16),
    "merges-49": (50, 49),  # the Tree-LSTM's at L = 50: a choice among 49 merges, batch 50
    "binary-200": (100, 200, 2),  # 200 Bernoulli latents, batch 100
}
DEVICES = ["cpu", "cuda"]
ENUMERABLE = {"toy"}  # shapes whose joint outcomes per example are few enough to enumerate


def device_or_skip(device: str) -> torch.device:
    """The device, or NotImplementedError (asv's "skip this parameter") when it is absent."""
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("CUDA is not available")
    return torch.device(device)


def synchronized_timer() -> float:
    """A wall clock that first waits for queued CUDA work, so GPU timings are real."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def check_applicable(name: str, shape: str, k: int | None = None) -> None:
    """NotImplementedError for an estimator that cannot run on a shape (asv skips it)."""
    info = E.info(name)
    if info.without_replacement:
        _, *variables, arity = SHAPES[shape]
        outcomes = arity ** math.prod(variables)
        k = info.defaults["k"] if k is None else k
        if outcomes < k:
            raise NotImplementedError(f"{name} draws {k} distinct samples; {shape} has {outcomes}")
    if info.binary_only and SHAPES[shape][-1] != 2:
        raise NotImplementedError(f"{name} is binary-only")
    if info.exact and shape not in ENUMERABLE:
        raise NotImplementedError(f"{shape} has too many joint outcomes to enumerate")


class ForwardBackward:
    """One forward and backward pass of an estimator on a quadratic objective."""

    def __init__(self, name: str, shape: str, device: str, **options: object) -> None:
        self.device = device_or_skip(device)
        check_applicable(name, shape, options.get("k"))
        generator = torch.Generator(device=self.device).manual_seed(0)
        self.logits = torch.randn(
            SHAPES[shape], device=self.device, generator=generator
        ).requires_grad_()
        self.weights = torch.randn(SHAPES[shape][-1], device=self.device, generator=generator)
        self.estimator = E.get(name, **options)
        # a k-subset estimator chooses half of each row's items
        subset = E.info(name).variable == "subset"
        self.size = (max(1, SHAPES[shape][-1] // 2),) if subset else ()
        self.generator = generator
        self.run()  # warm-up: CUDA context, kernels and allocator outside the timing
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def objective(self, sample):
        y = sample(self.logits, *self.size)
        per_variable = (y * self.weights).sum(-1) ** 2
        return per_variable.reshape(per_variable.shape[0], -1).sum(-1)

    def run(self) -> None:
        self.logits.grad = None
        self.estimator(self.objective, generator=self.generator).sum().backward()


class CategoricalVAE(torch.nn.Module):
    """A user's model: MLP encoder and decoder around 30 categorical latents of arity 10
    (1.1 × 10⁶ parameters at 512 hidden units), the sampler called where the user would
    call ``F.gumbel_softmax``."""

    def __init__(self, hidden: int = 512, latents: int = 30, arity: int = 10) -> None:
        super().__init__()
        self.latents, self.arity = latents, arity
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, latents * arity)
        )
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(latents * arity, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 784)
        )

    def forward(self, x: torch.Tensor, sample) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.encoder(x).view(len(x), self.latents, self.arity)
        return self.decoder(sample(logits).flatten(1)), logits

    @staticmethod
    def negative_elbo(output: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        pixels, logits = output
        reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(
            pixels, x, reduction="none"
        ).sum(-1)
        log_q = logits.log_softmax(-1)
        return reconstruction + (log_q.exp() * log_q).sum((-1, -2))


def binary_images(count: int, seed: int = 1) -> torch.Tensor:
    """``count`` random binary 28 × 28 images (a fixed batch)."""
    return (torch.rand(count, 784, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def plain_autograd_loop(
    model: torch.nn.Module, x: torch.Tensor, draws: int, seed: int = 0
) -> float:
    """What a user would write to measure the gradient variance of ST-GS on ``model``: one
    forward and backward pass per draw, the gradient flattened and its sum and sum of squares
    accumulated in float64. Returns the trace of the covariance."""
    parameters = list(model.parameters())
    size = sum(p.numel() for p in parameters)
    total = torch.zeros(size, dtype=torch.float64)
    squares = torch.zeros(size, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        output = model(
            x, sample=lambda logits: E.st_gumbel_softmax(logits, 0.5, generator=generator)
        )
        loss = CategoricalVAE.negative_elbo(output, x).mean()
        flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)]).double()
        total.add_(flat)
        squares.addcmul_(flat, flat)
    return float(squares.sum() - total.square().sum() / draws) / (draws - 1)


def interleaved_ratio(measured, baseline, rounds: int) -> float:
    """Median over ``rounds`` of time(measured) / time(baseline), the two run alternately
    in one process after one untimed run of each (warm-up): load on a shared machine moves
    both and cancels in each round's ratio."""
    measured()
    baseline()
    ratios = []
    for _ in range(rounds):
        start = time.perf_counter()
        measured()
        middle = time.perf_counter()
        baseline()
        ratios.append((middle - start) / (time.perf_counter() - middle))
    return statistics.median(ratios)
