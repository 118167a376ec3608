"""Throughput of the variance harness: batched draws against a loop of backward passes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import gvbench
import gvbench.engine
import gvbench.estimators as E
from gvbench.harness import gradient_draws
from gvbench.harness.draws import one_pass
from gvbench.tasks import ModuleTask, Toy

TASK = Toy(theta=[0.6, -0.2, 0.1])


def loop_draws(estimator, reps, generator):
    """The plain way: one forward and backward pass per repetition."""
    return torch.cat([one_pass(TASK, estimator, 1, 1, generator) for _ in range(reps)])


class Draws:
    """1000 gradient draws of ST-GS on the toy, batched or looped."""

    params = (["batched", "loop"],)
    param_names = ("mode",)

    def setup(self, mode):
        self.estimator = E.get("st_gumbel_softmax", tau=0.5)

    def time_thousand_draws(self, mode):
        generator = torch.Generator().manual_seed(0)
        if mode == "batched":
            gradient_draws(TASK, self.estimator, 1000, 1, generator)
        else:
            loop_draws(self.estimator, 1000, generator)


class Speedup:
    """How many times faster the batched harness is than a loop (one run measures both)."""

    number = 1
    repeat = 1

    def track_batched_over_loop(self):
        estimator = E.get("st_gumbel_softmax", tau=0.5)
        timings = {}
        for mode, draw in (("batched", gradient_draws), ("loop", None)):
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(0)
            if draw is None:
                loop_draws(estimator, 2000, generator)
            else:
                draw(TASK, estimator, 2000, 1, generator)
            timings[mode] = time.perf_counter() - start
        return timings["loop"] / timings["batched"]

    track_batched_over_loop.unit = "× faster"


class Sweep:
    """Cells per second of a small fixed toy sweep (4 estimators × 2 τ × 2 K, 2000 draws)."""

    number = 1
    repeat = 3

    def track_cells_per_second(self):
        start = time.perf_counter()
        ds = gvbench.sweep(
            TASK,
            estimators=["st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo"],
            tau=[0.1, 1.0],
            k=[2, 10],
            reps=2000,
            progress=False,
        )
        cells = 2 + 4 + 1 + 2  # ST-GS per τ, GR-MCK per (τ, K), REINFORCE once, RLOO per K
        assert (ds["status"] == "done").all()
        return cells / (time.perf_counter() - start)

    track_cells_per_second.unit = "cells/s"


class LargeModelCell:
    """Peak memory of one cell of a 10⁶-parameter model against the number of draws N.

    Streaming metrics keep it flat in N (a few P-vectors and one pass of draws); keeping
    every draw took 2.6 / 9.5 / 23 GiB at N = 100 / 400 / 1000. ``make test`` runs it at
    N = 8 only (see tests/test_suites.py), to stay quick.
    """

    params = ([100, 400],)
    quick_params = ([8],)
    param_names = ("draws",)
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, draws):
        self.task = ModuleTask(
            torch.nn.Linear(1000, 1000),
            torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)),
            name="wide",
            batched=True,
            reference_reps=16,
        )
        self.task.module.forward = _wide_forward.__get__(self.task.module)

    def peakmem_cell(self, draws):
        gvbench.sweep(
            self.task,
            estimators=["st_gumbel_softmax"],
            tau=[1.0],
            k=[1],
            batch_size=[2],
            reps=draws,
            progress=False,
        )


def _wide_forward(self, x, sample):
    """100 categorical variables of arity 10 per example, read through the layer's weights."""
    logits = torch.nn.functional.linear(x, self.weight, self.bias).view(len(x), 100, 10)
    return (sample(logits) * torch.arange(10.0)).sum((-1, -2)) ** 2 / 100


class DriverOverhead:
    """Wall time per cell of a sweep of many tiny cells written to a results file.

    Each cell is one estimator at one τ with 2 draws, so the time is the driver's: planning,
    storing the finished cell (one small journal file; the netCDF once at the start and once
    at the end) and, with ``engine="dask"``, scheduling. It should not grow with the number
    of cells (rewriting the whole file after every cell made it grow linearly).
    """

    params = ([100, 1000, 10_000], ["in-process", "dask"])
    quick_params = ([20], ["in-process"])
    param_names = ("cells", "engine")
    number = 1
    repeat = 1
    timeout = 1200

    def setup(self, cells, engine):
        self.taus = [float(t) for t in torch.linspace(0.05, 5.0, cells).tolist()]
        self.folder = tempfile.TemporaryDirectory()

    def teardown(self, cells, engine):
        self.folder.cleanup()

    def track_seconds_per_cell(self, cells, engine):
        with gvbench.engine.client(2 if engine == "dask" else 1) as executor:
            start = time.perf_counter()
            gvbench.sweep(
                TASK,
                estimators=["straight_through"],
                tau=self.taus,
                k=[1],
                reps=2,
                executor=executor,
                path=Path(self.folder.name) / "many.nc",
                progress=False,
            )
            return (time.perf_counter() - start) / cells

    track_seconds_per_cell.unit = "s"
