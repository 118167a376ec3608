"""Bad input to the public estimator API: a clear error that names the argument, never a NaN,
another exception or a hang (issue: every bad input a clear error)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gvbench.estimators as E
from gvbench.estimators.gumbel_rao import MAX_CONDITIONAL_DRAWS
from tests.conftest import CATEGORICAL_ESTIMATORS, CATEGORICAL_SAMPLERS

ALL = list(CATEGORICAL_ESTIMATORS)
WITH_TAU = [n for n in ALL if "tau" in E.info(n).hyper]


def arity(name: str) -> int:
    return 2 if E.info(name).binary_only else 4


def quadratic(logits: torch.Tensor):
    weights = torch.arange(logits.shape[-1], dtype=logits.dtype)
    return lambda sample: ((sample(logits) * weights).sum(-1) ** 2).reshape(logits.shape[:-1])


@pytest.mark.parametrize("name", [n for n in WITH_TAU if not E.info(n).binary_only])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tau_below_the_dtype_is_refused_and_above_it_is_finite(name, dtype):
    logits = torch.randn(50, 4, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3
    tiny = torch.finfo(dtype).tiny
    with pytest.raises(ValueError, match=r"tau must be >= .*smallest normal"):
        getattr(E, name)(logits, tau=tiny / 10)
    for tau in (tiny, 1e-30, 1e-4, 1e4):
        leaf = logits.clone().requires_grad_()
        out = E.get(name, tau=tau)(quadratic(leaf), generator=torch.Generator().manual_seed(1))
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(leaf.grad).all(), tau


@pytest.mark.parametrize("name", CATEGORICAL_SAMPLERS)
@pytest.mark.parametrize("dim", [1.5, None, "a", True])
def test_dim_must_be_an_integer(name, dim):
    with pytest.raises(TypeError, match="dim must be an integer"):
        getattr(E, name)(torch.zeros(3, 4), dim=dim)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"tau": "0.5"}, TypeError, "tau must be a real number"),
        ({"tau": True}, TypeError, "tau must be a real number"),
        ({"k": True}, TypeError, "k must be an integer"),
        ({"k": "3"}, TypeError, "k must be an integer"),
        ({"k": float("inf")}, TypeError, "k must be an integer"),
        ({"k": 2**64}, ValueError, "k must be an integer <= "),
    ],
)
def test_loose_hyper_parameters_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        E.get("gumbel_rao", **options)
    with pytest.raises(error, match=message):
        E.gumbel_rao(torch.zeros(2, 3), **options)


@pytest.mark.parametrize("value", [1, 0, "False", None])
def test_a_flag_option_must_be_a_bool(value):
    # 0/1 or "False" would be read as truthy or falsy without a word
    with pytest.raises(TypeError, match="option shared_randomness must be True or False"):
        E.get("disarm_layerwise", shared_randomness=value)
    E.get("disarm_layerwise", shared_randomness=True)


def test_k_is_bounded_by_the_work_of_one_call():
    with pytest.raises(ValueError, match=r"k × logits.numel\(\) = .* exceeds"):
        E.gumbel_rao(torch.zeros(10_000, 10), k=MAX_CONDITIONAL_DRAWS // 50_000)
    with pytest.raises(ValueError, match="k must be an integer <= 65536"):
        E.get("rloo", k=1 << 20)


def test_objective_estimators_name_what_is_wrong():
    with pytest.raises(ValueError, match="never called the sampler"):
        E.exact(lambda sample: torch.zeros(4))
    with pytest.raises(TypeError, match="objective must be a function of a sampler"):
        E.reinforce(torch.zeros(3))
    with pytest.raises(TypeError, match="objective must return a floating tensor"):
        E.reinforce(lambda sample: 1.0)
    with pytest.raises(TypeError, match="baseline must be a real number"):
        E.reinforce(quadratic(torch.zeros(3, 2)), baseline="x")
    with pytest.raises(ValueError, match="baseline must be finite"):
        E.reinforce(quadratic(torch.zeros(3, 2)), baseline=float("nan"))
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        E.get("st_gumbel_softmax")(quadratic(torch.zeros(3, 2)), generator=3)


def test_conditional_gumbel_refuses_an_impossible_sample():
    logits = torch.tensor([[0.0, -torch.inf, 1.0]])
    with pytest.raises(ValueError, match="logit is -inf"):
        E.conditional_gumbel(logits, torch.tensor([1]))


# --- the property: any input is handled or rejected with a message naming the argument -----

REALS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-320, 1e-40, 1e-30, 1e-3, 0.1, 1.0, 10.0, 1e30]),
    st.integers(-2, 3),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)
COUNTS = st.one_of(
    st.integers(-2, 12),
    st.sampled_from([2**24 + 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=2),
)


def _bad_tau(tau: object, dtype: torch.dtype) -> bool:
    if isinstance(tau, bool) or not isinstance(tau, int | float):
        return True
    limits = torch.finfo(dtype)
    return not (math.isfinite(tau) and limits.tiny <= tau <= limits.max)


def _bad_k(k: object, name: str) -> bool:
    info = E.info(name)
    if isinstance(k, bool) or not isinstance(k, int):
        return True
    return not info.min_k <= k <= info.max_k


# Derandomised (like every test here, a fixed seed): the same 600 inputs on every run, so a
# failure reproduces; the examples below keep the cases hypothesis once found.
@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@example(
    name="straight_through",
    tau=3.4028235677973366e38,
    k="default",
    dtype=torch.float32,
    scale=0.0,
    masked=True,
    rows=1,
    seed=0,
)
@given(
    name=st.sampled_from(ALL),
    tau=st.one_of(st.just("default"), REALS),
    k=st.one_of(st.just("default"), COUNTS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.sampled_from([0.0, 1.0, 1e2, 1e4]),
    masked=st.booleans(),
    rows=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_any_input_is_handled_or_named(name, tau, k, dtype, scale, masked, rows, seed):
    info = E.info(name)
    options, bad = {}, set()
    if "tau" in info.hyper and tau != "default":
        options["tau"] = tau
        if _bad_tau(tau, dtype):
            bad.add("tau")
    if "k" in info.hyper and k != "default":
        options["k"] = k
        if _bad_k(k, name):
            bad.add("k")
    if info.exact:
        rows = min(rows, 2)
    n = arity(name)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, 3 if not info.exact else 2, n, dtype=dtype, generator=generator)
    logits = logits * scale
    if masked and n > 2:
        logits[..., 1] = -torch.inf
    if name == "unordered_set":  # k draws without replacement need k possible categories
        support = n - (masked and n > 2)
        k_value = options.get("k", info.defaults["k"])
        if not _bad_k(k_value, name) and k_value > support:
            bad.add("k")
    leaf = logits.requires_grad_()
    try:
        estimator = E.get(name, **options)
        out = estimator(quadratic(leaf), generator=generator)
        out.sum().backward()
    except (ValueError, TypeError, KeyError) as error:
        assert bad, f"valid input refused: {name} {options} {dtype}: {error}"
        assert any(argument in str(error) for argument in bad), (str(error), bad)
        return
    assert not bad, f"bad {bad} accepted: {name} {options}"
    assert torch.isfinite(out).all() and torch.isfinite(leaf.grad).all(), (name, options)
