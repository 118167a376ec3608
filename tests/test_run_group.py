"""Many runs as one: a run's numbers do not depend on the runs it trains with, bit for bit;
divergence, checkpoints and resume stay per run; every estimator trains in a group."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from torch.func import grad, vmap

import gvbench.estimators as E
from gvbench.cli import main
from gvbench.estimators import RunStream, RunStreams
from gvbench.estimators.streams import PoolExhausted
from gvbench.estimators.validation import set_validate_args
from gvbench.listops.experiment import LISTOPS
from gvbench.listops.experiment import TrainConfig as ListOpsConfig
from gvbench.training import (
    RunProgress,
    TrainingDiverged,
    check_one_group,
    loop,
    per_run_state,
    train_many,
    vectorised,
)
from gvbench.training.sgd import MAX_GRADIENT_NORM, RunUpdate, gradient_norms, sgd
from gvbench.training.stacked import grown_pool
from gvbench.vae.experiment import VAE_EXPERIMENT
from gvbench.vae.experiment import TrainConfig as VAEConfig

LISTOPS_RUN = dict(max_length=8, d_hidden=8, steps=30, sizes=(200, 40, 40), eval_every=10)
LISTOPS_RUN |= dict(variance_every=20, variance_reps=4, tau=0.5)
VAE_RUN = dict(arity=4, latent_dim=8, hidden=16, steps=20, eval_every=10, variance_every=20)
VAE_RUN |= dict(variance_reps=4, iw_samples=3, tau=0.5)


def assert_same_run(a: xr.Dataset, b: xr.Dataset) -> None:
    """Curves, figures and the best parameters' checkpoint equal bit for bit."""
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    for key, value in a.attrs.items():
        if key.startswith(("best_", "test_", "initial_")):
            assert value == b.attrs[key], key


def checkpoint(out, config):
    return torch.load(out / config.name() / "checkpoint.pt", weights_only=False)


def test_seed_3_among_eight_is_seed_3_alone(tmp_path):
    configs = [ListOpsConfig(seed=seed, **LISTOPS_RUN) for seed in range(8)]
    group = LISTOPS.train(configs, out_dir=tmp_path / "group", progress=False)
    alone = LISTOPS.train(configs[3], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[3], alone)
    a, b = checkpoint(tmp_path / "group", configs[3]), checkpoint(tmp_path / "alone", configs[3])
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
        assert torch.equal(a["optimizer"]["momentum"][name], b["optimizer"]["momentum"][name])
    assert torch.equal(a["generator"], b["generator"])
    # Different seeds are different runs: the test could fail.
    assert not np.array_equal(group[2].train_loss.values, group[3].train_loss.values)
    assert np.isfinite(alone.gradient_variance.sel(step=20))


def test_trials_of_a_random_search_train_as_one_and_as_alone(tmp_path):
    configs = [
        VAEConfig(seed=0, lr=lr, momentum=momentum, **VAE_RUN)
        for lr, momentum in ((0.01, 0.9), (0.003, 0.5), (0.03, 0.0))
    ]
    group = VAE_EXPERIMENT.train(configs, out_dir=tmp_path / "group", progress=False)
    for index in (0, 2):
        alone = VAE_EXPERIMENT.train(configs[index], out_dir=tmp_path / "alone", progress=False)
        assert_same_run(group[index], alone)


# One of each way an estimator trains: vectorised without state, vectorised with a state
# read as a number per run (a running baseline), one run per pass (state that trains inside a
# call; values branched on).
@pytest.mark.parametrize(
    ("estimator", "arity", "k"),
    [
        ("gumbel_rao", 4, 3),
        ("reinforce", 4, 1),
        ("rebar", 4, 1),
        ("double_cv", 2, 3),
        ("disarm", 2, 1),
        ("unordered_set", 4, 2),
    ],
)
def test_every_kind_of_estimator_gives_a_run_its_own_numbers(tmp_path, estimator, arity, k):
    run = {**VAE_RUN, "steps": 10, "eval_every": 5, "variance_every": 10}
    configs = [
        VAEConfig(estimator=estimator, k=k, seed=s, **{**run, "arity": arity}) for s in (0, 1)
    ]
    group = VAE_EXPERIMENT.train(configs, out_dir=tmp_path / "group", progress=False)
    alone = VAE_EXPERIMENT.train(configs[1], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[1], alone)


def test_a_diverging_run_is_recorded_and_the_others_go_on(tmp_path):
    configs = [ListOpsConfig(seed=s, **LISTOPS_RUN) for s in range(3)]
    configs[1] = ListOpsConfig(seed=1, **{**LISTOPS_RUN, "lr": 1e38})
    group = LISTOPS.train(configs, out_dir=tmp_path / "group", progress=False)
    assert isinstance(group[1], TrainingDiverged)
    assert "training diverged at step" in str(group[1]) and "lower the learning rate" in str(
        group[1]
    )
    alone = LISTOPS.train(configs[2], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[2], alone)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        LISTOPS.train(configs[1], out_dir=tmp_path / "alone", progress=False)


def test_runs_with_a_running_baseline_train_as_one_each_with_its_own(tmp_path, monkeypatch):
    """REINFORCE's seeds share one stack, each run's baseline its own: a run that diverges is
    recorded (its baseline refuses the non-finite loss) and the others are as alone."""
    assert per_run_state(E.get("reinforce")) == ("baseline",)
    assert per_run_state(E.get("gumbel_rao", k=2)) == ()
    stacks = []
    real = loop.stacked_step

    def counted(live, *args, **kwargs):
        stacks.append(len(live))
        return real(live, *args, **kwargs)

    monkeypatch.setattr(loop, "stacked_step", counted)
    run = {**VAE_RUN, "estimator": "reinforce", "steps": 12, "eval_every": 6}
    configs = [VAEConfig(seed=s, **run) for s in range(3)]
    configs[1] = VAEConfig(seed=1, **{**run, "lr": 1e38})
    group = VAE_EXPERIMENT.train(configs, out_dir=tmp_path / "group", progress=False)
    assert stacks[0] == 3 and set(stacks[2:]) == {2}, stacks
    assert isinstance(group[1], TrainingDiverged)
    for index in (0, 2):
        alone = VAE_EXPERIMENT.train(configs[index], out_dir=tmp_path / "alone", progress=False)
        assert_same_run(group[index], alone)
        together = checkpoint(tmp_path / "group", configs[index])["estimator"]
        assert together == checkpoint(tmp_path / "alone", configs[index])["estimator"]
    baselines = [checkpoint(tmp_path / "group", configs[i])["estimator"] for i in (0, 2)]
    assert baselines[0] != baselines[1]  # each run's own losses


def test_a_killed_group_resumes_every_run_bit_for_bit(tmp_path, monkeypatch):
    configs = [ListOpsConfig(seed=s, **LISTOPS_RUN) for s in range(3)]
    fresh = LISTOPS.train(configs, out_dir=tmp_path / "fresh", progress=False)
    real = loop.scores
    calls = []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # initial scores, step 10, then killed at step 20
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "scores", killed)
    with pytest.raises(KeyboardInterrupt):
        LISTOPS.train(configs, out_dir=tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop, "scores", real)
    resumed = LISTOPS.train(configs, out_dir=tmp_path / "resumed", progress=False)
    for a, b in zip(fresh, resumed, strict=True):
        assert_same_run(a, b)


def test_a_run_s_checkpoint_holds_its_own_tensors_only(tmp_path):
    """A run's tensors are sliced from its group's stack every step: its checkpoint must not
    carry the stack, the other runs' parameters, along with them."""
    configs = [ListOpsConfig(seed=s, **LISTOPS_RUN) for s in range(3)]
    LISTOPS.train(configs, out_dir=tmp_path, progress=False)
    saved = checkpoint(tmp_path, configs[1])
    for part in (saved["params"], saved["optimizer"]["momentum"]):
        for name, value in part.items():
            assert value.untyped_storage().nbytes() == value.numel() * value.element_size(), name


def test_runs_at_different_steps_resume_apart_to_the_same_numbers(tmp_path):
    """A run finished alone, then trained again in a group with fresh runs: it is reused."""
    configs = [ListOpsConfig(seed=s, **LISTOPS_RUN) for s in range(3)]
    first = LISTOPS.train(configs[0], out_dir=tmp_path, progress=False)
    group = LISTOPS.train(configs, out_dir=tmp_path, progress=False)
    assert_same_run(first, group[0])
    alone = LISTOPS.train(configs[2], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[2], alone)


def test_a_run_listed_twice_is_refused(tmp_path):
    config = ListOpsConfig(seed=0, **LISTOPS_RUN)
    with pytest.raises(ValueError, match="configs lists a run twice: L8-st_gumbel_softmax"):
        LISTOPS.train([config, config], out_dir=tmp_path, progress=False)


@pytest.mark.parametrize(("estimator", "k"), [("st_gumbel_softmax", 1), ("gumbel_rao", 3)])
def test_runs_over_tau_train_as_one_and_as_alone(tmp_path, estimator, k):
    """A preset's cell: its temperatures and seeds as one stack, on each side of τ = 1."""
    run = {**LISTOPS_RUN, "estimator": estimator, "k": k}
    configs = [
        ListOpsConfig(seed=s, **{**run, "tau": tau}) for tau in (0.01, 0.1, 1.0) for s in (0, 1)
    ]
    above = [ListOpsConfig(seed=s, **{**run, "tau": tau}) for tau in (2.0, 5.0) for s in (0, 1)]
    group = LISTOPS.train(configs, out_dir=tmp_path / "group", progress=False)
    wide = LISTOPS.train(above, out_dir=tmp_path / "group", progress=False)
    for index in (1, 4):
        alone = LISTOPS.train(configs[index], out_dir=tmp_path / "alone", progress=False)
        assert_same_run(group[index], alone)
    alone = LISTOPS.train(above[3], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(wide[3], alone)
    # Each run's τ is its own: the same seed at another τ trains otherwise.
    assert not np.array_equal(group[1].train_loss.values, group[3].train_loss.values)


def test_only_seed_lr_momentum_and_tau_may_differ_within_a_group():
    a = ListOpsConfig(seed=0)
    check_one_group([a, ListOpsConfig(seed=1, lr=0.1, momentum=0.5, tau=0.01)])
    message = "may differ only in seed, lr, momentum and τ .*; these differ in "
    with pytest.raises(ValueError, match=message + "tau"):
        check_one_group([a, ListOpsConfig(seed=1, tau=2.0)])  # GR-MCK's precision changes
    with pytest.raises(ValueError, match=message + "d_hidden"):
        check_one_group([a, ListOpsConfig(seed=1, d_hidden=4)])
    # REINFORCE takes no τ: runs at two τ are two configurations of one estimator.
    reinforce = ListOpsConfig(estimator="reinforce", seed=0)
    with pytest.raises(ValueError, match=message + "tau"):
        check_one_group([reinforce, ListOpsConfig(estimator="reinforce", seed=0, tau=0.5)])


def test_the_costliest_groups_start_first_and_the_order_changes_no_number(tmp_path):
    submitted = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, function, *arguments, **options):
            submitted.append(tuple(c.name() for c in arguments[1]))
            return super().submit(function, *arguments, **options)

    cheap = [ListOpsConfig(seed=s, **LISTOPS_RUN) for s in range(2)]
    long = [ListOpsConfig(seed=s, **{**LISTOPS_RUN, "steps": 40}) for s in range(2)]
    wide = [ListOpsConfig(seed=s, estimator="gumbel_rao", k=5, **LISTOPS_RUN) for s in range(2)]
    configs = cheap + long + wide
    with Recording(max_workers=1) as executor:
        found = train_many(LISTOPS.train, configs, tmp_path / "pool", executor, progress=False)
    # steps × batch × (1 + log K): GR-MC5 at 30 steps, then 40 steps of ST-GS, then 30.
    assert submitted == [tuple(c.name() for c in g) for g in (wide, long, cheap)]
    in_order = train_many(LISTOPS.train, configs, tmp_path / "in-process", progress=False)
    for a, b in zip(found, in_order, strict=True):
        assert {k: v for k, v in a.items() if k != "created"} == {
            k: v for k, v in b.items() if k != "created"
        }


def test_a_pool_is_sized_to_the_step_s_need():
    # The need rounded up to 4096 uniforms (a larger pool costs its drawing every step) and
    # always larger than the pool that ran out.
    assert grown_pool(4096, 4097) == 8192
    assert grown_pool(4096, 81_000) == 81_920
    assert grown_pool(81_920, 81_921) == 86_016


def test_a_run_s_progress_goes_into_its_checkpoint_as_plain_data(tmp_path):
    """A checkpoint is read back with weights_only (no classes): RunProgress is written as
    plain containers and read back field for field, a pool never grown left out."""
    progress = RunProgress(
        step=3,
        rows=[{"step": 3, "train_loss": 1.5, "selection": 0.5}],
        best={"step": 3, "params": {"w": torch.ones(2)}},
        best_score=-0.5,
        order=(1, torch.arange(4)),
        pool=8192,
        initial=0.25,
    )
    torch.save(progress.as_checkpoint(), tmp_path / "state.pt")
    back = RunProgress.from_checkpoint(torch.load(tmp_path / "state.pt", weights_only=True))
    for field in dataclasses.fields(RunProgress):
        mine, theirs = getattr(progress, field.name), getattr(back, field.name)
        if field.name == "best":
            assert mine["step"] == theirs["step"] and torch.equal(
                mine["params"]["w"], theirs["params"]["w"]
            )
        elif field.name == "order":
            assert mine[0] == theirs[0] and torch.equal(mine[1], theirs[1])
        else:
            assert mine == theirs, field.name
    assert "pool" not in RunProgress().as_checkpoint()["data"]
    assert RunProgress.from_checkpoint(RunProgress().as_checkpoint()) == RunProgress()


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_a_step_is_torch_s_sgd_with_momentum_after_clipping_the_run_s_gradient_to_norm_5(foreach):
    # Gradients as the stacked backward pass returns them: a weight's transposed within its
    # run. Run 1's norm reads only its own slice (the same bits in a stack of 2 or 5), and
    # its steps are torch.optim.SGD's after torch's clip_grad_norm_, clipped or not.
    generator = torch.Generator().manual_seed(0)
    shapes = {"weight": (7, 5), "bias": (7,)}
    stacks = [
        {
            "weight": torch.randn(5, 5, 7, generator=generator).mT,
            "bias": torch.randn(5, 7, generator=generator),
        }
        for _ in range(4)
    ]
    for stack in stacks:
        assert not stack["weight"].is_contiguous()
        alone = gradient_norms([[g[1] for g in stack.values()]])[0]
        small = {
            "weight": stack["weight"][:2].mT.contiguous().mT,  # a copy, laid out alike
            "bias": stack["bias"][:2].clone(),
        }
        assert gradient_norms([[g[r] for g in small.values()] for r in range(2)])[1] == alone
        flat = torch.cat([g[1].double().flatten() for g in stack.values()])
        assert alone.item() == pytest.approx(flat.norm().item(), rel=1e-14)

    start = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}

    def run(lr, momentum):  # a run's parameters and buffers; each step brings its gradient
        buffers = {n: torch.zeros_like(p) for n, p in start.items()}
        return RunUpdate({n: p.clone() for n, p in start.items()}, buffers, {}, lr, momentum)

    def update(state, grads, clip):
        return dataclasses.replace(state, grads=grads, clip=clip)

    for scale in (0.1, 10.0):  # clipping off, then on
        state = run(0.1, 0.9)
        reference = {n: torch.nn.Parameter(p.clone()) for n, p in start.items()}
        optimiser = torch.optim.SGD(reference.values(), lr=0.1, momentum=0.9)
        clipped = []
        for stack in stacks:
            grads = {n: scale * g[1] for n, g in stack.items()}
            norm = gradient_norms([list(grads.values())]).item()
            clipped.append(norm > MAX_GRADIENT_NORM)
            sgd([update(state, grads, min(1.0, MAX_GRADIENT_NORM / (norm + 1e-6)))], foreach)
            for n, p in reference.items():
                p.grad = grads[n].clone()
            torch.nn.utils.clip_grad_norm_(reference.values(), MAX_GRADIENT_NORM)
            optimiser.step()
        assert all(clipped) if scale > 1 else not any(clipped)
        for n, p in reference.items():
            torch.testing.assert_close(state.params[n], p.detach(), rtol=1e-6, atol=1e-7)

    # Runs updated together (other learning rates and momenta, one clipped, one not) take
    # the bits each takes alone.
    settings = [(0.1, 0.9, 0.5), (0.03, 0.0, 1.0), (0.1, 0.5, 1.0), (0.2, 0.9, 0.25)]
    together, alone = [run(lr, mu) for lr, mu, _ in settings], []
    for stack in stacks:
        sgd(
            [update(state, {n: g[i] for n, g in stack.items()}, c) for i, (state, (_, _, c)) in
             enumerate(zip(together, settings, strict=True))],
            foreach,
        )  # fmt: skip
    for i, (lr, mu, c) in enumerate(settings):
        alone.append(run(lr, mu))
        for stack in stacks:
            sgd([update(alone[-1], {n: g[i].clone() for n, g in stack.items()}, c)], False)
        for n in shapes:
            assert torch.equal(together[i].params[n], alone[-1].params[n])
            assert torch.equal(together[i].momentum_buffers[n], alone[-1].momentum_buffers[n])


def test_cli_trains_several_seeds_as_one_command(tmp_path, capsys):
    argv = ["train", "listops", "--max-length", "8", "--d-hidden", "8", "--steps", "10"]
    argv += ["--eval-every", "5", "--variance-every", "0", "--no-progress"]
    assert main([*argv, "--seed", "0", "1", "2", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("test_accuracy") == 3 and out.count("wrote ") == 3
    with pytest.raises(SystemExit, match="lists a seed twice"):
        main([*argv, "--seed", "1", "1", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="device must name a torch device"):
        main([*argv, "--device", "tpu9", "--out-dir", str(tmp_path)])


def test_the_device_is_part_of_the_run_and_its_provenance(tmp_path):
    config = ListOpsConfig(device="cpu", **LISTOPS_RUN)
    curves = LISTOPS.train(config, out_dir=tmp_path, progress=False)
    assert '"device": "cpu"' in curves.attrs["config"]
    with pytest.raises(TypeError, match="device must be a string"):
        ListOpsConfig(device=torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_runs_train_as_one_on_cuda(tmp_path):
    configs = [ListOpsConfig(seed=s, device="cuda", **LISTOPS_RUN) for s in range(3)]
    group = LISTOPS.train(configs, out_dir=tmp_path / "group", progress=False)
    alone = LISTOPS.train(configs[1], out_dir=tmp_path / "alone", progress=False)
    assert_same_run(group[1], alone)
    assert curves_on_cuda(group[0])


def curves_on_cuda(curves: xr.Dataset) -> bool:
    return '"device": "cuda"' in curves.attrs["config"]


# -- the noise itself ----------------------------------------------------------------------


def _vmapped_gradients(name, logits, weights, streams, taus=None, tau=None):
    """Each run's gradient under vmap, at ``taus`` (one per run) or at ``tau`` (a number)."""
    options = _options(name) | ({"tau": tau} if tau is not None else {})
    frozen, _ = E.get(name, **options).frozen()
    per_run = taus is not None
    taus = torch.zeros(len(logits)) if taus is None else taus

    def f(lg, pool, run_tau):
        def objective(sample):
            return ((sample(lg) * weights).sum(-1) - 0.3).pow(2).sum(-1)

        estimator = frozen
        if per_run:
            estimator = dataclasses.replace(frozen, options={**frozen.options, "tau": run_tau})
        surrogate = estimator(objective, generator=RunStream(pool))
        return surrogate.sum(), surrogate.detach()

    set_validate_args(False)
    try:
        pools = streams.pools(4096)
        return vmap(grad(f, has_aux=True), randomness="error")(logits, pools, taus)
    finally:
        set_validate_args(True)


def _options(name):
    info = E.info(name)
    return {name: value for name, value in (("k", 3), ("tau", 0.5)) if name in info.hyper}


VECTORISED = [
    name
    for name, info in E.available().items()
    if not info.exact
    and info.variable == "categorical"  # the experiments train categorical choices
    and vectorised(E.get(name, **_options(name)))
    and name not in ("unordered_set", "foust_reconstruction")  # they branch on values
]


@pytest.mark.parametrize("name", VECTORISED)
def test_every_vectorised_estimator_draws_a_run_s_noise_from_its_own_generator(name):
    arity = 2 if E.info(name).binary_only else 3
    logits = torch.randn(
        9, 3, 4, arity, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    weights = torch.randn(arity, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def gradients(runs):
        streams = RunStreams([torch.Generator().manual_seed(100 + r) for r in runs])
        return _vmapped_gradients(name, logits[runs], weights, streams)

    # Eight runs and a spare against run 3 and a spare.
    (many, many_losses), (few, few_losses) = gradients([*range(8), 8]), gradients([3, 8])
    assert torch.equal(many[3], few[0]) and torch.equal(many_losses[3], few_losses[0])
    assert not torch.equal(many_losses[2], many_losses[3])  # runs draw different noise


TEMPERED = [name for name in VECTORISED if "tau" in E.info(name).hyper]


@pytest.mark.parametrize("name", TEMPERED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_vectorised_estimator_takes_a_tau_per_run(name, dtype):
    """Runs over τ in one stack: each run's gradient is its own, bit for bit, and is the
    estimator's at that τ given as a number (to rounding: another kernel divides)."""
    arity = 2 if E.info(name).binary_only else 3
    logits = torch.randn(9, 3, 4, arity, dtype=dtype, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(arity, dtype=dtype, generator=torch.Generator().manual_seed(1))
    taus = [0.1, 0.3, 0.5, 1.0, 0.05, 0.7, 0.2, 0.9, 0.1]

    def gradients(runs, tau=None):
        streams = RunStreams([torch.Generator().manual_seed(100 + r) for r in runs])
        per_run = torch.tensor([taus[r] for r in runs], dtype=dtype) if tau is None else None
        return _vmapped_gradients(name, logits[runs], weights, streams, per_run, tau)

    (many, _), (few, _) = gradients([*range(8), 8]), gradients([3, 8])
    assert torch.equal(many[3], few[0])
    (number, _) = gradients([3, 8], tau=taus[3])
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(many[3], number[0], rtol=tolerance, atol=tolerance)
    (other, _) = gradients([3, 8], tau=taus[1])
    assert not torch.allclose(many[3], other[0], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "op",
    [torch.sigmoid, torch.nn.functional.softplus, lambda x: x.abs() ** 0.37],
    ids=["sigmoid", "softplus", "pow"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [33, 100, 784])
def test_the_spare_takes_every_stack_s_element_wise_tail(op, dtype, size):
    """These ops round differently in a kernel's vector loop and in the scalar code that
    finishes a tensor's last elements (measured: without the spare, run r's bits change
    with the stack size). With the spare last, a run's tensor of at least the widest vector
    loop's length (32) has the same bits at every stack size."""
    generator = torch.Generator().manual_seed(size)
    runs = torch.randn(17, size, dtype=dtype, generator=generator) * 4
    spare = [16]
    for stack in (1, 2, 5, 8, 16):
        together = vmap(op)(runs[[*range(stack), *spare]])
        for r in range(stack):
            assert torch.equal(together[r], vmap(op)(runs[[r, *spare]])[0]), (stack, r)


def test_run_streams_are_checked_at_the_door():
    with pytest.raises(TypeError, match=r"non-empty sequence of torch\.Generator"):
        RunStreams([])
    with pytest.raises(TypeError, match=r"non-empty sequence of torch\.Generator"):
        RunStreams([0])
    with pytest.raises(TypeError, match="a RunStream or None"):
        E.get("st_gumbel_softmax")(
            lambda s: s(torch.zeros(2, 3)).sum(-1), generator=RunStreams([torch.Generator()])
        )


def test_a_run_stream_hands_out_its_pool_in_order_and_says_when_it_runs_out():
    pool = torch.rand(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stream = RunStream(pool)
    assert torch.equal(stream.rand((2, 3), torch.float64, pool.device).flatten(), pool[:6])
    low = stream.rand((2,), torch.float32, pool.device)
    assert low.dtype == torch.float32 and bool((low < 1).all())
    assert bool(((0 <= stream.randint(3, (2,), pool.device)) < 3).all())
    with pytest.raises(PoolExhausted, match="11 needed"):
        stream.rand((1,), torch.float64, pool.device)
    # A float32 draw never rounds up to 1: 1 − U stays positive.
    top = RunStream(torch.full((4,), 1 - 2.0**-40, dtype=torch.float64))
    assert float(top.rand((4,), torch.float32, pool.device).max()) < 1.0


def test_each_row_of_the_pools_is_its_own_generator_s_next_uniforms():
    streams = RunStreams([torch.Generator().manual_seed(seed) for seed in (5, 7, 5)])
    pools = streams.pools(1000)
    for row, seed in zip(pools, (5, 7, 5), strict=True):
        expected = torch.rand(
            1000, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(row, expected)
    assert not torch.equal(pools[0], pools[1])
