"""The asv suite is valid and every benchmark runs once (in-process, CPU parameters).

``asv run`` starts a fresh interpreter per benchmark and parameter, minutes for this suite;
running each benchmark's setup and methods here checks the same code in seconds.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
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
