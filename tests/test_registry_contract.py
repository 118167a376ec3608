"""Contract every registered estimator must meet; a new estimator is tested once registered."""

from __future__ import annotations

import pytest
import torch

import gvbench.estimators as E
from tests.conftest import CATEGORICAL_ESTIMATORS, CATEGORICAL_SAMPLERS, SUBSET_ESTIMATORS, cuda
from tests.draws import exact_gradient, gradient_draws, quadratic, quadratic_loss
from tests.stats import assert_within_se
from tests.subset_problems import (
    brute_force_gradient,
    subset_gradient_draws,
    subset_objective,
    subset_quadratic,
)

ALL = list(CATEGORICAL_ESTIMATORS)


def objective_for(name: str, logits: torch.Tensor):
    """A quadratic objective over the logits' categories (per-example losses)."""
    q, c = quadratic(logits.shape[-1], logits.dtype)
    f = quadratic_loss(q.to(logits.device), c.to(logits.device))
    return lambda sample: f(sample(logits)).reshape(logits.shape[:-1])


def arity(name: str) -> int:
    return 2 if E.info(name).binary_only else 5


def test_public_names_exist():
    for name in [
        "straight_through",
        "st_gumbel_softmax",
        "gumbel_softmax",
        "gumbel_rao",
        "reinmax",
        "gapped_straight_through",
        "conditional_gumbel",
        "reinforce",
        "rloo",
        "exact",
        "foust_reconstruction",
        "available",
        "get",
    ]:
        assert callable(getattr(E, name)), name


def test_properties_are_declared():
    table = E.available()
    assert table["gumbel_rao"].hyper == ("tau", "k")
    assert table["rloo"].hyper == ("k",) and table["rloo"].min_k == 2
    assert table["st_gumbel_softmax"].hyper == ("tau",)
    assert table["reinforce"].unbiased and table["reinforce"].needs_value
    assert table["gumbel_softmax"].relaxed and not table["st_gumbel_softmax"].relaxed
    assert table["foust_reconstruction"].binary_only
    assert not table["foust_reconstruction"].default and not table["exact"].default
    assert table["foust_reconstruction"].label != "FouST"
    assert table["exact"].exact
    for name, entry in table.items():
        assert entry.name == name and entry.label


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_surrogate_shape_and_gradient(name, shape):
    logits = torch.randn(*shape, arity(name), dtype=torch.float64, requires_grad=True)
    out = E.get(name)(objective_for(name, logits), generator=torch.Generator().manual_seed(0))
    assert out.shape == torch.Size(shape)
    out.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_sampler_forward_is_sample(name):
    logits = torch.randn(64, 6, dtype=torch.float64)
    y = getattr(E, name)(logits, generator=torch.Generator().manual_seed(1))
    assert y.shape == logits.shape
    if E.info(name).relaxed:
        torch.testing.assert_close(y.sum(-1), torch.ones(64, dtype=torch.float64))
        assert (y >= 0).all()
    else:
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert (y.sum(-1) == 1).all()


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_sampler_dim_argument(name):
    # A dominant category (by 50 nats) is the sample whatever the noise, so dim=1 must pick
    # it along dim 1 and the gradient must land on the logits' own layout.
    winner = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(0))
    logits = 50.0 * torch.nn.functional.one_hot(winner, 3).movedim(-1, 1).double()
    logits.requires_grad_()
    y = getattr(E, name)(logits, dim=1, generator=torch.Generator().manual_seed(3))
    assert y.shape == logits.shape
    torch.testing.assert_close(y.argmax(1), winner, rtol=0, atol=0)
    (y * torch.arange(3.0, dtype=torch.float64)[:, None]).sum().backward()
    assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_generator_reproduces_draws(name):
    def run(seed):
        logits = torch.linspace(-1, 1, 3 * arity(name), dtype=torch.float64)
        logits = logits.reshape(3, arity(name)).requires_grad_()
        gen = torch.Generator().manual_seed(seed)
        out = E.get(name)(objective_for(name, logits), generator=gen)
        out.sum().backward()
        return out.detach(), logits.grad

    a, b, c = run(5), run(5), run(6)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    if not E.info(name).exact:
        # bitflip-1 and UGC are exact for one variable per example: their gradients may agree
        # across seeds, their sampled losses do not.
        assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_finite_at_extreme_logits_and_low_temperature(name, scale):
    n = arity(name)
    logits = (torch.randn(50, n, generator=torch.Generator().manual_seed(2)) * scale).float()
    logits.requires_grad_()
    options = {"tau": 0.01} if "tau" in E.info(name).hyper else {}
    if E.info(name).exact:
        logits = logits[:4].detach().requires_grad_()
    out = E.get(name, **options)(objective_for(name, logits), generator=torch.Generator())
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_float32_and_float64_agree_in_dtype(name):
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(8, 4, dtype=dtype, requires_grad=True)
        options = {"tau": 0.5} if "tau" in E.info(name).hyper else {}
        y = getattr(E, name)(logits, **options)
        assert y.dtype == dtype
        (y * torch.arange(4, dtype=dtype)).sum().backward()
        assert logits.grad.dtype == dtype


@cuda
@pytest.mark.parametrize("name", ALL)
def test_cuda(name):
    logits = torch.randn(16, arity(name), device="cuda", requires_grad=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = E.get(name)(objective_for(name, logits), generator=gen)
    out.sum().backward()
    assert out.device.type == "cuda" and logits.grad.device.type == "cuda"
    assert torch.isfinite(logits.grad).all()


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL if "tau" in E.info(n).hyper])
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau(name, tau):
    with pytest.raises(ValueError, match="tau"):
        E.get(name, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        getattr(E, name)(torch.zeros(3, 4), tau=tau)


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_logits(name, bad):
    logits = torch.zeros(3, 4)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="logits"):
        getattr(E, name)(logits)


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_fully_masked_row_and_single_category_are_rejected(name):
    with pytest.raises(ValueError, match="logits"):
        getattr(E, name)(torch.full((2, 3), -float("inf")))
    with pytest.raises(ValueError, match="2 categories"):
        getattr(E, name)(torch.zeros(3, 1))


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
def test_masked_category_is_never_sampled(name):
    logits = torch.zeros(2000, 4)
    logits[:, 1] = -float("inf")
    logits.requires_grad_()
    y = getattr(E, name)(logits, generator=torch.Generator().manual_seed(0))
    assert (y[:, 1] == 0).all()
    (y * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_k_and_unknown_names():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        E.gumbel_rao(torch.zeros(2, 3), k=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        E.get("gumbel_rao", k=0)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        E.get("rloo", k=1)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        E.rloo(lambda s: s(torch.zeros(2, 3)).sum(-1), k=1)
    with pytest.raises(TypeError, match="k must be an integer"):
        E.get("gumbel_rao", k=2.5)
    with pytest.raises(KeyError, match=r"unknown estimator 'nope'.*available: "):
        E.get("nope")
    with pytest.raises(ValueError, match=r"takes no option.*k.*allowed: tau"):
        E.get("st_gumbel_softmax", k=10)


@pytest.mark.parametrize("name", [n for n in ALL if "k" in E.info(n).hyper])
def test_k_bounds_are_the_registrations_wherever_k_is_checked(name):
    """An estimator called directly, :func:`get` and the registration agree on K's bounds."""
    entry = E.info(name)
    logits = torch.zeros(2, arity(name), dtype=torch.float64)
    argument = logits if entry.kind == "sample" else objective_for(name, logits)
    for k, says in ((entry.min_k - 1, f">= {entry.min_k}"), (entry.max_k + 1, f"<= {entry.max_k}")):
        with pytest.raises(ValueError, match=f"k must be an integer {says}"):
            E.get(name, k=k)
        with pytest.raises(ValueError, match=f"k must be an integer {says}"):
            entry.function(argument, k=k)
    assert E.get(name, k=entry.min_k).options["k"] == entry.min_k


STATEFUL = [n for n in ALL if E.info(n).state]


@pytest.mark.parametrize("name", STATEFUL)
def test_state_options_are_estimator_states(name):
    """What ``Estimator.frozen``/``freeze``/``summary``/``state_dict`` read is the protocol."""
    estimator = E.get(name)
    states = estimator.states()
    assert states and set(states) == set(E.info(name).state())
    for state in states.values():
        assert isinstance(state, E.EstimatorState)
        assert state.adaptation in ("fixed", "from_losses", "within_call")
        frozen = state.frozen()
        assert not isinstance(frozen, E.EstimatorState) or frozen.adaptation == "fixed"
    assert set(estimator.state_dict()) == set(states)
    assert isinstance(estimator.summary(), dict)


def test_frozen_reads_a_baseline_as_a_constant_and_refuses_state_that_trains_in_a_call():
    reinforce = E.get("reinforce")
    reinforce.options["baseline"].update(torch.tensor([2.0, 4.0]))
    frozen, update = reinforce.frozen()
    assert frozen.options["baseline"] == 3.0
    update(torch.tensor([5.0]))  # after the call, as the call would have
    assert reinforce.options["baseline"]() == 0.9 * 3.0 + 0.1 * 5.0
    with pytest.raises(TypeError, match="changes during a call"):
        E.get("relax").frozen()
    still, _ = E.get("relax", control=E.ControlVariate(lr=0.0)).frozen()
    assert still.options["control"].adaptation == "fixed"
    assert E.get("relax").freeze().options["control"].adaptation == "fixed"


def test_bad_sample_shape():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="sample must be one-hot"):
        E.conditional_gumbel(logits, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="sample must be one-hot"):
        E.conditional_gumbel(logits, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"sample indices must lie in \[0, 2\]"):
        E.conditional_gumbel(logits, torch.full((4,), 3))


def test_validation_can_be_switched_off():
    E.set_validate_args(False)
    try:
        E.straight_through(torch.tensor([[0.0, float("nan")]]))
    finally:
        E.set_validate_args(True)
    with pytest.raises(ValueError):
        E.straight_through(torch.tensor([[0.0, float("nan")]]))


# --- statistics over the whole registry ---------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL if E.info(n).unbiased])
def test_unbiased_estimators_match_exact_gradient(name):
    n = arity(name)
    theta = torch.tensor([0.3, -0.8, 1.1, 0.0, -0.2][:n], dtype=torch.float64)
    q, c = quadratic(n)
    f = quadratic_loss(q, c)
    expected = exact_gradient(theta, f)
    estimator = E.get(name)
    if E.info(name).state:
        gradient_draws(estimator, theta, f, 1000, seed=99)  # warm the running baseline
    draws = gradient_draws(estimator, theta, f, 40_000, seed=7)
    assert_within_se(draws, expected)


@pytest.mark.parametrize("name", ALL)
def test_evaluations_are_the_objective_runs_made(name):
    """The registry's cost is counted, not declared: one draw runs the objective that often."""
    n = arity(name)
    logits = torch.randn(3, 2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    options = {"k": 3} if "k" in E.info(name).hyper else {}
    calls = 0
    q, c = quadratic(n)

    def objective(sample):
        nonlocal calls
        calls += 1
        return quadratic_loss(q, c)(sample(logits.requires_grad_())).sum(-1)

    estimator = E.get(name, **options)
    estimator(objective, generator=torch.Generator().manual_seed(0)).sum().backward()
    choices = E.Choices(((2, n),))  # per example: two variables of arity n
    assert calls == E.info(name).evaluations_per_draw(estimator.options, choices), name


# --- k-subset estimators: the same contract, called sample(logits, size) --------------------

SUBSET = list(SUBSET_ESTIMATORS)
SUBSET_SAMPLERS = [n for n in SUBSET if E.info(n).kind == "sample"]


def subset_objective_for(logits: torch.Tensor, size: int = 2):
    f = subset_quadratic(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return subset_objective(logits, size, f)


@pytest.mark.parametrize("name", SUBSET)
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_subset_surrogate_shape_and_gradient(name, shape):
    logits = torch.randn(*shape, 6, dtype=torch.float64, requires_grad=True)
    out = E.get(name)(subset_objective_for(logits), generator=torch.Generator().manual_seed(0))
    assert out.shape == torch.Size(shape)
    out.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", SUBSET_SAMPLERS)
@pytest.mark.parametrize("size", [1, 2, 5])
def test_subset_sampler_forward_is_k_hot(name, size):
    logits = torch.randn(64, 6, dtype=torch.float64)
    y = getattr(E, name)(logits, size, generator=torch.Generator().manual_seed(1))
    assert y.shape == logits.shape
    total = torch.full((64,), float(size), dtype=torch.float64)
    if E.info(name).relaxed:
        torch.testing.assert_close(y.sum(-1), total)
        assert (y >= 0).all()
    else:
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert (y.sum(-1) == size).all()


@pytest.mark.parametrize("name", SUBSET_SAMPLERS)
def test_subset_sampler_dim_argument(name):
    # Two items lead by 50 nats: they are the 2-subset whatever the noise, along dim=1.
    logits = torch.zeros(4, 5, 3, dtype=torch.float64)
    logits[:, 1] = logits[:, 3] = 50.0
    logits.requires_grad_()
    y = getattr(E, name)(logits, 2, dim=1, generator=torch.Generator().manual_seed(3))
    assert y.shape == logits.shape
    chosen = y.detach().topk(2, dim=1).indices.sort(1).values  # a relaxed k-hot's largest
    assert (chosen[:, 0] == 1).all() and (chosen[:, 1] == 3).all()
    torch.testing.assert_close(y.detach().sum(1), torch.full((4, 3), 2.0, dtype=torch.float64))
    (y * torch.arange(5.0, dtype=torch.float64)[:, None]).sum().backward()
    assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", SUBSET)
@pytest.mark.parametrize(
    ("size", "error"), [(0, ValueError), (-1, ValueError), (6, ValueError), (2.5, TypeError)]
)
def test_subset_size_out_of_range_is_named(name, size, error):
    logits = torch.zeros(3, 6, requires_grad=True)
    with pytest.raises(error, match=r"size \(items chosen\) must be an integer in \[1, n - 1\]"):
        E.get(name)(subset_objective_for(logits, size), generator=torch.Generator())


@pytest.mark.parametrize("name", SUBSET)
def test_subset_estimator_on_categorical_calls_is_one_line(name):
    logits = torch.zeros(3, 6, requires_grad=True)
    with pytest.raises(TypeError, match="size"):
        E.get(name)(lambda sample: sample(logits).sum(-1), generator=torch.Generator())


@pytest.mark.parametrize("name", SUBSET)
def test_subset_generator_reproduces_draws(name):
    def run(seed):
        logits = torch.linspace(-1, 1, 18, dtype=torch.float64).reshape(3, 6).requires_grad_()
        out = E.get(name)(
            subset_objective_for(logits), generator=torch.Generator().manual_seed(seed)
        )
        out.sum().backward()
        return out.detach(), logits.grad

    a, b, c = run(5), run(5), run(6)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("name", SUBSET)
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_subset_finite_at_extreme_logits_and_low_temperature(name, scale):
    logits = (torch.randn(50, 6, generator=torch.Generator().manual_seed(2)) * scale).float()
    logits.requires_grad_()
    options = {"tau": 0.01} if "tau" in E.info(name).hyper else {}
    out = E.get(name, **options)(subset_objective_for(logits, 3), generator=torch.Generator())
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(logits.grad).all()


@cuda
@pytest.mark.parametrize("name", SUBSET)
def test_subset_cuda(name):
    logits = torch.randn(16, 6, device="cuda", requires_grad=True)
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = E.get(name)(subset_objective_for(logits, 3), generator=generator)
    out.sum().backward()
    assert out.device.type == "cuda" and logits.grad.device.type == "cuda"
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", [n for n in SUBSET_SAMPLERS if "tau" in E.info(n).hyper])
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_subset_bad_tau(name, tau):
    with pytest.raises(ValueError, match="tau"):
        E.get(name, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        getattr(E, name)(torch.zeros(3, 4), 2, tau=tau)


@pytest.mark.parametrize("name", SUBSET_SAMPLERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_subset_bad_logits(name, bad):
    logits = torch.zeros(3, 4)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="logits"):
        getattr(E, name)(logits, 2)


@pytest.mark.parametrize("name", [n for n in SUBSET if "k" in E.info(n).hyper])
def test_subset_k_bounds_are_the_registrations(name):
    entry = E.info(name)
    logits = torch.zeros(2, 6, dtype=torch.float64)
    for k, says in ((entry.min_k - 1, f">= {entry.min_k}"), (entry.max_k + 1, f"<= {entry.max_k}")):
        with pytest.raises(ValueError, match=f"k must be an integer {says}"):
            E.get(name, k=k)
        with pytest.raises(ValueError, match=f"k must be an integer {says}"):
            if entry.kind == "sample":
                entry.function(logits, 2, k=k)
            else:
                entry.function(subset_objective_for(logits), k=k)


@pytest.mark.parametrize("name", SUBSET)
def test_subset_evaluations_are_the_objective_runs_made(name):
    logits = torch.randn(3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    options = {"k": 3} if "k" in E.info(name).hyper else {}
    calls = 0
    f = subset_quadratic(5)

    def objective(sample):
        nonlocal calls
        calls += 1
        return f(sample(logits.requires_grad_(), 2)).sum(-1)

    estimator = E.get(name, **options)
    estimator(objective, generator=torch.Generator().manual_seed(0)).sum().backward()
    choices = E.Choices(((2, 10),))  # per example: two 2-subsets of 5 items, C(5, 2) = 10 each
    assert calls == E.info(name).evaluations_per_draw(estimator.options, choices), name


@pytest.mark.parametrize("name", [n for n in SUBSET if E.info(n).unbiased])
def test_unbiased_subset_estimators_match_exact_gradient(name):
    theta = torch.tensor([0.3, -0.8, 1.1, 0.0, -0.2], dtype=torch.float64)
    f = subset_quadratic(5)
    expected = brute_force_gradient(theta, 2, f)
    estimator = E.get(name)
    if E.info(name).state:
        subset_gradient_draws(estimator, theta, 2, f, 1000, seed=99)  # warm the baseline
    assert_within_se(subset_gradient_draws(estimator, theta, 2, f, 40_000, seed=7), expected)
