"""ModuleTask: an ordinary nn.Module measured by the harness — the same numbers as the VAE
task written by hand, every estimator, vmap and its one-draw fallback, groups, devices."""

from __future__ import annotations

import functools
import math
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench.harness import gradient_draws, gradient_metrics, reference_gradient
from gvbench.tasks import ModuleTask
from gvbench.tasks.base import Task
from gvbench.tasks.parameter_selection import group_parameters, select_parameters
from tests.conftest import CATEGORICAL_ESTIMATORS
from tests.models import tiny_model_task

ARITY, LATENT, HIDDEN = 4, 8, 16


def init_parameters(seed):
    generator = torch.Generator().manual_seed(seed)

    def weight(*shape):
        # float32 draws: the module below is built in float32, then made float64
        return (torch.randn(*shape, generator=generator) / math.sqrt(shape[0])).double()

    zeros = functools.partial(torch.zeros, dtype=torch.float64)
    encoder = {"w1": weight(784, HIDDEN), "b1": zeros(HIDDEN), "w2": weight(HIDDEN, LATENT)}
    encoder["b2"] = zeros(LATENT)
    decoder = {"w1": weight(LATENT, HIDDEN), "b1": zeros(HIDDEN), "w2": weight(HIDDEN, 784)}
    decoder["b2"] = zeros(784)
    return encoder, decoder


def negative_elbo(encoder, decoder, x, sample):
    """The VAE written by hand with a leading draw axis R: the oracle ModuleTask must match."""
    r = encoder["w1"].shape[0]
    h = torch.tanh(torch.baddbmm(encoder["b1"][:, None], x.expand(r, *x.shape), encoder["w1"]))
    logits = torch.baddbmm(encoder["b2"][:, None], h, encoder["w2"]).reshape(r, len(x), -1, ARITY)
    z = sample(logits)
    pixels = (
        torch.tanh(z.flatten(2) @ decoder["w1"] + decoder["b1"]) @ decoder["w2"] + decoder["b2"]
    )
    reconstruction = nn.functional.binary_cross_entropy_with_logits(
        pixels, x.expand_as(pixels), reduction="none"
    ).sum(-1)
    log_q = logits.log_softmax(-1)
    return reconstruction + (log_q.exp() * log_q).sum((-1, -2)) + LATENT // ARITY * math.log(ARITY)


class HandWrittenVAE(Task):
    """The encoder's gradient of the negative ELBO, drawn R at a time by the draw axis."""

    name = "vae"
    relaxed_inputs = True
    max_draws_per_pass = 64
    dtype = torch.float64

    def __init__(self, encoder, decoder, images):
        self.encoder, self.decoder, self.images = encoder, decoder, images

    @property
    def arity(self):
        return ARITY

    def parameters(self):
        return self.encoder

    def loss(self, params, sample, batch_size):
        return negative_elbo(params, self.decoder, self.images[:batch_size], sample)

    def config(self):
        return {"task": "vae", "test": True}


class VAE(nn.Module):
    """The same VAE as a user would write it: nn.Linear layers."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, LATENT))
        self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 784))
        with torch.no_grad():
            for layers, weights in ((self.encoder, encoder), (self.decoder, decoder)):
                for index, key in ((0, "1"), (2, "2")):
                    layers[index].weight.copy_(weights["w" + key].T)
                    layers[index].bias.copy_(weights["b" + key])

    def forward(self, x, sample):
        logits = self.encoder(x).view(len(x), -1, ARITY)
        return self.decoder(sample(logits).flatten(1)), logits


def negative_elbo_of(output, x):
    pixel_logits, logits = output
    reconstruction = nn.functional.binary_cross_entropy_with_logits(
        pixel_logits, x, reduction="none"
    ).sum(-1)
    log_q = logits.log_softmax(-1)
    kl = (log_q.exp() * log_q).sum((-1, -2)) + logits.shape[-2] * math.log(ARITY)
    return reconstruction + kl


@pytest.fixture(scope="module")
def vae_pair():
    encoder, decoder = init_parameters(seed=3)
    images = (torch.rand(16, 784, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    by_hand = HandWrittenVAE(encoder, decoder, images)
    model = VAE(encoder, decoder).double()
    by_module = ModuleTask(
        model,
        images,
        negative_elbo_of,
        parameters=lambda name, _: name.startswith("encoder."),
        name="vae-module",
        arity=ARITY,
        relaxed_inputs=True,
        max_draws_per_pass=HandWrittenVAE.max_draws_per_pass,
        reference_reps=200,
        # vmap, not "auto": these tests compare its draw stream with the draw axis's, and
        # on a busy machine "auto" may time the loop faster and draw another stream.
        batched=True,
    )
    by_hand.reference_reps = 200
    return by_hand, by_module


def test_the_module_reproduces_the_hand_written_elbo(vae_pair):
    by_hand, by_module = vae_pair
    z = E.st_gumbel_softmax  # any sampler; the same generator state gives the same sample
    params = {k: v[None] for k, v in by_hand.parameters().items()}
    hand = negative_elbo(
        params,
        by_hand.decoder,
        by_hand.images[:5],
        lambda logits: z(logits, generator=torch.Generator().manual_seed(0)),
    )
    named = dict(by_module.module.named_parameters())
    module = by_module.loss(
        {n: named[n].detach()[None] for n in by_module.measured},
        lambda logits: z(logits, generator=torch.Generator().manual_seed(0)),
        5,
    )
    torch.testing.assert_close(module, hand, rtol=1e-12, atol=1e-9)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_both_paths_give_the_same_numbers_for_the_same_seed(vae_pair):
    """vmap draws every sample from the cell's generator in the order the draw axis would."""
    grid = dict(
        estimators=["st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo"],
        tau=[0.5],
        k=[1, 3],
        batch_size=[4],
        reps=100,
        progress=False,
    )
    hand = gvbench.sweep(vae_pair[0], **grid)
    module = gvbench.sweep(vae_pair[1], **grid)
    assert (module.status == hand.status).all()
    assert int((module.status == "done").sum()) == 7  # RLOO needs K >= 2
    # GR-MCK at K > 1 draws its K conditionals in the backward pass, which vmap batches
    # draw-major rather than K-major: the same law from another stream (tested below).
    same_stream = ~((module.estimator == "gumbel_rao") & (module.k > 1))
    for name in ("variance", "bias2", "mse", "cosine", "snr", "variance_se", "bias2_se"):
        np.testing.assert_allclose(
            module[name].where(same_stream).values,
            hand[name].where(same_stream).values,
            rtol=1e-8,
            atol=1e-10,
            err_msg=name,
        )


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_vmap_and_one_draw_per_pass_draw_the_same_gradients(vae_pair):
    module = vae_pair[1]
    one_by_one = ModuleTask(
        module.module,
        module.inputs,
        module.loss_fn,
        parameters=module.measured,
        arity=ARITY,
        batched=False,
    )
    # Estimators that draw all their noise in the forward pass: one stream either way (GR-MCK
    # interleaves forward and backward draws differently, REINFORCE's baseline moves per
    # pass: the same law, tested statistically).
    for name, options in [("st_gumbel_softmax", {"tau": 0.5}), ("gumbel_softmax", {"tau": 2.0})]:
        draws = [
            gradient_draws(task, E.get(name, **options), 12, 4, torch.Generator().manual_seed(5))
            for task in (module, one_by_one)
        ]
        torch.testing.assert_close(draws[0], draws[1], rtol=1e-10, atol=1e-12)


def test_gumbel_rao_under_vmap_agrees_with_its_draw_axis_form():
    """GR-MC10's custom autograd Function under torch.func.vmap: the same law as batched."""
    logits = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weights = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    class Choice(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(logits.clone())

        def forward(self, x, sample):
            return ((sample(self.theta.expand(len(x), -1, -1)) * weights).sum(-1) ** 2).sum(-1)

    task = ModuleTask(Choice().double(), torch.zeros(1, 1, dtype=torch.float64))
    estimator = E.get("gumbel_rao", tau=0.5, k=10)
    reference = reference_gradient(task, 1)
    draws = gradient_draws(task, estimator, 4000, 1, torch.Generator().manual_seed(0))
    leaf = logits.expand(4000, -1, -1).clone().requires_grad_()
    E.gumbel_rao(leaf, tau=0.5, k=10, generator=torch.Generator().manual_seed(1)).mul(weights).sum(
        -1
    ).pow(2).sum().backward()
    direct = leaf.grad.reshape(4000, -1)
    a, b = gradient_metrics(draws, reference), gradient_metrics(direct, reference)
    for name in ("variance", "bias2"):
        assert abs(a[name] - b[name]) < 5 * math.hypot(a[f"{name}_se"], b[f"{name}_se"]), name


def test_every_registered_estimator_runs_on_a_module():
    # Batched by choice: "auto" times both ways, and on a busy machine may choose the loop,
    # where no estimator would try vmap and none could be seen falling back.
    task = tiny_model_task(relaxed_inputs=True, reference_reps=400, batched=True)
    names = [n for n in CATEGORICAL_ESTIMATORS if not E.info(n).exact]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = gvbench.sweep(
            task,
            estimators=names,
            tau=[1.0],
            k=[2],
            batch_size=[2],
            reps=40,
            warmup=20,
            progress=False,
        )
    status = ds.status.squeeze().to_series()
    assert (status == "done").all(), status[status != "done"]
    assert np.isfinite(ds.variance.values).all()
    fallbacks = {
        str(w.message).split(": ")[1].split(" ")[0]
        for w in caught
        if "one draw per pass" in str(w.message)
    }
    # Those whose state trains inside a call fall back, and say so; the others batch.
    assert {"rebar", "relax"} <= fallbacks
    batched = {"st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo", "arm", "disarm", "carms"}
    assert not fallbacks & (batched | {"indecater", "categorical_disarm", "arms"})


def test_the_exact_reference_of_an_enumerable_module_by_the_fallback():
    task = tiny_model_task()
    task.enumerable = lambda batch_size: True  # 2^3 outcomes per example
    ds = gvbench.sweep(
        task, estimators=["rloo"], tau=[1.0], k=[4], batch_size=[2], reps=2000, progress=False
    )
    assert float(ds.reference_draws.squeeze()) == 0.0  # exact
    bias2, se = float(ds.bias2.squeeze()), float(ds.bias2_se.squeeze())
    assert abs(bias2) < 5 * se  # RLOO is unbiased


def test_groups_default_to_top_level_modules_and_are_reported():
    task = tiny_model_task()
    assert task.parameter_groups() == {
        "decoder": ["decoder.weight", "decoder.bias"],
        "encoder": ["encoder.weight", "encoder.bias"],
    }
    ds = gvbench.sweep(
        task,
        estimators=["st_gumbel_softmax"],
        tau=[1.0],
        k=[1],
        batch_size=[2],
        reps=50,
        progress=False,
    )
    groups = ds.group_variance.squeeze()
    total = float(ds.variance.squeeze())
    np.testing.assert_allclose(float(groups.sum()), total, rtol=1e-10)  # traces add up
    assert float(ds.group_parameters.sel(group="encoder").squeeze()) == 3 * 6 + 6
    assert float(ds.parameters.squeeze()) == 3 * 6 + 6 + 6 * 3 + 3


def test_parameters_and_groups_are_the_users_choice():
    task = tiny_model_task(parameters=["encoder.weight"], groups=None)
    assert list(task.parameters()) == ["encoder.weight"] and task.parameter_groups() is None
    grouped = tiny_model_task(groups={"weights": ["encoder.weight", "decoder.weight"]})
    assert grouped.parameter_groups() == {"weights": ["encoder.weight", "decoder.weight"]}
    with pytest.raises(ValueError, match="not in the module"):
        tiny_model_task(parameters=["nope"])
    with pytest.raises(ValueError, match="matches no measured parameter"):
        tiny_model_task(groups={"x": ["nothing."]})
    with pytest.raises(ValueError, match="'all' names the whole gradient"):
        tiny_model_task(groups={"all": ["encoder."]})


def test_parameter_selection_by_default_by_predicate_and_by_name():
    model = nn.ModuleDict({"encoder": nn.Linear(2, 3), "decoder": nn.Linear(3, 2)})
    model.decoder.bias.requires_grad_(False)
    assert select_parameters(model, None) == ["encoder.weight", "encoder.bias", "decoder.weight"]
    weights = select_parameters(model, lambda name, p: name.endswith("weight"))
    assert weights == ["encoder.weight", "decoder.weight"]
    assert select_parameters(model, ["decoder.bias"]) == ["decoder.bias"]  # named: taken as is
    with pytest.raises(TypeError, match=r"write \['encoder.weight'\]"):
        select_parameters(model, "encoder.weight")
    with pytest.raises(ValueError, match="selected none"):
        select_parameters(model, lambda name, p: False)
    # One group per top-level child; none where every measured name is in one child.
    assert group_parameters(weights, None) == {
        "decoder": ["decoder.weight"],
        "encoder": ["encoder.weight"],
    }
    assert group_parameters(["encoder.weight", "encoder.bias"], None) is None


def test_a_module_that_cannot_be_vmapped_falls_back_with_the_reason():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))

        def forward(self, x, sample):
            z = sample(self.theta.expand(len(x), -1, -1))
            if z[:, 0, 0].sum() > 0:  # data-dependent Python control flow
                return z.sum((-1, -2)) * x[:, 0]
            return (z[..., 1] * 2).sum(-1) + x[:, 0]

    task = ModuleTask(Branchy(), torch.ones(4, 1, dtype=torch.float64))
    with pytest.warns(
        UserWarning, match="cannot be measured under torch.func.vmap .*data-dependent"
    ):
        draws = gradient_draws(
            task, E.get("st_gumbel_softmax"), 6, 2, torch.Generator().manual_seed(0)
        )
    assert draws.shape == (6, 6) and torch.isfinite(draws).all()


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module"):
        ModuleTask(lambda x: x, torch.zeros(2))
    with pytest.raises(ValueError, match="share their first"):
        ModuleTask(nn.Linear(2, 2), (torch.zeros(2, 2), torch.zeros(3, 2)))
    task = tiny_model_task()
    with pytest.raises(ValueError, match="batch_size must be <= 6"):
        gvbench.sweep(
            task,
            estimators=["st_gumbel_softmax"],
            batch_size=[7],
            reps=4,
            progress=False,
            tau=[1.0],
            k=[1],
        )
    with pytest.raises(ValueError, match=r"CUDA is not available|device"):
        if torch.cuda.is_available():
            raise ValueError("device")
        task.to("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_a_sweep_on_cuda_matches_the_cpu_statistically():
    task = tiny_model_task(reference_reps=2000)
    grid = dict(
        estimators=["st_gumbel_softmax", "gumbel_rao"],
        tau=[1.0],
        k=[10],
        batch_size=[2],
        reps=4000,
        progress=False,
    )
    cpu = gvbench.sweep(task, **grid)
    gpu = gvbench.sweep(task, device="cuda", **grid)
    assert gpu.attrs["device"].startswith("cuda")
    difference = abs(cpu.variance - gpu.variance)
    assert (difference < 5 * np.hypot(cpu.variance_se, gpu.variance_se)).all()


class Normalised(nn.Module):
    """BatchNorm (training mode) and dropout around a categorical choice: a forward writes
    to the module's buffers and draws from torch's global generator."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.2))
        self.decoder = nn.Linear(8, 3)

    def forward(self, x, sample):
        z = sample(self.encoder(x).view(len(x), 4, 2))
        return ((self.decoder(z.flatten(1)) - x) ** 2).sum(-1)


@pytest.mark.parametrize("batched", [True, False])
def test_the_users_module_is_never_changed(batched):
    torch.manual_seed(0)
    model = Normalised().double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    task = ModuleTask(model, x, arity=2, batched=batched, reference_reps=50)
    ds = gvbench.sweep(
        task,
        estimators=["st_gumbel_softmax", "reinforce", "rloo"],
        tau=[1.0],
        k=[2],
        batch_size=[4],
        reps=16,
        progress=False,
    )
    assert (ds.status == "done").all()
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name  # num_batches_tracked, running stats, weights
    assert model.training


def test_the_same_seed_gives_the_same_dropout_and_batch_statistics():
    torch.manual_seed(0)
    task = ModuleTask(
        Normalised().double().train(), torch.randn(6, 3, dtype=torch.float64), arity=2
    )
    grid = dict(estimators=["st_gumbel_softmax"], tau=[1.0], k=[1], batch_size=[4], reps=8)
    first = gvbench.sweep(task, progress=False, **grid)
    torch.manual_seed(123)  # the global generator's state is not the cell's business
    second = gvbench.sweep(task, progress=False, **grid)
    for name in ("variance", "bias2", "mse", "cosine"):
        np.testing.assert_array_equal(first[name].values, second[name].values, err_msg=name)


class WithDistributions(nn.Module):
    """A KL from torch.distributions: its argument checks branch on values under vmap."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))

    def forward(self, x, sample):
        logits = self.theta.expand(len(x), -1, -1)
        z = sample(logits)
        posterior = torch.distributions.Categorical(logits=logits)
        prior = torch.distributions.Categorical(logits=torch.zeros_like(logits))
        kl = torch.distributions.kl_divergence(posterior, prior).sum(-1)
        return (z * torch.arange(4.0, dtype=torch.float64)).sum((-1, -2)) + kl + x[:, 0]


def test_vmap_failure_names_the_line_the_cost_and_the_fix():
    task = ModuleTask(WithDistributions(), torch.ones(4, 1, dtype=torch.float64), batched=True)
    with pytest.warns(UserWarning) as caught:
        draws = gradient_draws(task, E.get("st_gumbel_softmax"), 6, 2, torch.Generator())
    assert draws.shape == (6, 12) and torch.isfinite(draws).all()
    message = str(caught[0].message)
    assert "cannot be measured under torch.func.vmap" in message
    assert "test_module_task.py" in message and "in forward" in message  # the user's line
    assert re.search(r"measuring one draw per pass: [0-9.e-]+ s a draw", message)
    assert re.search(r"a reference of 10000 RLOO draws: about [0-9.e-]+ min", message)
    assert "instead of torch.distributions" in message  # the known fix


def test_the_draw_mode_is_measured_once_recorded_and_kept_on_resume(tmp_path):
    task = tiny_model_task()  # batched="auto"
    grid = dict(estimators=["st_gumbel_softmax"], tau=[1.0], k=[1], batch_size=[2], reps=8)
    ds = gvbench.sweep(task, path=tmp_path / "m.nc", progress=False, **grid)
    chosen = ds.attrs["draw_mode"]
    assert chosen in ("batched", "loop") and task.draw_mode == chosen
    again = tiny_model_task()
    gvbench.sweep(again, path=tmp_path / "m.nc", progress=False, **{**grid, "tau": [0.5]})
    assert again.draw_mode == chosen  # adopted from the file, not measured anew
    other = tiny_model_task(batched=chosen != "batched")
    with pytest.raises(ValueError, match=f"drawn in {chosen} mode"):
        gvbench.sweep(other, path=tmp_path / "m.nc", progress=False, **grid)


def test_the_reference_noise_is_stored_and_sized_from_the_cells(tmp_path):
    task = tiny_model_task(reference_reps=3000)
    grid = dict(estimators=["st_gumbel_softmax", "rloo"], tau=[1.0], k=[2], batch_size=[2])
    fixed = gvbench.sweep(task, reps=40, reference_reps=500, progress=False, **grid)
    noise = fixed.reference_variance.squeeze()
    assert bool((fixed.reference_draws == 500).all()) and bool((noise > 0).all())
    np.testing.assert_allclose(fixed.group_reference_variance.sum("group").squeeze(), noise)
    small = gvbench.sweep(task, reps=40, progress=False, **grid)  # auto: few draws, coarse cells
    large = gvbench.sweep(task, reps=4000, progress=False, **grid)  # finer cells need more
    assert 0 < int(small.reference_draws.max()) < int(large.reference_draws.max()) <= 3000
    sizing = large.attrs["reference_sizing"]
    assert "reference at B=2" in sizing and "the smallest bias² a cell resolves" in sizing
    # The noise meets its target unless capped (then the description says so).
    if "capped" not in small.attrs["reference_sizing"]:
        resolved = float(small.attrs["reference_sizing"].split("× ")[1].split(",")[0])
        assert float(small.reference_variance.max()) <= 0.1 * resolved * (1 + 1e-9)


@pytest.mark.filterwarnings("ignore:module. .* cannot be measured under torch.func.vmap")
def test_a_control_variate_first_called_under_vmap_falls_back_cleanly():
    """REBAR's control variate is built at its first call: under vmap that call must fail
    cleanly (measured one draw per pass), never leave vmap's tensors in the estimator."""
    task = tiny_model_task(relaxed_inputs=True, reference_reps=50, batched=True)
    ds = gvbench.sweep(
        task,
        estimators=["rebar", "relax"],
        tau=[1.0],
        k=[1],
        batch_size=[2],
        reps=8,
        warmup=0,
        progress=False,
    )
    assert (ds.status == "done").all()
    assert any("rebar cannot be measured under torch.func.vmap" in note for note in task.notes)


class PicklesItsTaskMidForward(nn.Module):
    """Pickles the task that measures it from inside its own forward: what Dask does when
    another worker asks for a shared task while a cell draws on it."""

    task: ModuleTask | None = None
    pickled: list[bytes] = []  # noqa: RUF012 - a test's record

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x, sample):
        PicklesItsTaskMidForward.pickled.append(pickle.dumps(PicklesItsTaskMidForward.task))
        return sample(self.encoder(x).view(len(x), 2, 2)).sum((1, 2))


@pytest.mark.parametrize("batched", [True, False])
def test_a_task_pickled_while_a_draw_runs_is_the_task_as_it_was(batched):
    # functional_call swapped the draw's tensors into the user's module while it ran: pickled
    # then (by Dask, for another worker), the task failed to serialize (NotImplementedError
    # on vmap's tensors) or carried the swapped values, and the worker waiting for it hung.
    torch.manual_seed(0)
    model = PicklesItsTaskMidForward()
    task = ModuleTask(model, torch.randn(4, 3), arity=2, batched=batched)
    PicklesItsTaskMidForward.task, PicklesItsTaskMidForward.pickled = task, []
    before = {n: v.clone() for n, v in model.state_dict().items()}
    task.gradients(E.get("st_gumbel_softmax"), 4, 4, torch.Generator().manual_seed(0))
    assert PicklesItsTaskMidForward.pickled
    for data in PicklesItsTaskMidForward.pickled:
        copy = pickle.loads(data)
        for name, value in copy.module.state_dict().items():
            assert torch.equal(value, before[name]), name
