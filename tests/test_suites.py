"""The asv suite is valid and every benchmark runs once (in-process, CPU parameters).

``asv run`` starts a fresh interpreter per benchmark and parameter, minutes for this suite;
running each benchmark's setup and methods here checks the same code in seconds.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import gvbench.estimators as E

SUITES = Path(__file__).resolve().parent.parent / "suites"
sys.path.insert(0, str(SUITES))
MODULES = [
    importlib.import_module(f"benchmarks.{p.stem}")
    for p in sorted((SUITES / "benchmarks").glob("bench_*.py"))
]
PREFIXES = ("time_", "peakmem_", "track_", "mem_")


def benchmark_classes():
    for module in MODULES:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            public = not cls.__name__.startswith("_")  # asv skips private names too
            if (
                public
                and cls.__module__ == module.__name__
                and any(n.startswith(PREFIXES) for n in dir(cls))
            ):
                yield cls


def parameter_grid(cls):
    # A benchmark whose real sizes take minutes names smaller ones for this smoke run.
    params = getattr(cls, "quick_params", None) or getattr(cls, "params", [])
    if not params:
        return [()]
    if not isinstance(params[0], list | tuple):  # a single parameter given as a flat list
        params = [params]
    return list(itertools.product(*params))


def test_asv_check_finds_no_problems():
    result = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--python=same"],
        cwd=SUITES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "No problems found" in result.stdout, (
        result.stdout + result.stderr
    )


def test_estimator_benchmarks_cover_the_registry():
    from benchmarks.bench_estimators import Estimators, EstimatorsCudaMemory

    assert Estimators.params[0] == list(E.available())
    assert EstimatorsCudaMemory.params[0] == list(E.available())


@pytest.mark.parametrize(
    "cls", list(benchmark_classes()), ids=lambda c: f"{c.__module__}.{c.__name__}"
)
def test_every_benchmark_runs_once(cls):
    ran = skipped = 0
    for combination in parameter_grid(cls):
        if "cuda" in combination:
            continue  # CUDA parameters raise NotImplementedError in setup without a GPU
        instance = cls()
        try:
            if hasattr(instance, "setup"):
                instance.setup(*combination)
        except NotImplementedError:
            skipped += 1
            continue
        for name in sorted(n for n in dir(cls) if n.startswith(PREFIXES)):
            value = getattr(instance, name)(*combination)  # asv skips only from setup
            if name.startswith("track_"):
                assert isinstance(value, int | float) and math.isfinite(value), (
                    name,
                    combination,
                    value,
                )
            ran += 1
        if hasattr(instance, "teardown"):
            instance.teardown(*combination)
    assert ran > 0 or (skipped > 0 and "Cuda" in cls.__name__)


def test_a_counted_step_holds_each_row_s_matrix_products(tmp_path):
    # One ST-GS step of a VAE stack: per row (each run, and the spare every stack carries),
    # the forward pass's products 2B·Σ in·out, their weight gradients as many again, and the
    # input gradients of every layer but the first (the images need none).
    from benchmarks.step_cost import step_cost

    from gvbench.vae.experiment import VAE_EXPERIMENT
    from gvbench.vae.experiment import TrainConfig as VAEConfig

    b, hidden, latent = 4, 16, 8
    stack = [
        VAEConfig(
            estimator="st_gumbel_softmax", tau=0.5, arity=4, batch_size=b, hidden=hidden,
            latent_dim=latent, seed=seed, eval_every=1, variance_every=0, iw_samples=2,
        )
        for seed in range(3)
    ]  # fmt: skip
    layers = [(784, hidden), (hidden, latent), (latent, hidden), (hidden, 784)]
    forward = sum(2 * b * n_in * n_out for n_in, n_out in layers)
    per_row = 3 * forward - 2 * b * 784 * hidden
    cost = step_cost(VAE_EXPERIMENT.train, stack)
    assert cost["flops"] == per_row * (len(stack) + 1)
    assert cost["kernels"] > 0 and cost["bytes"] > 0
    # Counted as on an accelerator, where the update is one launch per op for all runs: a run
    # adds fewer launches than it has parameter tensors (4 here; its own update loop, 36).
    alone = step_cost(VAE_EXPERIMENT.train, stack[:1])
    assert (cost["kernels"] - alone["kernels"]) / (len(stack) - 1) < len(layers) * 2


def test_the_step_cost_of_a_preset_adds_its_stacks_and_bounds_each_step(tmp_path, capsys):
    from benchmarks.step_cost import main

    out = tmp_path / "cost.json"
    result = main(["listops", "--preset", "tiny", "--launch-us", "10", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    stacks = result["stacks"]
    assert [s["runs"] for s in stacks] == [4, 4]  # two τ ≤ 1 × two seeds, per estimator
    for stack in stacks:
        assert stack["launch_s"] == pytest.approx(stack["kernels"] * 10e-6)
        low, high = stack["hours"]
        parts = stack["launch_s"], stack["flop_s"], stack["memory_s"]
        assert low == pytest.approx(stack["steps"] * max(parts) / 3600)
        assert high == pytest.approx(stack["steps"] * sum(parts) / 3600)
    for i in range(2):
        assert result["total"]["hours"][i] == pytest.approx(sum(s["hours"][i] for s in stacks))
    for argv, message in [
        (["vae", "--tflops", "0"], "--tflops must be > 0"),
        (["vae", "--preset", "huge"], "--preset: unknown vae preset 'huge'"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
