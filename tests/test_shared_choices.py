"""Choices shared by a minibatch: a supernet draws one architecture (edges × operations) for
all its examples. Every unbiased estimator, measured by the harness, against the gradient
found by enumerating the architectures here, independently of gvbench's estimators."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench.harness import reference_gradient
from gvbench.harness.draws import choices
from gvbench.tasks import ModuleTask
from gvbench.tasks.module_sampler import ModuleSampler

EDGES, WIDTH, BATCH = 3, 4, 4
F64 = torch.float64


class Supernet(nn.Module):
    """A chain of EDGES edges, each one of ``operations`` (tanh of its own linear map), the
    architecture drawn once for the minibatch; with ``gated``, each example also draws a
    binary gate of its own on the output."""

    def __init__(self, operations: int, gated: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.alpha = nn.Parameter(torch.randn(EDGES, operations, generator=generator, dtype=F64))
        self.weights = nn.Parameter(
            torch.randn(EDGES, operations, WIDTH, WIDTH, generator=generator, dtype=F64) / 2
        )
        self.readout = nn.Parameter(torch.randn(WIDTH, generator=generator, dtype=F64))
        self.gate = nn.Linear(WIDTH, 2, dtype=F64) if gated else None

    def forward(self, x, sample):
        architecture = sample(self.alpha, shared=True)  # (edges, operations), one for all
        h = x
        for edge, choice in enumerate(architecture):
            candidates = torch.tanh(torch.einsum("oij,bj->boi", self.weights[edge], h))
            h = torch.einsum("o,boi->bi", choice, candidates)
        out = h @ self.readout
        if self.gate is not None:
            out = out * (1 + sample(self.gate(x))[:, 1])  # each example's own choice
        return (out - 1) ** 2


def inputs():
    return torch.randn(6, WIDTH, generator=torch.Generator().manual_seed(1), dtype=F64)


def supernet_task(operations: int, gated: bool = False) -> ModuleTask:
    torch.manual_seed(0)
    task = ModuleTask(
        Supernet(operations, gated),
        inputs(),
        name="supernet",
        arity=operations if not gated else 2,
        relaxed_inputs=True,
        batched=True,
    )
    task.enumerable = lambda batch_size: True  # the harness's exact reference
    return task


def enumerated_gradient(module: Supernet, x: torch.Tensor) -> torch.Tensor:
    """∇ E[mean_b f_b]: every architecture weighed by its probability, and each example's
    gate by its own (examples are independent given the architecture)."""
    operations = module.alpha.shape[1]
    log_p = torch.log_softmax(module.alpha, -1)
    gates = (0, 1) if module.gate is not None else (None,)
    expectation = 0
    for architecture in itertools.product(range(operations), repeat=EDGES):
        one_hot = nn.functional.one_hot(torch.tensor(architecture), operations).to(F64)
        weight = log_p[range(EDGES), list(architecture)].sum().exp()
        for gate in gates:
            chance = []

            def fixed(logits, *, dim=-1, shared=False, gate=gate, one_hot=one_hot, chance=chance):
                if shared:
                    return one_hot
                chance.append(torch.softmax(logits, -1)[:, gate])
                return nn.functional.one_hot(torch.full((len(logits),), gate), 2).to(F64)

            losses = module(x, sample=fixed)
            per_example = losses * chance[0] if chance else losses
            expectation = expectation + weight * per_example.mean()
    grads = torch.autograd.grad(expectation, list(module.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def unbiased_estimators() -> list[str]:
    return [
        name
        for name, info in E.available().items()
        if info.unbiased and not info.exact and info.variable == "categorical"
    ]


@pytest.mark.parametrize(("operations", "gated"), [(3, False), (2, True)])
def test_the_harness_enumerates_a_shared_choice_exactly(operations, gated):
    task = supernet_task(operations, gated)
    expected = enumerated_gradient(task.module, inputs()[:BATCH])
    reference = reference_gradient(task, BATCH)
    np.testing.assert_allclose(reference.gradient, expected.numpy(), rtol=1e-10, atol=1e-13)
    # One choice of EDGES variables for the minibatch, counted as one example's would be.
    calls = ((EDGES, operations),) + (((1, 2),) if gated else ())
    assert choices(task, BATCH).calls == calls


@pytest.mark.filterwarnings("ignore:.*cannot be measured under torch.func.vmap")
@pytest.mark.parametrize(("operations", "gated"), [(3, False), (2, True)])
def test_every_unbiased_estimator_is_unbiased_for_a_shared_architecture(operations, gated):
    """Arity 3: the categorical estimators; arity 2 with a per-example gate beside the shared
    architecture: the binary-only ones too, and choices of both kinds in one forward."""
    task = supernet_task(operations, gated)
    names = [n for n in unbiased_estimators() if task.applicable(E.info(n)) is None]
    if operations == 2:
        assert {"arm", "disarm", "double_cv", "rodeo", "arms"} <= set(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = gvbench.sweep(
            task,
            estimators=names,
            tau=[1.0],
            k=[2],
            batch_size=[BATCH],
            reps=800,
            warmup=20,
            progress=False,
        )
    assert float(ds.reference_draws.max()) == 0.0  # exact: the enumeration tested above
    biased = {}
    for name in names:
        cell = ds.sel(estimator=name).squeeze()
        assert str(cell.status.values) == "done", (name, str(cell.status.values))
        bias2, se = float(cell.bias2), float(cell.bias2_se)
        assert np.isfinite(bias2) and se > 0, name
        if not abs(bias2) < 5 * se:
            biased[name] = f"bias² {bias2:.3g} ± {se:.2g}"
    assert not biased, biased


def test_pathwise_estimators_take_a_shared_choice_as_it_is():
    task = supernet_task(3)
    ds = gvbench.sweep(
        task,
        estimators=["st_gumbel_softmax", "gumbel_rao", "gumbel_softmax"],
        tau=[1.0],
        k=[2],
        batch_size=[BATCH],
        reps=50,
        progress=False,
    )
    assert (ds.status == "done").all()
    assert np.isfinite(ds.variance.values).all() and (ds.variance.values > 0).all()


def test_a_score_function_weighs_a_shared_choice_by_the_minibatch_total():
    """REINFORCE without a baseline on a shared choice of one variable: the estimate is the
    mean over examples of f_b(D) (e_D − p), exactly, draw by draw."""
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    values = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 4.0]], dtype=F64)  # f_b(category)
    drawn = []

    def objective(sample):
        d = sample(theta[None])  # one choice for both examples: a size-1 example axis
        drawn.append(d[0].argmax())
        return (values * d).sum(-1)

    surrogate = E.reinforce(objective, baseline=0.0, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(surrogate.mean(), theta)
    category = int(drawn[0])
    p = torch.softmax(theta.detach(), -1)
    score = nn.functional.one_hot(torch.tensor(category), 3).to(F64) - p
    torch.testing.assert_close(grad, values[:, category].mean() * score, rtol=1e-12, atol=0)


def test_a_per_example_call_without_its_batch_axis_names_shared():
    class Unmarked(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = nn.Parameter(torch.zeros(EDGES, 3, dtype=F64))

        def forward(self, x, sample):
            return (sample(self.alpha).sum() + x.sum(-1)) ** 2  # no shared=True

    task = ModuleTask(Unmarked(), inputs(), batched=False)
    with pytest.raises(ValueError) as caught:
        task.gradients(E.get("reinforce"), 1, BATCH, torch.Generator().manual_seed(0))
    message = str(caught.value)
    assert "\n" not in message and not getattr(caught.value, "__notes__", None)
    assert "test_shared_choices.py:" in message and "in forward" in message
    assert "(3, 3)" in message and f"({BATCH} examples)" in message and "shared=True" in message
    sampler = ModuleSampler(lambda logits, dim=-1: logits, BATCH, None, "", "supernet")
    with pytest.raises(TypeError, match="shared must be True or False"):
        sampler(torch.zeros(EDGES, 3), shared="yes")
