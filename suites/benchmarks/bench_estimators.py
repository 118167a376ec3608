"""Time and memory of one forward+backward pass of every registered estimator.

The estimator list is read from the registry, so a newly registered estimator is benchmarked
without editing this file; asv matches results across commits by parameter *value*.
"""

from __future__ import annotations

import statistics
import time

import torch

import gvbench.estimators as E

from .workloads import DEVICES, SHAPES, ForwardBackward, synchronized_timer


class _ForwardBackwardBenchmarks:
    """Time and peak RSS of ``self.workload.run()`` (set by ``setup``)."""

    timer = staticmethod(synchronized_timer)

    def time_forward_backward(self, *params):
        self.workload.run()

    def peakmem_forward_backward(self, *params):
        self.workload.run()


class _CudaPeakMemory:
    """Peak bytes held by the CUDA allocator during ``self.workload.run()``."""

    def track_cuda_peak_bytes(self, *params):
        self.workload.run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    track_cuda_peak_bytes.unit = "bytes"


class Estimators(_ForwardBackwardBenchmarks):
    """Every estimator at its default hyper-parameters (τ = 1, K = 1; RLOO K = 2)."""

    params = (list(E.available()), list(SHAPES), DEVICES)
    param_names = ("estimator", "shape", "device")

    def setup(self, name, shape, device):
        self.workload = ForwardBackward(name, shape, device)


class EstimatorsCudaMemory(_CudaPeakMemory):
    params = (list(E.available()), list(SHAPES))
    param_names = ("estimator", "shape")

    def setup(self, name, shape):
        self.workload = ForwardBackward(name, shape, "cuda")


GUMBEL_RAO_K = [1, 10, 100, 1000]
GUMBEL_RAO_SHAPES = ["latents-20x10", "latents-60x4", "latents-30x16", "merges-49"]


class GumbelRao(_ForwardBackwardBenchmarks):
    """GR-MCK over K: time should grow linearly, memory should stay flat."""

    params = (GUMBEL_RAO_K, GUMBEL_RAO_SHAPES, DEVICES)
    param_names = ("k", "shape", "device")
    timeout = 180

    def setup(self, k, shape, device):
        self.workload = ForwardBackward("gumbel_rao", shape, device, tau=0.5, k=k)


class GumbelRaoOverUniforms:
    """GR-MCK's forward+backward time over the time of drawing its K·numel uniforms.

    Nothing can be cheaper than the uniforms, so the ratio is GR-MCK's distance from the
    floor. Both are timed in the same process, interleaved, on one thread, and the median
    ratio is tracked: machine load moves both timings and cancels in the ratio.
    """

    params = ([10, 100, 1000], ["toy", "latents-20x10", "merges-49"])
    param_names = ("k", "shape")
    number = 1
    repeat = 1
    timeout = 180

    def setup(self, k, shape):
        torch.set_num_threads(1)
        self.workload = ForwardBackward("gumbel_rao", shape, "cpu", tau=0.5, k=k)
        self.size = k * self.workload.logits.numel()
        self.rounds = 5 if k >= 1000 else 11

    def track_time_over_uniforms(self, k, shape):
        generator = torch.Generator().manual_seed(0)
        ratios = []
        for _ in range(self.rounds):
            start = time.perf_counter()
            self.workload.run()
            middle = time.perf_counter()
            torch.rand(self.size, generator=generator)
            ratios.append((middle - start) / (time.perf_counter() - middle))
        return statistics.median(ratios)

    track_time_over_uniforms.unit = "× uniforms"


class GumbelRaoCudaMemory(_CudaPeakMemory):
    params = (GUMBEL_RAO_K, GUMBEL_RAO_SHAPES)
    param_names = ("k", "shape")

    def setup(self, k, shape):
        self.workload = ForwardBackward("gumbel_rao", shape, "cuda", tau=0.5, k=k)
