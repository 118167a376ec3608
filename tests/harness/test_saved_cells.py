"""Every saved sweep reads back: a file that mixes done, not-applicable and failed cells, for
every kind of task (the toy, a user's ``ModuleTask``, an experiment's task), is read, extended,
resumed and merged from workers to the same cells, and verifies on every read.

A not-applicable cell of a task with parameter groups used to fail its checksum on reading:
its group slots are NaN in the file, but were never part of the record its digest sealed.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import gvbench
from gvbench.cli import main
from gvbench.harness import process_pool, read
from gvbench.tasks import ModuleTask, Toy
from gvbench.vae.experiment import VAE_EXPERIMENT

sweep_module = importlib.import_module("gvbench.harness.sweep")

# ST-GS is computed, DisARM (binary-only) is not applicable at arity 3 or 4, and GS fails:
# the tasks below turn a relaxed sample's gradient into NaN.
ESTIMATORS = ["st_gumbel_softmax", "disarm", "gumbel_softmax"]
STATUS = {"st_gumbel_softmax": "done", "disarm": "not applicable", "gumbel_softmax": "failed"}


def poisoned(sample):
    """``sample``, with every coordinate NaN wherever the draw is not one-hot."""

    def draw(logits, **options):
        z = sample(logits, **options)
        one_hot = ((z == 0) | (z == 1)).all()
        return z * torch.where(one_hot, 1.0, torch.nan).to(z.dtype)

    return draw


class RelaxedFailsToy(Toy):
    name = "relaxed-fails-toy"

    def loss(self, params, sample, batch_size):
        return super().loss(params, poisoned(sample), batch_size)


class RelaxedFails(nn.Module):
    """A model whose gradient is NaN for a relaxed sample (it wraps any ``ModuleTask`` model)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs, sample):
        return self.inner(*inputs, sample=poisoned(sample))


class AutoEncoder(nn.Module):
    """The README's model: 8 latents of arity 4."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(64, 8 * 4), nn.Linear(8 * 4, 64)

    def forward(self, x, sample):
        z = sample(self.encoder(x).view(len(x), 8, 4))
        return self.decoder(z.flatten(1))


def squared_error(out, x):
    return ((out - x) ** 2).sum(-1)


def toy_task():
    return RelaxedFailsToy(theta=[0.6, -0.2, 0.1])


def module_task():
    torch.manual_seed(0)
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(0))
    return ModuleTask(
        RelaxedFails(AutoEncoder()),
        x,
        squared_error,
        arity=4,
        relaxed_inputs=True,
        groups={"encoder": ["inner.encoder"], "decoder": ["inner.decoder"]},
        batched=True,
        reference_reps=400,
    )


@pytest.fixture(scope="module")
def experiment_task(tmp_path_factory):
    task = VAE_EXPERIMENT.task(
        arity=4,
        latent_dim=4,
        hidden=16,
        train_steps=10,
        batch_pool=8,
        checkpoint_dir=str(tmp_path_factory.mktemp("vae")),
    )
    return ModuleTask(
        RelaxedFails(task.module),
        task.inputs,
        task.loss_fn,
        parameters=[f"inner.{name}" for name in task.measured],
        name=task.name,
        arity=4,
        relaxed_inputs=True,
        batched=True,
        reference_reps=400,
        config=task.config(),
    )


def grid(**extra):
    return dict(estimators=ESTIMATORS, k=[1], batch_size=[2], reps=40, progress=False) | extra


def kinds(request):
    if request.param == "experiment":
        return request.getfixturevalue("experiment_task")
    return {"toy": toy_task, "module": module_task}[request.param]()


@pytest.fixture(params=["toy", "module", "experiment"])
def task(request):
    return kinds(request)


def assert_mixed(ds: xr.Dataset) -> None:
    for estimator, status in STATUS.items():
        cells = ds.status.sel(estimator=estimator).values.ravel()
        assert all(str(s).startswith(status) for s in cells), (estimator, cells)


def assert_same_cells(a: xr.Dataset, b: xr.Dataset) -> None:
    """The same status and values in every cell (timings aside); NaN equals NaN."""
    xr.testing.assert_equal(a.status, b.status)
    timed = {n for n in a.data_vars if "seconds" in n or n.startswith("time_normalized")}
    for name in sorted(set(a.data_vars) - timed - {"digest"}):
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.mark.filterwarnings("ignore:.* cell.s. failed")
def test_a_sweep_with_every_kind_of_cell_reads_back(task, tmp_path, monkeypatch, capsys):
    path = tmp_path / "mixed.nc"
    first = gvbench.sweep(task, path=path, tau=[0.5], **grid())
    assert_mixed(first)
    assert_same_cells(first, read(path))

    # Extended: a new τ computes its own cells, and the old ones read back as they were.
    extended = gvbench.sweep(task, path=path, tau=[0.5, 1.0], **grid())
    assert_mixed(extended)
    assert_same_cells(extended.sel(tau=[0.5]), first)
    assert_same_cells(extended, read(path))

    # Resumed: nothing finished is recomputed; the failed cells are tried again, as before.
    ran = []
    real_run_cell = sweep_module.run_cell
    monkeypatch.setattr(sweep_module, "run_cell", lambda *a: ran.append(a[1]) or real_run_cell(*a))
    resumed = gvbench.sweep(task, path=path, tau=[0.5, 1.0], **grid())
    assert {cell.estimator for cell in ran} == {"gumbel_softmax"}
    assert_same_cells(resumed, extended)
    assert_same_cells(read(path), extended)

    # The saved file is a user's: it compares and plots.
    assert main(["compare", str(path)]) == 0
    assert main(["plot", str(path), "--out-dir", str(tmp_path / "figures")]) == 0
    assert any(f.stat().st_size > 0 for f in (tmp_path / "figures").iterdir())


@pytest.mark.filterwarnings("ignore:.* cell.s. failed")
@pytest.mark.parametrize("kind", ["toy", "module"])
def test_cells_merged_from_workers_read_back(kind, tmp_path):
    task = {"toy": toy_task, "module": module_task}[kind]()
    in_process = gvbench.sweep(task, tau=[0.5], **grid())
    with process_pool(2) as pool:
        pooled = gvbench.sweep(
            task, executor=pool, path=tmp_path / "pooled.nc", tau=[0.5], **grid()
        )
    assert_mixed(pooled)
    assert_same_cells(pooled, in_process)
    assert_same_cells(read(tmp_path / "pooled.nc"), in_process)
