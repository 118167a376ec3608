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

from .workloads import CategoricalVAE, binary_images, interleaved_ratio, plain_autograd_loop

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

    One pass, reduced as it goes: a few P-vectors and a few scalars per draw, so memory is
    flat in N (781 MiB at N = 100, 1062 MiB at N = 10,000; keeping every draw took 2.6 / 9.5 /
    23 GiB at N = 100 / 400 / 1000). ``make test`` runs it at N = 8 only (see
    tests/test_suites.py), to stay quick.
    """

    params = ([100, 10_000],)
    quick_params = ([8],)
    param_names = ("draws",)
    number = 1
    repeat = 1
    timeout = 900

    def setup(self, draws):
        self.task = ModuleTask(
            _Wide(1000, 1000),
            torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)),
            name="wide",
            batched=True,
            reference_reps=16,
        )

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


class _Wide(torch.nn.Linear):
    """100 categorical variables of arity 10 per example, read through the layer's weights."""

    def forward(self, x, sample):
        logits = super().forward(x).view(len(x), 100, 10)
        return (sample(logits) * torch.arange(10.0)).sum((-1, -2)) ** 2 / 100


class DriverOverhead:
    """Wall time per cell of a sweep of many tiny cells written to a results file.

    Each cell is one estimator at one τ with 4 draws, so the time is the driver's: planning,
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
                reps=4,
                executor=executor,
                path=Path(self.folder.name) / "many.nc",
                progress=False,
            )
            return (time.perf_counter() - start) / cells

    track_seconds_per_cell.unit = "s"


class CellOverFloor:
    """A sweep cell's wall time over the least its draws can cost, interleaved, one thread.

    ``module``: 200 ST-GS draws (τ = 0.5) of a 1.1 × 10⁶-parameter categorical VAE at B = 10,
    its reference already cached, against :func:`plain_autograd_loop` drawing the same
    gradients and accumulating their variance. ``toy``: a GR-MC1000 cell of 10⁴ draws at
    τ = 0.5 against one forward and backward pass of ``gumbel_rao`` on the (10⁴, 3) float64
    logits with the toy's loss. A cell used to cost 12–17× (module) and 1.5–2.1× (toy).
    """

    params = (["module", "toy"],)
    quick_params = (["module-quick", "toy-quick"],)  # make test: a smaller model, fewer draws
    param_names = ("workload",)
    number = 1
    repeat = 1
    timeout = 900

    def setup(self, workload):
        torch.set_num_threads(1)
        self.folder = tempfile.TemporaryDirectory()
        quick = workload.endswith("-quick")
        if workload.startswith("module"):
            hidden, self.draws = (16, 20) if quick else (512, 200)
            torch.manual_seed(0)
            self.model = CategoricalVAE(hidden)
            self.x = binary_images(10)
            self.task = ModuleTask(
                self.model, self.x, CategoricalVAE.negative_elbo, arity=10, reference_reps=16
            )
            self.path = Path(self.folder.name) / "module.nc"
            self.cell()  # the reference is cached beside the file, the draw mode chosen
        else:
            self.draws = 1000 if quick else 10_000
            self.task = Toy(theta=[0.6, -0.2, 0.1])

    def teardown(self, workload):
        self.folder.cleanup()

    def cell(self):
        if self.path.exists():
            self.path.unlink()
        gvbench.sweep(
            self.task,
            estimators=["st_gumbel_softmax"],
            tau=[0.5],
            k=[1],
            batch_size=[10],
            reps=self.draws,
            path=self.path,
            progress=False,
        )

    def toy_cell(self):
        gvbench.sweep(
            self.task,
            estimators=["gumbel_rao"],
            tau=[0.5],
            k=[1000],
            reps=self.draws,
            progress=False,
        )

    def toy_floor(self):
        logits = self.task.theta.expand(self.draws, 1, 3).clone().requires_grad_()
        generator = torch.Generator().manual_seed(0)
        loss = self.task.loss(
            {"theta": logits},
            lambda logits: E.gumbel_rao(logits, tau=0.5, k=1000, generator=generator),
            1,
        )
        loss.sum().backward()

    def track_cell_over_floor(self, workload):
        if workload.startswith("module"):
            return interleaved_ratio(
                self.cell, lambda: plain_autograd_loop(self.model, self.x, self.draws), rounds=5
            )
        return interleaved_ratio(self.toy_cell, self.toy_floor, rounds=5)

    track_cell_over_floor.unit = "× the draws' cost"
