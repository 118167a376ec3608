"""Every unbiased estimator matches the exact gradient on problems with interactions.

Several variables, drawn by two sampler calls, under an f that is neither separable nor
linear: the multi-variable, multi-call paths (copulas per variable, one variable moved at a
time, leave-one-out across runs) are exercised where a single-categorical test would not.
"""

from __future__ import annotations

import pytest
import torch

import gvbench.estimators as E
from tests.draws import interaction_draws, interaction_exact, interaction_problem
from tests.stats import assert_within_se
from tests.subset_problems import two_subsets_draws, two_subsets_exact, two_subsets_problem

UNBIASED = [
    n
    for n, e in E.available().items()
    if e.unbiased and not e.exact and e.variable == "categorical"
]
PROBLEMS = {"binary": (2, 4), "ternary": (3, 3)}
DRAWS = 20_000


CASES = [
    (name, problem)
    for problem, (arity, _) in PROBLEMS.items()
    for name in UNBIASED
    if arity == 2 or not E.info(name).binary_only
]


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_unbiased_on_interacting_variables(name, problem):
    arity, variables = PROBLEMS[problem]
    entry = E.info(name)
    theta, f = interaction_problem(arity, variables)
    options = {"k": 3} if "k" in entry.hyper else {}
    # Unbiased for any state of a control variate or baseline: frozen where it starts, so
    # that the draws are i.i.d. and the SE is that of their mean.
    estimator = E.get(name, **options).freeze()
    if name == "double_cv":
        estimator = E.get(name, weight=0.7, **options)  # a weight away from 0 (RLOO)
    if name == "rodeo":
        control = E.SteinControl(lr=0.0)
        control.alpha.fill_(0.4)
        control.beta.fill_(-0.3)
        estimator = E.get(name, control=control, **options)
    draws = interaction_draws(estimator, theta, f, DRAWS, seed=7)
    assert_within_se(draws, interaction_exact(theta, f))


SUBSET_UNBIASED = [
    n for n, e in E.available().items() if e.unbiased and not e.exact and e.variable == "subset"
]


@pytest.mark.parametrize("name", SUBSET_UNBIASED)
def test_unbiased_on_interacting_subsets(name):
    # Two k-subset calls (2 and 3 of 5 items) under an f with pairwise interactions; frozen
    # state and K = 3 as above.
    theta, f = two_subsets_problem()
    options = {"k": 3} if "k" in E.info(name).hyper else {}
    draws = two_subsets_draws(E.get(name, **options).freeze(), theta, f, DRAWS, seed=7)
    assert_within_se(draws, two_subsets_exact(theta, f))


def test_the_subset_interaction_test_fails_for_a_biased_estimator():
    theta, f = two_subsets_problem()
    draws = two_subsets_draws(E.get("st_gumbel_top_k"), theta, f, DRAWS, seed=7)
    with pytest.raises(AssertionError, match=r"5\.0 SE"):
        assert_within_se(draws, two_subsets_exact(theta, f))


def test_the_interaction_test_fails_for_a_biased_estimator():
    # ST on the same problem: the check above must be able to fail.
    theta, f = interaction_problem(3, 3)
    draws = interaction_draws(E.get("straight_through"), theta, f, DRAWS, seed=7)
    with pytest.raises(AssertionError, match=r"5\.0 SE"):
        assert_within_se(draws, interaction_exact(theta, f))


def test_a_sequential_objective_is_refused_by_name():
    theta = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)

    def sequential(sample):
        first = sample(theta[:1])
        return sample(theta[1:] + 5 * first).sum(-1).sum(-1, keepdim=True)[0]

    for name in ("indecater", "carms", "categorical_disarm"):
        with pytest.raises(ValueError, match="logits to be the same"):
            E.get(name)(sequential, generator=torch.Generator().manual_seed(0))
