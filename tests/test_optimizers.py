"""A run's optimizer: SGD and Adam by parameter-name prefix after clipping, each checked against
torch.optim; a run's bits are its own in any stack, and its state resumes from its checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import xarray as xr

from gvbench.training import SGD, Adam, CheckpointError, Optimizer, TrainingDiverged, loop
from gvbench.training.adam import AdamUpdate, adam
from gvbench.training.optimizers import apply
from gvbench.training.sgd import gradient_norms
from gvbench.vae.experiment import VAE
from gvbench.vae.experiment import TrainConfig as VAEConfig

SHAPES = {"prior": (3,), "net.weight": (7, 5), "net.bias": (7,)}


def gradients(steps, dtype, scale=1.0, seed=0):
    """Per step, gradients laid out as the stacked backward pass leaves a run's (a weight's
    transposed within its run)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        grads = {
            n: scale * torch.randn(s, generator=generator, dtype=dtype) for n, s in SHAPES.items()
        }
        grads["net.weight"] = grads["net.weight"].mT.contiguous().mT
        out.append(grads)
    return out


def start(dtype):
    generator = torch.Generator().manual_seed(1)
    return {n: torch.randn(s, generator=generator, dtype=dtype) for n, s in SHAPES.items()}


def reference(optimizer, dtype, grads, foreach=None):
    """The same steps by torch.optim: clip_grad_norm_ over every parameter, then one
    torch.optim optimizer per rule."""
    params = {n: torch.nn.Parameter(p.clone()) for n, p in start(dtype).items()}
    steppers = []
    for rule, names in optimizer.groups(list(params)):
        chosen = [params[n] for n in names]
        if isinstance(rule, SGD):
            steppers.append(torch.optim.SGD(chosen, lr=rule.lr, momentum=rule.momentum))
        else:
            steppers.append(
                torch.optim.Adam(
                    chosen, lr=rule.lr, betas=rule.betas, eps=rule.eps, foreach=foreach
                )
            )
    for step in grads:
        for n, p in params.items():
            p.grad = step[n].clone()
        if optimizer.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), optimizer.max_norm)
        for stepper in steppers:
            stepper.step()
    return {n: p.detach() for n, p in params.items()}


def ours(optimizer, dtype, grads, foreach=None):
    params = start(dtype)
    state = optimizer.init(params)
    for step in grads:
        norm = gradient_norms([list(step.values())]).item()
        apply(optimizer.updates(params, state, step, norm), foreach)
    return params, state


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_is_torch_s_adam_on_the_same_gradients(dtype, foreach):
    optimizer = Optimizer((("", Adam(1e-2, betas=(0.8, 0.99), eps=1e-6)),), max_norm=None)
    grads = gradients(6, dtype)
    mine, state = ours(optimizer, dtype, grads, foreach)
    theirs = reference(optimizer, dtype, grads, foreach)
    for name in SHAPES:  # the same operations in the same order: the same bits
        assert torch.equal(mine[name], theirs[name]), name
    assert state.step == 6 and set(state.slots) == {"exp_avg", "exp_avg_sq"}
    assert not torch.equal(mine["prior"], start(dtype)["prior"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clipping_then_sgd_for_the_prior_and_adam_for_the_rest_is_torch_s(dtype):
    # DisARM's split (SGD for the prior's logits, Adam for the networks), here clipped: the
    # clipping factor is read from a float64 norm, torch's from the gradient's dtype.
    optimizer = Optimizer((("prior", SGD(1e-2, momentum=0.5)), ("", Adam(1e-3))), max_norm=1.0)
    grads = gradients(5, dtype, scale=10.0)
    assert all(gradient_norms([list(g.values())]).item() > 1.0 for g in grads)
    mine, state = ours(optimizer, dtype, grads)
    theirs = reference(optimizer, dtype, grads)
    tolerance = (
        {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-15}
    )
    for name in SHAPES:
        torch.testing.assert_close(mine[name], theirs[name], **tolerance)
    assert set(state.slots["momentum"]) == {"prior"}
    assert set(state.slots["exp_avg"]) == {"net.weight", "net.bias"}
    unclipped = dataclasses.replace(optimizer, max_norm=None)
    assert not torch.equal(ours(unclipped, dtype, grads)[0]["prior"], mine["prior"])


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_runs_updated_together_take_the_bits_each_takes_alone(foreach):
    settings = [(1e-2, (0.9, 0.999), 0.5), (3e-3, (0.9, 0.999), 1.0), (1e-2, (0.5, 0.9), 0.25)]
    steps = [gradients(4, torch.float32, seed=seed) for seed in range(len(settings))]

    def run(lr, betas):
        params = start(torch.float32)
        moments = [{n: torch.zeros_like(p) for n, p in params.items()} for _ in range(2)]
        return AdamUpdate(params, *moments, {}, lr, betas, 1e-8, 0)

    together = [run(lr, betas) for lr, betas, _ in settings]
    for t in range(4):
        adam(
            [
                dataclasses.replace(r, grads=steps[i][t], step=t + 1, clip=settings[i][2])
                for i, r in enumerate(together)
            ],
            foreach,
        )
    for i, (lr, betas, clip) in enumerate(settings):
        alone = run(lr, betas)
        for t in range(4):
            adam([dataclasses.replace(alone, grads=steps[i][t], step=t + 1, clip=clip)], False)
        for name in SHAPES:
            assert torch.equal(together[i].params[name], alone.params[name])
            assert torch.equal(together[i].exp_avg_sq[name], alone.exp_avg_sq[name])


def test_each_parameter_takes_the_first_rule_its_name_starts_with():
    prior, rest = SGD(0.1), Adam(1e-3)
    optimizer = Optimizer((("prior", prior), ("net.b", SGD(0.2)), ("", rest)))
    assert optimizer.rule("prior") is prior and optimizer.rule("net.weight") is rest
    assert optimizer.rule("net.bias") == SGD(0.2)
    groups = optimizer.groups(list(SHAPES))
    assert [names for _, names in groups] == [["prior"], ["net.bias"], ["net.weight"]]
    with pytest.raises(ValueError, match=r"parameter 'net.weight' matches no rule .*'prior'"):
        Optimizer((("prior", prior),)).init(start(torch.float32))
    assert str(Optimizer((("", SGD(0.01, 0.9)),))) == "SGD(lr=0.01, momentum=0.9); max_norm 5"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: SGD(0.0), r"lr must be a number > 0, got 0\.0"),
        (lambda: SGD(float("inf")), r"lr must be finite"),
        (lambda: SGD(0.1, momentum=1.0), r"momentum must be a number in \[0, 1\), got 1\.0"),
        (lambda: Adam(1e-3, betas=(0.9, 1.0)), r"betas\[1\] must be a number in \[0, 1\)"),
        (lambda: Adam(1e-3, betas=(0.9,)), r"betas must be a pair of numbers in \[0, 1\)"),
        (lambda: Adam(1e-3, eps=0), r"eps must be a number > 0"),
        (lambda: Optimizer(()), r"rules must be \(prefix, SGD \| Adam\) pairs"),
        (lambda: Optimizer((("", "adam"),)), r"rules must be .* got \('', 'adam'\)"),
        (lambda: Optimizer((("", SGD(0.1)),), max_norm=-1.0), r"max_norm must be a number > 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(make, says):
    with pytest.raises(ValueError, match=says):
        make()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda s: {"state": {}, "param_groups": []}, r"^holds no momentum \(written by an older"),
        (lambda s: s | {"exp_avg": {}}, r"^holds optimizer state for exp_avg, momentum; this run"),
        (lambda s: s | {"momentum": {"prior": torch.zeros(3)}}, r"differ in net.bias, net.weight"),
        (lambda s: s | {"momentum": s["momentum"] | {"prior": torch.zeros(4)}}, r"another shape"),
        (lambda s: s | {"step": 2.0}, r"^holds no step count"),
    ],
)
def test_a_checkpoint_s_optimizer_state_of_another_optimizer_or_model_is_refused(damage, says):
    optimizer, params = Optimizer((("", SGD(0.1, 0.9)),)), start(torch.float32)
    state = optimizer.init(params)
    state.slots["momentum"]["prior"] += 1.0
    back = optimizer.restore(state.as_checkpoint(), params)
    assert torch.equal(back.slots["momentum"]["prior"], state.slots["momentum"]["prior"])
    with pytest.raises(ValueError, match=says):
        optimizer.restore(damage(state.as_checkpoint()), params)
    by_adam = Optimizer((("", Adam(0.1)),))
    no_step = {k: v for k, v in by_adam.init(params).as_checkpoint().items() if k != "step"}
    with pytest.raises(ValueError, match=r"^holds no step count"):
        by_adam.restore(no_step, params)


class AdamVAE(VAE):
    """The VAE trained as DisARM trains its networks: Adam, no clipping."""

    def optimizer(self, config):
        return Optimizer((("decoder.2.bias", SGD(config.lr)), ("", Adam(config.lr))), None)


TINY = dict(arity=4, latent_dim=8, hidden=16, steps=20, eval_every=5, variance_every=0, tau=0.5)


def killed_at_the_third_evaluation(monkeypatch, train):
    real, calls = loop.scores, []

    def scores(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after the step-5 checkpoint (the first scores step 0)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "scores", scores)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(loop, "scores", real)


def saved(out, config):
    return torch.load(out / config.name() / "checkpoint.pt", weights_only=True)


def test_an_adam_run_in_a_stack_and_resumed_is_the_run_alone_and_uninterrupted(
    tmp_path, monkeypatch
):
    experiment = AdamVAE()
    configs = [VAEConfig(seed=seed, lr=lr, **TINY) for seed, lr in ((0, 3e-3), (1, 1e-3))]
    group = experiment.train(configs, out_dir=tmp_path / "group", progress=False)
    alone = experiment.train(configs[1], out_dir=tmp_path / "alone", progress=False)
    xr.testing.assert_identical(group[1].drop_attrs(), alone.drop_attrs())

    def train():
        return experiment.train(configs[1], out_dir=tmp_path / "resumed", progress=False)

    killed_at_the_third_evaluation(monkeypatch, train)
    assert saved(tmp_path / "resumed", configs[1])["optimizer"]["step"] == 5
    xr.testing.assert_identical(train().drop_attrs(), alone.drop_attrs())
    a, b = saved(tmp_path / "alone", configs[1]), saved(tmp_path / "resumed", configs[1])
    assert a["optimizer"]["step"] == 20 and set(a["optimizer"]["momentum"]) == {"decoder.2.bias"}
    for slot in ("momentum", "exp_avg", "exp_avg_sq"):
        for name, value in a["optimizer"][slot].items():
            assert torch.equal(value, b["optimizer"][slot][name]), (slot, name)
    # The same run by SGD is another run: Adam's numbers are not SGD's.
    plain = VAE().train(configs[1], out_dir=tmp_path / "sgd", progress=False)
    assert not (plain.train_loss.values == alone.train_loss.values).all()
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt holds optimizer state for"):
        VAE().train(configs[1], out_dir=tmp_path / "alone", progress=False)


def test_a_checkpoint_of_an_older_gvbench_with_sgd_momentum_alone_resumes(tmp_path, monkeypatch):
    experiment, config = VAE(), VAEConfig(seed=2, lr=0.01, **TINY)
    fresh = experiment.train(config, out_dir=tmp_path / "fresh", progress=False)

    def train():
        return experiment.train(config, out_dir=tmp_path / "resumed", progress=False)

    killed_at_the_third_evaluation(monkeypatch, train)
    path = tmp_path / "resumed" / config.name() / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    old["optimizer"] = {"momentum": old["optimizer"]["momentum"]}  # as written before Adam
    torch.save(old, path)
    xr.testing.assert_identical(train().drop_attrs(), fresh.drop_attrs())


def test_a_diverged_adam_run_names_its_optimizer(tmp_path):
    class Diverging(AdamVAE):
        def loss(self, output, *inputs):
            return super().loss(output, *inputs) * float("inf")

    config = VAEConfig(seed=0, lr=1e-3, **TINY)
    says = r"step 1: .*\(prefix 'decoder.2.bias': SGD\(lr=0.001, momentum=0\), prefix '': Adam"
    with pytest.raises(
        TrainingDiverged, match=says + r"\(lr=0.001, .*no clipping\).*the learning rate$"
    ):
        Diverging().train(config, out_dir=tmp_path, progress=False)
