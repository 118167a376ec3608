"""Temperature schedules: τ(t) as each formula names it, checked at the door, a string form
that round-trips, and in training: the τ each step takes, one stack for runs with different
schedules (each as alone, bit for bit, across τ = 1 too), a resumed run that goes on where it
stopped, and the schedule in the curves' provenance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from gvbench.cli import main
from gvbench.listops.experiment import LISTOPS
from gvbench.listops.experiment import TrainConfig as ListOpsConfig
from gvbench.training import TemperatureSchedule, check_one_group, group_key, loop, stacked
from gvbench.training.runs import RunState
from tests.test_run_group import assert_same_run

RUN = dict(max_length=8, d_hidden=8, steps=12, sizes=(200, 40, 40), eval_every=6)
RUN |= dict(variance_every=12, variance_reps=4)


def cooling(step: int) -> float:
    """A user's schedule: 1.5 halved every 4 steps (crosses τ = 1 at step 4)."""
    return 1.5 * 0.5 ** (step // 4)


def freezing(step: int) -> float:
    return 1.0 - step / 5  # τ = 0 at step 5


def parameters(out, config):
    return torch.load(out / config.name() / "checkpoint.pt", weights_only=False)["params"]


# -- the schedule itself -----------------------------------------------------------------


def test_each_schedule_gives_the_tau_its_formula_names():
    exp = TemperatureSchedule.parse("exp:1->0.1").over(11)  # ends at the last step, 10
    assert exp.end_step == 10 and exp(0) == 1.0 and exp(10) == 0.1 and exp(99) == 0.1
    for t in range(11):  # Jang et al.: max(τ_end, τ_0 exp(−rt)), r reaching τ_end at step 10
        assert exp(t) == pytest.approx(max(0.1, math.exp(-math.log(10) / 10 * t)), rel=1e-15)
    linear = TemperatureSchedule.parse("linear:2->0.5@4")
    assert [linear(t) for t in range(7)] == [2.0, 1.625, 1.25, 0.875, 0.5, 0.5, 0.5]
    heating = TemperatureSchedule.exponential(0.25, 4.0, end_step=4)
    assert [heating(t) for t in range(5)] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert TemperatureSchedule.constant(0.3)(10**9) == 0.3
    user = TemperatureSchedule.function(cooling)
    assert str(user) == f"call:{__name__}:cooling" and user(5) == 0.75
    assert user.largest(3) == 1.5 and exp.largest(11) == 1.0
    # Rounding never carries τ past an end: a schedule from 1 stays on its side of τ = 1.
    for text in ("exp:1->0.3@7", "linear:3->1@9", "exp:0.1->1@13"):
        schedule = TemperatureSchedule.parse(text)
        values = [schedule(t) for t in range(20)]
        low, high = sorted((schedule.start, schedule.end))
        assert all(low <= v <= high for v in values), text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exp:1->0", "tau_schedule end must be a finite number > 0, got 0.0"),
        ("linear:-1->0.5", "tau_schedule start must be a finite number > 0, got -1.0"),
        ("exp:1->inf", "tau_schedule end must be a finite number > 0, got inf"),
        ("constant:0", "tau_schedule start must be a finite number > 0"),
        ("exp:1->0.1@0", "tau_schedule end_step must be an integer >= 1, got 0"),
        ("cosine:1->0.1", "tau_schedule must be one of constant:TAU, exp:START->END"),
        ("exp:1-0.1", "tau_schedule must be one of"),
        ("call:no_such_module:tau", "names no importable function"),
        ("call:math:pi", "call:math:pi is not a function"),
    ],
)
def test_a_bad_schedule_is_one_clear_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        TemperatureSchedule.parse(text)
    assert "\n" not in str(error.value)


def test_a_function_must_be_importable_and_keep_tau_above_zero():
    with pytest.raises(ValueError, match="importable as module:name"):
        TemperatureSchedule.function(lambda step: 1.0)
    schedule = TemperatureSchedule.function(freezing)
    assert schedule(4) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"gives τ = 0.0 at step 5; τ must be a finite number"):
        schedule(5)
    with pytest.raises(ValueError, match="anneals over the run: give the run's length"):
        TemperatureSchedule.parse("exp:1->0.1")(3)


positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["exp", "linear", "constant"]),
    start=positive,
    end=positive,
    end_step=st.none() | st.integers(1, 2**62),
)
def test_the_string_form_round_trips(kind, start, end, end_step):
    if kind == "constant":
        schedule = TemperatureSchedule.constant(start)
    else:
        schedule = TemperatureSchedule(kind, start, end, end_step)
    text = str(schedule)
    assert TemperatureSchedule.parse(text) == schedule
    assert str(TemperatureSchedule.parse(text)) == text


def test_a_function_s_string_form_round_trips():
    schedule = TemperatureSchedule.function(cooling)
    assert TemperatureSchedule.parse(str(schedule)) == schedule


# -- the configuration -------------------------------------------------------------------


def test_a_config_takes_a_schedule_as_a_string_an_object_or_a_function():
    by_text = ListOpsConfig(tau_schedule="exp:2->0.5", **RUN)
    assert by_text.tau == 2.0 and by_text.tau_schedule == "exp:2.0->0.5"
    assert str(by_text.temperature) == "exp:2.0->0.5@11"
    by_object = ListOpsConfig(tau_schedule=TemperatureSchedule.exponential(2, 0.5), **RUN)
    assert by_object == by_text and by_object.name() == by_text.name()
    by_function = ListOpsConfig(tau_schedule=cooling, **RUN)
    assert by_function.tau_schedule == f"call:{__name__}:cooling" and by_function.tau == 1.5
    assert "-tau2exp0.5-" in by_text.name()


def test_a_constant_schedule_is_the_run_without_one():
    plain = ListOpsConfig(tau=0.5, **RUN)
    constant = ListOpsConfig(tau_schedule="constant:0.5", **RUN)
    assert constant == plain and constant.name() == plain.name()
    assert "tau_schedule" not in plain.as_dict()  # names and checkpoints as they always were


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau_schedule": "exp:2->0.5", "tau": 0.7}, "tau 0.7 disagrees with tau_schedule"),
        (
            {"tau_schedule": "exp:1->0.1", "estimator": "reinforce"},
            "tau_schedule anneals τ, but estimator reinforce takes no τ",
        ),
        ({"tau_schedule": freezing}, "gives τ = 0.0 at step 5"),
        ({"tau_schedule": 0.5}, "tau_schedule must be a TemperatureSchedule"),
    ],
)
def test_a_config_refuses_a_schedule_that_cannot_train(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ListOpsConfig(**{**RUN, **options})


def test_schedules_group_by_the_side_of_one_their_largest_tau_is_on():
    below = [
        ListOpsConfig(seed=0, tau_schedule="exp:1->0.1", **RUN),
        ListOpsConfig(seed=1, tau_schedule="linear:0.9->0.2", **RUN),
        ListOpsConfig(seed=2, tau=0.5, **RUN),
    ]
    check_one_group(below)
    crossing = ListOpsConfig(seed=3, tau_schedule="exp:2->0.5", **RUN)
    with pytest.raises(ValueError, match=r"τ \(its schedule too.*; these differ in tau"):
        check_one_group([*below, crossing])
    assert group_key(crossing) == group_key(ListOpsConfig(seed=0, tau=3.0, **RUN))


# -- training ----------------------------------------------------------------------------


def recorded_temperatures(monkeypatch):
    """Each stacked step's τ tensor, as the estimator receives it."""
    seen = []
    real = stacked._temperatures

    def recording(live, params):
        taus = real(live, params)
        seen.append((tuple(m.progress.step for m in live), taus))
        return taus

    monkeypatch.setattr(stacked, "_temperatures", recording)
    return seen


def test_every_step_takes_exactly_the_tau_its_schedule_names(tmp_path, monkeypatch):
    seen = recorded_temperatures(monkeypatch)
    config = ListOpsConfig(tau_schedule="exp:1->0.1", **RUN)
    curves = LISTOPS.train(config, out_dir=tmp_path, progress=False)
    schedule = config.temperature
    assert [steps for steps, _ in seen] == [(t,) for t in range(12)]
    for t, (_, taus) in enumerate(seen):
        assert taus.dtype == torch.float32  # from 1 down: never above τ = 1
        assert taus[0].item() == torch.tensor(schedule(t), dtype=torch.float32).item()
    assert seen[0][1][0].item() == 1.0 and seen[-1][1][0].item() == pytest.approx(0.1)
    assert curves.tau.values.tolist() == [schedule(6), schedule(12)]


def test_a_run_trained_alone_per_pass_takes_its_schedule_s_tau_too(tmp_path, monkeypatch):
    """The path of estimators that cannot run under vmap: each pass at the step's τ."""
    monkeypatch.setattr(loop, "vectorised", lambda estimator: False)
    used = []
    real = RunState.tempered

    def recording(state):
        estimator = real(state)
        used.append((state.progress.step, estimator.options["tau"]))
        return estimator

    monkeypatch.setattr(RunState, "tempered", recording)
    config = ListOpsConfig(tau_schedule="linear:2->0.5", **{**RUN, "variance_every": 0})
    LISTOPS.train(config, out_dir=tmp_path, progress=False)
    assert used == [(t, config.temperature(t)) for t in range(12)]


@pytest.mark.parametrize(
    ("estimator", "k", "schedules", "dtype"),
    [
        # Below τ = 1 (float32), a constant among them: one stack.
        ("st_gumbel_softmax", 1, ["exp:1->0.1", "linear:0.9->0.2", "constant:0.5"], "float32"),
        # Across τ = 1: GR-MCK works in float64 at every step of a run that goes above 1.
        ("gumbel_rao", 3, ["exp:2->0.5", "linear:0.5->3", "call:" + __name__ + ":cooling"],
         "float64"),
    ],
)  # fmt: skip
def test_runs_with_different_schedules_train_as_one_stack_and_as_alone(
    tmp_path, monkeypatch, estimator, k, schedules, dtype
):
    seen = recorded_temperatures(monkeypatch)
    run = {**RUN, "estimator": estimator, "k": k}
    configs = [ListOpsConfig(seed=s, tau_schedule=x, **run) for s, x in enumerate(schedules)]
    group = LISTOPS.train(configs, out_dir=tmp_path / "group", progress=False)
    assert {len(steps) for steps, _ in seen} == {len(configs)}  # one stack, every step
    assert {str(taus.dtype) for _, taus in seen} == {f"torch.{dtype}"}
    for index, config in enumerate(configs):
        alone = LISTOPS.train(config, out_dir=tmp_path / "alone", progress=False)
        assert_same_run(group[index], alone)
        a, b = parameters(tmp_path / "group", config), parameters(tmp_path / "alone", config)
        assert all(torch.equal(a[name], b[name]) for name in a)
    # Each run's τ is its own: the same seed under another schedule trains otherwise.
    other = ListOpsConfig(seed=0, tau_schedule=schedules[1], **run)
    moved = LISTOPS.train(other, out_dir=tmp_path / "other", progress=False)
    assert not np.array_equal(group[0].train_loss.values, moved.train_loss.values)


def test_a_resumed_run_continues_its_schedule_bit_for_bit(tmp_path, monkeypatch):
    config = ListOpsConfig(
        estimator="gumbel_rao", k=3, tau_schedule="exp:2->0.5", **{**RUN, "steps": 18}
    )
    fresh = LISTOPS.train(config, out_dir=tmp_path / "fresh", progress=False)
    # Killed as it scores step 12, after the step-6 checkpoint (the first scores step 0).
    scored = iter([loop.scores, loop.scores])
    with monkeypatch.context() as killed:
        killed.setattr(loop, "scores", lambda *a, **k: next(scored)(*a, **k))
        with pytest.raises(StopIteration):
            LISTOPS.train(config, out_dir=tmp_path / "resumed", progress=False)
    seen = recorded_temperatures(monkeypatch)
    resumed = LISTOPS.train(config, out_dir=tmp_path / "resumed", progress=False)
    # It went on from step 6 at the schedule's τ there, not from its start.
    assert seen[0][0] == (6,) and seen[0][1][0].item() == config.temperature(6)
    assert_same_run(fresh, resumed)
    a, b = parameters(tmp_path / "fresh", config), parameters(tmp_path / "resumed", config)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_the_schedule_is_in_the_curves_provenance(tmp_path):
    config = ListOpsConfig(tau_schedule="linear:2->0.5", **RUN)
    curves = LISTOPS.train(config, out_dir=tmp_path, progress=False)
    assert curves.attrs["tau_schedule"] == "linear:2.0->0.5@11"  # its end step, as applied
    stored = json.loads(curves.attrs["config"])
    assert stored["tau_schedule"] == "linear:2.0->0.5" and stored["tau"] == 2.0
    again = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    assert ListOpsConfig(**again) == config  # the run can be made again from it
    plain = LISTOPS.train(ListOpsConfig(tau=0.5, **RUN), out_dir=tmp_path, progress=False)
    assert "tau_schedule" not in plain.attrs and "tau" not in plain
    assert "tau_schedule" not in json.loads(plain.attrs["config"])


def test_cli_trains_with_a_schedule_and_refuses_a_bad_one(tmp_path, capsys):
    argv = ["train", "listops", "--max-length", "8", "--d-hidden", "8", "--steps", "6"]
    argv += ["--eval-every", "3", "--variance-every", "0", "--no-progress"]
    argv += ["--sizes", "200", "40", "40", "--out-dir", str(tmp_path)]
    assert main([*argv, "--tau-schedule", "exp:1->0.1", "--seed", "0", "1"]) == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    config = ListOpsConfig(
        tau_schedule="exp:1->0.1", seed=1, max_length=8, d_hidden=8, steps=6, eval_every=3,
        variance_every=0, sizes=(200, 40, 40),
    )  # fmt: skip
    curves = xr.load_dataset(tmp_path / config.name() / "curves.nc")
    assert curves.attrs["tau_schedule"] == "exp:1.0->0.1@5"
    with pytest.raises(SystemExit, match="tau_schedule end must be a finite number > 0"):
        main([*argv, "--tau-schedule", "exp:1->0"])
    with pytest.raises(SystemExit, match="--tau-schedule and --preset are exclusive"):
        main([*argv, "--tau-schedule", "exp:1->0.1", "--preset", "tiny"])


def test_a_preset_anneals_each_run_from_its_grid_temperature():
    import dataclasses

    from gvbench.listops.experiment import training_configs
    from gvbench.listops.presets import PRESETS

    tiny = PRESETS["tiny"]
    fixed = training_configs(tiny, range(1))
    assert all(config.tau_schedule is None for config in fixed.values())
    annealing = training_configs(dataclasses.replace(tiny, anneal="linear->0.5"), range(1))
    assert set(annealing) == set(fixed)  # the τ axis is where each schedule starts
    for key, config in annealing.items():
        tau = key[1]
        assert config.tau == tau and config.tau_schedule == f"linear:{tau!r}->0.5"
        schedule = config.temperature
        assert schedule(0) == tau and schedule(config.steps - 1) == 0.5
        assert config.name() != fixed[key].name()
    with pytest.raises(ValueError, match=r"anneal must read 'exp->END' or 'linear->END'"):
        training_configs(dataclasses.replace(tiny, anneal="cosine->0.1"), range(1))
    with pytest.raises(ValueError, match="tau_schedule"):
        training_configs(dataclasses.replace(tiny, anneal="exp->0"), range(1))
