"""Training runs: every piece of state in the checkpoint, options checked at the door, divergence
stops with a clear message, and results that do not depend on the machine's thread count."""

from __future__ import annotations

import pytest
import torch
import xarray as xr

import gvbench.estimators as E
from gvbench.cli import main
from gvbench.listops.experiment import LISTOPS as listops_train
from gvbench.listops.experiment import TrainConfig as ListOpsConfig
from gvbench.training import loop
from gvbench.vae.experiment import VAE_EXPERIMENT as vae_train
from gvbench.vae.experiment import TrainConfig as VAEConfig

STATEFUL = [
    name
    for name, info in E.available().items()
    if info.state is not None and info.variable == "categorical"  # the experiments' choices
]


def _tiny(experiment, estimator):
    k = max(1, E.info(estimator).min_k)
    if experiment == "listops":
        return (
            listops_train,
            ListOpsConfig(
                estimator=estimator,
                max_length=8,
                d_hidden=8,
                steps=60,
                sizes=(200, 40, 40),
                eval_every=20,
                variance_every=40,
                variance_reps=4,
                seed=1,
                lr=0.05,
                k=k,
            ),
        )
    return (
        vae_train,
        VAEConfig(
            estimator=estimator,
            arity=2 if E.info(estimator).binary_only else 4,
            latent_dim=16,
            hidden=32,
            steps=60,
            eval_every=20,
            variance_every=40,
            variance_reps=4,
            iw_samples=5,
            seed=1,
            lr=0.01,
            k=k,
        ),
    )


def _final_parameters(out_dir, config):
    return torch.load(out_dir / config.name() / "checkpoint.pt", weights_only=False)["params"]


@pytest.mark.parametrize("experiment", ["listops", "vae"])
@pytest.mark.parametrize("estimator", STATEFUL)
def test_a_killed_run_with_estimator_state_resumes_bit_for_bit(
    tmp_path, monkeypatch, experiment, estimator
):
    if experiment == "listops" and E.info(estimator).relaxed:
        pytest.skip(f"{estimator} feeds relaxed samples; ListOps needs hard merges")
    if experiment == "listops" and E.info(estimator).binary_only:
        pytest.skip(f"{estimator} is for binary choices; ListOps merges are categorical")
    module, config = _tiny(experiment, estimator)
    fresh = module.train(config, out_dir=tmp_path / "fresh", progress=False)
    real = loop.scores
    calls = []

    def killed_at_the_second_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after the step-20 checkpoint (the first scores step 0)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "scores", killed_at_the_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        module.train(config, out_dir=tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop, "scores", real)
    resumed = module.train(config, out_dir=tmp_path / "resumed", progress=False)
    xr.testing.assert_identical(fresh.drop_attrs(), resumed.drop_attrs())
    a, b = (
        _final_parameters(tmp_path / "fresh", config),
        _final_parameters(tmp_path / "resumed", config),
    )
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_checkpoint_holds_the_running_baseline(tmp_path):
    _, config = _tiny("listops", "reinforce")
    listops_train.train(config, out_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / config.name() / "checkpoint.pt", weights_only=False)
    assert saved["estimator"]["baseline"]["value"] is not None


def test_results_do_not_depend_on_the_callers_thread_count(tmp_path):
    _, config = _tiny("vae", "st_gumbel_softmax")
    outcomes = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            curves = vae_train.train(config, out_dir=tmp_path / str(threads), progress=False)
            assert torch.get_num_threads() == threads  # restored afterwards
            outcomes.append(curves)
    finally:
        torch.set_num_threads(previous)
    xr.testing.assert_identical(outcomes[0].drop_attrs(), outcomes[1].drop_attrs())
    assert '"threads": 1' in outcomes[0].attrs["config"]


TRAIN = [
    "train",
    "vae",
    "--steps",
    "5",
    "--eval-every",
    "5",
    "--variance-every",
    "0",
    "--latent-dim",
    "8",
    "--hidden",
    "8",
    "--iw-samples",
    "2",
    "--no-progress",
]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "-1"], "batch_size must be an integer >= 1"),
        (["--momentum", "2"], r"momentum must lie in \[0, 1\)"),
        (["--momentum", "-0.5"], r"momentum must lie in \[0, 1\)"),
        (["--lr", "-1"], r"lr must be a number in \(0, 3.4e\+38\]"),
        (["--lr", "nan"], r"lr must be a number in \(0, 3.4e\+38\]"),
        (["--lr", "1e300"], r"lr must be a number in \(0, 3.4e\+38\]"),
        (["--estimator", "exact"], "not a training estimator"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
        (["--data-dir", "/nonexistent"], "is not a folder"),
    ],
)
def test_training_options_are_checked_at_the_door(tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        main([*TRAIN, "--out-dir", str(tmp_path), *extra])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [["--search", "-2"], ["--workers", "0"], ["--workers", "-3"]])
def test_counts_on_the_command_line_are_checked(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as error:
        main([*TRAIN, "--out-dir", str(tmp_path), *extra])
    assert error.value.code == 2 and "must be an integer >=" in capsys.readouterr().err


def test_a_diverged_run_stops_with_a_clear_message(tmp_path):
    with pytest.raises(SystemExit, match=r"training diverged at step \d+.*lower the learning rate"):
        main([*TRAIN, "--out-dir", str(tmp_path), "--lr", "1e38", "--steps", "20"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("dtype=foo", "dtype must be float32 or float64"),
        ("dtype=int64", "dtype must be float32 or float64"),
        ("centre=[1,2]", "centre must be a number or 3 numbers"),
        ("n=abc", r"n \(categories\) must be an integer"),
        ("n=2.7", r"n \(categories\) must be an integer"),
        ("seed=1.5", "seed must be an integer"),
    ],
)
def test_task_options_are_checked(tmp_path, option, message):
    with pytest.raises(SystemExit, match=message):
        main(["sweep", "toy", "--task-option", option, "--out", str(tmp_path / "x.nc")])


@pytest.mark.parametrize(
    ("option", "message"),
    [("checkpoint=/nonexistent", "is not a file"), ("train_steps=0", "train_steps must be")],
)
@pytest.mark.parametrize("task", ["listops", "vae"])
def test_experiment_task_options_are_checked(tmp_path, task, option, message):
    with pytest.raises(SystemExit, match=message):
        main(["sweep", task, "--task-option", option, "--out", str(tmp_path / "x.nc")])
