"""Draws sized by memory: a pass holds what fits the budget, measured once per cell.

The model is issue 39's: a discrete VAE with a convolutional encoder, about 40k parameters,
49 latents of arity 16 whose categories lie in dim 1 of the encoder's output, as its own code
has them. RLOO at K = 100, B = 8 evaluates its decoder on 800 images a draw, about 160 MiB a
draw when vmap batches the draws: 200 draws in one pass took 23 GB before passes were sized.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench.cli import main
from gvbench.harness import gradient_draws
from gvbench.harness.draws import choices
from gvbench.harness.spec import SweepSpec
from gvbench.tasks import ModuleTask
from gvbench.tasks.memory import MemoryBudgetError, parse_memory
from gvbench.threads import pinned_threads
from tests.conftest import cuda

ROOT = Path(__file__).resolve().parents[1]
LINUX_RSS = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="the CPU's peak is measured on Linux"
)
RLOO_K100 = {"k": 100}


class ConvVAE(nn.Module):
    """49 categorical latents of arity 16 from a convolutional encoder (categories in dim 1)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Dropout(0.1),  # torch's global generator: a pilot must leave it where it was
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 16, 1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1)
        )

    def forward(self, x, sample):
        logits = self.encoder(x)  # (B, 16, 7, 7)
        z = sample(logits.movedim(1, -1)).movedim(-1, 1)
        return self.decoder(z), logits


def negative_elbo(output, x):
    pixels, logits = output
    reconstruction = F.binary_cross_entropy_with_logits(pixels, x, reduction="none")
    log_q = logits.log_softmax(1)
    kl = (log_q.exp() * log_q).sum(1).flatten(1).sum(-1) + 49 * math.log(16)
    return reconstruction.flatten(1).sum(-1) + kl


def pass_sizes_said(notes: Iterable[str]) -> list[int]:
    """The pass sizes notes say a memory budget bounds."""
    said = (re.search(r": (\d+) draws? per pass, the most that fit", note) for note in notes)
    return [int(match[1]) for match in said if match]


def conv_vae_task(**options) -> ModuleTask:
    torch.manual_seed(0)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3
    options = {"batched": True, "reference_reps": 2, **options}
    return ModuleTask(ConvVAE(), images.float(), negative_elbo, arity=16, **options)


def test_the_model_is_the_issues():
    task = conv_vae_task()
    assert 35_000 < task.config()["parameters"] < 45_000
    assert choices(task, 8).calls == ((49, 16),)  # 49 latents of arity 16


@pytest.mark.parametrize(
    ("size", "expected"),
    [("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29), (" 2 gb", 2**31)],
)
def test_sizes_are_read_in_binary_units(size, expected):
    assert parse_memory(size) == expected
    assert SweepSpec("toy", memory=size).memory == expected


@pytest.mark.parametrize("size", ["lots", "4X", "0", "512K", "2P", -1, True, 1.5e9])
def test_a_bad_memory_is_one_line_naming_the_argument_and_its_range(size):
    with pytest.raises(
        ValueError, match=r"^memory must be a size like 4G or 512M .* from 1M to 1P"
    ):
        SweepSpec("toy", memory=size)


def test_the_cli_reads_memory_and_refuses_a_bad_one(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "toy", "--memory", "4X"])
    assert "argument --memory: must be a size like 4G or 512M" in capsys.readouterr().err


def test_memory_given_to_a_task_that_sizes_its_own_passes_says_so():
    with pytest.warns(UserWarning, match="memory= bounds a ModuleTask's passes; the toy task"):
        gvbench.sweep("toy", ["reinforce"], reps=4, memory="1G", warmup=0, progress=False)


@LINUX_RSS
def test_in_a_dask_worker_the_budget_is_within_the_worker_s_memory_limit():
    # Two workers of a LocalCluster each see all of the machine's RAM available: sized by it
    # alone, two passes at once could take it all, and a nanny restarts a worker past its
    # limit (the cpu leaderboard lost its binary VAE sweep so, four workers in a row).
    from distributed import Client, LocalCluster

    from gvbench.tasks.memory import available_memory

    # A limit whose headroom is about a quarter of the RAM available now, so that it is the bound
    # however much or little the machine has free.
    limit = status_bytes("VmRSS") + available_memory(torch.device("cpu"))[0] // 4
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            memory_limit=limit,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as local,
        Client(local) as client,
    ):
        size, where = client.submit(available_memory, torch.device("cpu")).result()
        resident = status_bytes("VmRSS")
    assert where == "left under the Dask worker's memory limit"
    assert 0 < size <= 0.95 * limit - 0.9 * resident
    assert available_memory(torch.device("cpu"))[1] != where  # not in a worker


@LINUX_RSS
def test_the_pass_size_shrinks_as_the_budget_does():
    task, rloo = conv_vae_task(), E.get("rloo", **RLOO_K100)
    limits = {}
    with pinned_threads(1):
        for size in ("4G", "1G", "256M", "128M"):
            task.memory_budget = parse_memory(size)
            limits[size] = task.pass_limit(rloo, 8)
        task.memory_budget = parse_memory("16M")
        assert task.pass_limit(rloo, 8) == 1
        with pytest.raises(MemoryBudgetError) as refused:
            task.gradients(rloo, 1, 8, torch.Generator().manual_seed(0))
    sizes = list(limits.values())
    assert sizes == sorted(sizes, reverse=True) and sizes[0] >= 8 * sizes[-1], limits
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("module: rloo k=100 at batch size 8 needs ")
    assert "for one draw, more than the memory budget of 16 MiB" in message
    assert "raise it with --memory (memory= in the API)" in message


@cuda
def test_on_a_gpu_a_pass_is_measured_in_the_bytes_torch_allocates():
    task, rloo = conv_vae_task().to("cuda"), E.get("rloo", **RLOO_K100)
    task.memory_budget = parse_memory("1G")
    assert 1 <= task.pass_limit(rloo, 8) < 64
    task.memory_budget = parse_memory("1M")
    assert task.pass_limit(rloo, 8) == 1
    with pytest.raises(MemoryBudgetError, match=r"needs [\d.]+ MiB for one draw"):
        task.gradients(rloo, 1, 8, torch.Generator(device="cuda").manual_seed(0))


@LINUX_RSS
def test_a_budget_changes_the_draws_only_through_the_pass_size():
    """Bounded by memory, a cell draws what it draws with that pass size set by hand: the
    pilots that measured it moved neither its generator, nor torch's, nor its estimator."""
    rloo, reps = E.get("rloo", k=10), 32
    bounded = conv_vae_task()
    bounded.memory_budget = parse_memory("256M")
    with pinned_threads(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(5)
        draws = gradient_draws(bounded, rloo, reps, 8, torch.Generator().manual_seed(0))
    said = pass_sizes_said(str(w.message) for w in caught)
    assert len(said) == 1, [str(w.message) for w in caught]
    limit = said[0]
    assert 1 < limit < reps  # the budget bounds the pass
    pinned = conv_vae_task(max_draws_per_pass=limit)
    pinned.memory_budget = parse_memory("1P")
    with pinned_threads(1):
        assert pinned.pass_limit(rloo, 8) == limit  # its pilots, before its draws
        torch.manual_seed(5)
        again = gradient_draws(pinned, rloo, reps, 8, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


@LINUX_RSS
def test_a_cell_whose_one_draw_does_not_fit_fails_naming_what_it_needs():
    """The reference (RLOO at K = 2) fits 32 MiB; a draw at K = 100 does not: its cell fails
    in one line, the rest of the sweep goes on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = gvbench.sweep(
            conv_vae_task(), ["rloo"], k=[2, 100], batch_size=8, reps=4, reference_k=2,
            warmup=0, memory="32M", progress=False,
        )  # fmt: skip
    status = {k: str(ds["status"].sel(k=k).values.flat[0]) for k in (2, 100)}
    assert status[2] == "done"
    assert status[100].startswith(
        "failed: MemoryBudgetError: module: rloo k=100 at batch size 8 needs "
    ), status[100]
    assert (
        "more than the memory budget of 32 MiB, memory=32 MiB: raise it with --memory"
        in (status[100])
    )
    assert any("1 cell(s) failed" in str(w.message) for w in caught)


# The sweep runs in a process of its own whose address space may grow by HEADROOM at most
# (ulimit -v): its default budget is half of that, and a pass of REPS draws unsized (about
# 160 MiB each) would not fit, so the cell would fail. Its peak RSS is read by a parent of its
# own through RUSAGE_CHILDREN, which no other process of the test session adds to.
HEADROOM, REPS = 3 * 2**29, 12
MEASURED = """
import json, resource, subprocess, sys
child = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"peak": peak, "code": child.returncode, "out": child.stdout,
                  "err": child.stderr[-3000:]}))
"""
SWEEP = f"""
import json, resource, warnings
import torch
torch.set_num_threads(1)
import gvbench
from gvbench.tasks.memory import memory_budget
from tests.test_memory_budget import conv_vae_task, status_bytes
task = conv_vae_task()
_, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (status_bytes("VmSize") + {HEADROOM}, hard))
budget, start = memory_budget(None, task.device), status_bytes("VmRSS")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ds = gvbench.sweep(task, ["rloo"], k=100, batch_size=8, reps={REPS}, reference_reps=2,
                       reference_k=2, warmup=0, progress=False)
print(json.dumps({{"budget": budget.size, "origin": budget.origin, "start": start,
                  "status": sorted(set(ds["status"].values.ravel().tolist())),
                  "notes": [str(w.message) for w in caught]}}))
"""


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@LINUX_RSS
def test_a_sweep_stays_under_the_default_budget():
    command = [sys.executable, "-c", MEASURED, sys.executable, "-c", SWEEP]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    measured = json.loads(run.stdout)
    assert measured["code"] == 0, measured["err"]
    result = json.loads(measured["out"])
    assert result["status"] == ["done"], measured["err"]
    assert "ulimit -v" in result["origin"]  # the default: half of what the limit leaves
    sized = pass_sizes_said(result["notes"])
    assert sized and max(sized) < REPS, result["notes"]
    assert measured["peak"] - result["start"] <= result["budget"], measured
