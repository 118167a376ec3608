"""A sweep that respects the user's time: its plan said before any work, a time budget that
sizes the warm-up and the automatic reference and says what precision that buys, a refusal
of an automatic reference that would run for hours, and the cells' thread count everywhere.

Time is simulated: the slow task's loss advances a clock by its cost per draw, and the pilot
reads that clock, so every estimate and every total here is exact and nothing is timed.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
import xarray as xr

import gvbench
from gvbench.cli import main
from gvbench.harness import warmup
from gvbench.harness.reference import LONG_REFERENCE_SECONDS
from gvbench.harness.spec import SweepSpec
from gvbench.tasks import Toy

GRID = dict(estimators=["st_gumbel_softmax", "reinforce"], tau=[0.5], k=[1])


class Clock:
    """Simulated seconds: only the slow task's loss advances them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowToy(Toy):
    """The toy of ``m`` variables, sampled (never enumerated), whose loss takes ``cost``
    simulated seconds a draw: an RLOO draw of the reference (k = 8) takes eight times that."""

    name = "slow-toy"

    def __init__(self, clock: Clock, cost: float, m: int = 1) -> None:
        super().__init__(m=m, theta=[0.6, -0.2, 0.1] if m == 1 else None)
        self.clock, self.cost = clock, cost

    def enumerable(self, batch_size):
        return False

    def loss(self, params, sample, batch_size):
        self.clock.now += self.cost * params["theta"].shape[0]
        return super().loss(params, sample, batch_size)


@pytest.fixture
def clock(monkeypatch):
    simulated = Clock()
    monkeypatch.setattr(warmup, "perf_counter", simulated)
    return simulated


def plan_line(err: str) -> str:
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("plan")]
    assert len(lines) == 1, err
    return lines[0]


def test_the_plan_is_said_in_one_line_before_any_work_and_changes_no_number(clock, capsys):
    task = SlowToy(clock, cost=0.001)
    ds = gvbench.sweep(task, reps=100, warmup=50, progress=True, **GRID)
    line = plan_line(capsys.readouterr().err)
    # Two cells of 100 draws, 0.001 s each; REINFORCE adapts twice (its cell, and its pilot
    # for the reference's size) for 50 steps of 16 draws; the reference is sized after them.
    assert line.startswith("plan: 2 cell(s) × 100 draws; ")
    assert "reference at B=1 auto (256 to 100000 RLOO draws, k=8)" in line
    assert "50 steps × 2 adaptation(s)" in line
    assert "(cells 0.2 s, reference 2.1 s to 13 min, adaptation 1.6 s, pilot" in line
    # Without a budget, or with one that binds nothing, the numbers are the plan-less ones.
    unbound = gvbench.sweep(task, reps=100, warmup=50, time_budget=1e9, progress=False, **GRID)
    quiet = gvbench.sweep(task, reps=100, warmup=50, progress=False, **GRID)
    for other in (unbound, quiet):
        xr.testing.assert_identical(numbers(ds), numbers(other))
        assert other.attrs["reference_sizing"] == ds.attrs["reference_sizing"]


def numbers(ds: xr.Dataset) -> xr.Dataset:
    """What a sweep computed (its timings, and the digests that seal them, differ run to run)."""
    timed = [name for name in ds.data_vars if "seconds" in name or name.startswith("time_")]
    timed.append("digest")
    return ds.drop_vars(timed).drop_attrs()


def spent(clock: Clock, run) -> tuple[float, object]:
    start = clock.now
    result = run()
    return clock.now - start, result


def test_a_budget_sizes_the_reference_and_the_warmup_and_states_the_precision(clock, capsys):
    task = SlowToy(clock, cost=0.01)  # an RLOO draw of the reference: 0.08 s
    seconds, ds = spent(
        clock,
        lambda: gvbench.sweep(task, reps=1000, time_budget=60, progress=True, **GRID),
    )
    line = plan_line(capsys.readouterr().err)
    # The cells' 2000 draws take 20 s; the rest is shared by the warm-up (1000 steps twice:
    # 320 s) and the reference (up to 100000 draws: 8000 s), half each.
    assert line.startswith("plan within time_budget=60 s: 2 cell(s) × 1000 draws; ")
    assert re.search(
        r"at B=1 auto \(24\d RLOO draws, k=8; its noise V_ref/N_ref at least about", line
    )
    assert re.search(r"6\d steps \(of 1000\) × 2 adaptation\(s\); about 60 s \(cells 20 s", line)
    assert 55 <= seconds <= 60  # the simulated time of everything it ran, the pilot included
    warmed = int(ds.attrs["warmup"])
    assert 60 <= warmed <= 69 and (ds.warmup.sel(estimator="reinforce") == warmed).all()
    draws = int(ds.reference_draws.max())
    assert 240 <= draws < 250
    # The precision it states is the one it stored: the reference's noise against the
    # smallest bias² a cell resolves.
    sizing = ds.attrs["reference_sizing"]
    assert f"capped at {draws} by time_budget=60 s" in sizing
    stated = re.search(r"its noise is ([0-9.e+-]+) × the smallest bias² a cell resolves", sizing)
    resolved = float(sizing.split("× ")[1].split(",")[0])
    noise = float(ds.reference_variance.max())
    assert float(stated.group(1)) == pytest.approx(noise / resolved, rel=0.05)
    assert float(stated.group(1)) > 0.1  # capped: coarser than the automatic target


def test_a_budget_the_cells_alone_exceed_is_refused_before_any_work(clock, tmp_path):
    task = SlowToy(clock, cost=0.01)
    with pytest.raises(ValueError, match=r"^time_budget=10 s does not cover the work") as error:
        gvbench.sweep(
            task, reps=1000, time_budget=10, path=tmp_path / "x.nc", progress=False, **GRID
        )
    assert "the cells' draws 20 s" in str(error.value) and "lower reps" in str(error.value)
    assert not (tmp_path / "x.nc").exists()


def test_a_budgeted_sweep_resumes_at_the_warmup_it_started_with(clock, tmp_path):
    task, path = SlowToy(clock, cost=0.01), tmp_path / "slow.nc"
    first = gvbench.sweep(task, reps=1000, time_budget=60, path=path, progress=False, **GRID)
    grown = {**GRID, "tau": [0.5, 1.0]}  # other cells, another budget: the file's warm-up
    again = gvbench.sweep(task, reps=1000, time_budget=120, path=path, progress=False, **grown)
    assert again.attrs["warmup"] == first.attrs["warmup"] and (again.status == "done").all()
    with pytest.raises(ValueError, match=r"holds a different experiment \(warmup: "):
        gvbench.sweep(task, reps=1000, path=path, progress=False, **grown)  # 1000 steps


def test_an_auto_reference_that_would_take_hours_is_refused_with_its_estimate(clock, tmp_path):
    task = SlowToy(clock, cost=1.0)  # an RLOO draw: 8 s; its first stage alone is 34 min
    arguments = dict(reps=100, warmup=0, path=tmp_path / "x.nc", progress=False, **GRID)
    with pytest.raises(ValueError, match=r"^the automatic reference at B=1 would take") as error:
        gvbench.sweep(task, **arguments)
    message = str(error.value)
    assert "\n" not in message and "RLOO draws (k=8) of 8 s each" in message
    assert "reference_reps=N (--reference-reps N)" in message
    assert "time_budget=SECONDS (--time-budget SECONDS)" in message
    estimate = re.search(r"would take about ([0-9.]+) (min|h)", message)
    assert float(estimate.group(1)) * (60 if estimate.group(2) == "min" else 3600) > (
        LONG_REFERENCE_SECONDS
    )
    assert clock.now < 256 * 8  # said before a stage of the reference was drawn
    assert not (tmp_path / "x.nc").exists()
    asked = []
    with pytest.raises(ValueError, match="would take"):  # declined
        gvbench.sweep(task, confirm=lambda question: asked.append(question) or False, **arguments)
    assert asked == [message]
    done = gvbench.sweep(task, confirm=lambda question: True, **arguments)
    assert (done.status == "done").all() and int(done.reference_draws.max()) >= 256


def test_the_cli_says_so_before_computing_and_fits_a_budget_of_a_minute(
    clock, tmp_path, monkeypatch, capsys
):
    """The issue's acceptance: a model whose reference would take hours is said to before
    any of it is computed (asked at a terminal, refused elsewhere), and `--time-budget 60`
    finishes in about a minute with the precision it states."""
    # 1000 variables: GR-MCK resolves a bias² that an RLOO reference reaches in about 1600
    # draws of 2 s each, about an hour (a cell's draw takes 0.25 s).
    task = SlowToy(clock, cost=0.25, m=1000)
    monkeypatch.setitem(gvbench.tasks.TASKS, "slow-toy", lambda: task)
    argv = ["sweep", "slow-toy", "--estimators", "gumbel_rao", "--tau", "0.5", "--k", "100"]
    argv += ["--reps", "50", "--out", str(tmp_path / "slow.nc")]
    with pytest.raises(SystemExit, match=r"^gvbench: the automatic reference at B=1") as refused:
        main(argv)  # not at a terminal: refused
    assert re.search(r"would take about 5\d min: 1\d\d\d RLOO draws", str(refused.value))
    assert "plan: 1 cell(s) × 50 draws" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(SystemExit, match="would take"):
        main(argv)  # at a terminal: asked, and declined
    assert "gvbench: the automatic reference at B=1 would take" in capsys.readouterr().err
    seconds, _ = spent(clock, lambda: main([*argv, "--time-budget", "60"]))
    err = capsys.readouterr().err
    assert "plan within time_budget=60 s: 1 cell(s) × 50 draws" in plan_line(err)
    assert 50 <= seconds <= 60
    ds = gvbench.harness.read(tmp_path / "slow.nc")
    stated = re.search(r"its noise is ([0-9.e+-]+) × the smallest bias²", err)
    resolved = float(ds.attrs["reference_sizing"].split("× ")[1].split(",")[0])
    noise = float(ds.reference_variance.max())
    assert float(stated.group(1)) == pytest.approx(noise / resolved, rel=0.05)


class ThreadCounting(Toy):
    """The toy, sampled, recording torch's thread count at every run of its loss."""

    name = "thread-counting-toy"

    def __init__(self) -> None:
        super().__init__(theta=[0.6, -0.2, 0.1])
        self.threads: list[int] = []

    def enumerable(self, batch_size):
        return False

    def loss(self, params, sample, batch_size):
        self.threads.append(torch.get_num_threads())
        return super().loss(params, sample, batch_size)


def test_the_reference_the_adaptation_and_the_cells_run_with_the_cells_thread_count():
    task, threads = ThreadCounting(), torch.get_num_threads() + 1
    before = torch.get_num_threads()
    ds = gvbench.sweep(task, reps=20, warmup=5, threads_per_cell=threads, progress=False, **GRID)
    # the pilot, the reference's sizing (REINFORCE adapted), its RLOO draws, and the cells
    assert int(ds.reference_draws.max()) >= 256 and set(task.threads) == {threads}
    assert torch.get_num_threads() == before


def test_a_time_budget_is_a_number_of_seconds(capsys):
    assert SweepSpec(Toy(), time_budget=90).time_budget == 90.0
    assert SweepSpec(Toy()).time_budget is None
    for bad in (0, -1.0, float("nan"), "60", True):
        with pytest.raises(ValueError, match=r"^time_budget must be a number of seconds > 0, got"):
            SweepSpec(Toy(), time_budget=bad)
    with pytest.raises(SystemExit):
        main(["sweep", "toy", "--time-budget", "0"])
    assert "--time-budget: must be a number of seconds > 0, got '0'" in capsys.readouterr().err
