"""Shapes, devices and objectives shared by the benchmark modules (no benchmarks here)."""

from __future__ import annotations

import math
import time

import torch

import gvbench.estimators as E
from gvbench import plugins

plugins.load()  # installed estimators are benchmarked like the built-in ones

# Logits shapes of the paper's experiments (batch, …, categories).
SHAPES = {
    "toy": (10_000, 3),  # 10⁴ draws of the 3-category toy, as the harness batches them
    "vae-20x10": (100, 20, 10),  # VAE: 20 latents of arity 10, batch 100
    "vae-60x4": (100, 60, 4),
    "vae-30x16": (100, 30, 16),
    "listops-49": (50, 49),  # ListOps L = 50: a choice among 49 merges, batch 50
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
        self.generator = generator
        self.run()  # warm-up: CUDA context, kernels and allocator outside the timing
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def objective(self, sample):
        y = sample(self.logits)
        per_variable = (y * self.weights).sum(-1) ** 2
        return per_variable.reshape(per_variable.shape[0], -1).sum(-1)

    def run(self) -> None:
        self.logits.grad = None
        self.estimator(self.objective, generator=self.generator).sum().backward()
