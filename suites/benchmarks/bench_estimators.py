"""Time and memory of one forward+backward pass of every registered estimator.

The estimator list is read from the registry, so a newly registered estimator is benchmarked
without editing this file; asv matches results across commits by parameter *value*.
"""

from __future__ import annotations

import torch

import gvbench.estimators as E

from .workloads import DEVICES, SHAPES, ForwardBackward, synchronized_timer


class Estimators:
    """Every estimator at its default hyper-parameters (τ = 1, K = 1; RLOO K = 2)."""

    params = (list(E.available()), list(SHAPES), DEVICES)
    param_names = ("estimator", "shape", "device")
    timer = staticmethod(synchronized_timer)

    def setup(self, name, shape, device):
        self.workload = ForwardBackward(name, shape, device)

    def time_forward_backward(self, name, shape, device):
        self.workload.run()

    def peakmem_forward_backward(self, name, shape, device):
        self.workload.run()

    def track_cuda_peak_bytes(self, name, shape, device):
        if device != "cuda":
            raise NotImplementedError("CUDA allocator statistics only")
        self.workload.run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    track_cuda_peak_bytes.unit = "bytes"


class GumbelRao:
    """GR-MCK over K: time should grow linearly, memory should stay flat."""

    params = ([1, 10, 100, 1000], ["vae-20x10", "vae-60x4", "vae-30x16", "listops-49"], DEVICES)
    param_names = ("k", "shape", "device")
    timer = staticmethod(synchronized_timer)

    def setup(self, k, shape, device):
        self.workload = ForwardBackward("gumbel_rao", shape, device, tau=0.5, k=k)

    def time_forward_backward(self, k, shape, device):
        self.workload.run()

    def peakmem_forward_backward(self, k, shape, device):
        self.workload.run()

    def track_cuda_peak_bytes(self, k, shape, device):
        if device != "cuda":
            raise NotImplementedError("CUDA allocator statistics only")
        self.workload.run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    track_cuda_peak_bytes.unit = "bytes"
