"""k-subset tasks through the harness: the toy with its exact reference, estimators of the
other variable kind as not-applicable cells, and a user's model that selects k items."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench.harness import reference_gradient
from gvbench.tasks import ModuleTask, SubsetToy
from gvbench.tasks.module_sampler import ChoiceShapeError
from tests.conftest import SUBSET_ESTIMATORS
from tests.subset_problems import brute_force_gradient

MINE = ["relaxed_top_k", "st_gumbel_top_k", "subset_reinforce", "subset_rloo"]


def status(ds) -> dict[str, str]:
    cells = ds.status.values.reshape(len(ds.estimator), -1)[:, 0]
    return dict(zip(ds.estimator.values, cells, strict=True))


def test_the_toys_exact_reference_is_the_sum_over_every_subset():
    task = gvbench.tasks.get("subset_toy", n=5, size=2, m=2, seed=3)
    assert task.variable == "subset" and task.outcomes == 100 and task.enumerable(1)
    reference = reference_gradient(task, batch_size=1)
    assert reference.kind == "exact"
    weights, target = task.weights, task.target
    expected = torch.stack(
        [brute_force_gradient(row, 2, lambda z: (z @ weights - target) ** 2) for row in task.theta]
    )
    np.testing.assert_allclose(reference.gradient, expected.flatten().numpy(), rtol=1e-12)


def test_a_toy_sweep_measures_bias_against_the_exact_reference():
    ds = gvbench.sweep(
        SubsetToy(), estimators=MINE, tau=[0.5], k=[2], reps=4000, warmup=20, progress=False
    )
    assert set(status(ds).values()) == {"done"}
    assert (ds.reference_draws.values == 0).all()  # exact, by enumeration
    bias2 = ds.bias2.squeeze().to_series()
    se = ds.bias2_se.squeeze().to_series()
    for name in ("subset_reinforce", "subset_rloo"):  # unbiased: bias² is noise
        assert abs(bias2[name]) < 5 * se[name], (name, bias2[name], se[name])
    for name in ("relaxed_top_k", "st_gumbel_top_k"):  # another law, and a relaxation
        assert bias2[name] > 5 * se[name], (name, bias2[name], se[name])
    assert ds.evaluations.sel(estimator="subset_rloo").max() == 2


def test_estimators_of_the_other_variable_are_not_applicable_both_ways():
    options = dict(tau=[0.5], k=[2], reps=50, warmup=2, progress=False)
    on_subsets = status(
        gvbench.sweep(SubsetToy(), estimators=["rloo", "subset_rloo", "exact"], **options)
    )
    assert on_subsets["subset_rloo"] == on_subsets["exact"] == "done"  # exact enumerates both
    assert on_subsets["rloo"] == (
        "not applicable: RLOO samples categorical variables; the subset_toy task samples "
        "k-subsets (k of n items)"
    )
    on_categories = status(gvbench.sweep("toy", estimators=["rloo", "relaxed_top_k"], **options))
    assert on_categories["rloo"] == "done"
    assert on_categories["relaxed_top_k"] == (
        "not applicable: Relaxed top-k samples k-subsets (k of n items); the toy task samples "
        "categorical variables"
    )


def test_a_default_sweep_takes_the_estimators_of_the_tasks_variable():
    spec = gvbench.harness.spec.SweepSpec(SubsetToy())
    assert set(spec.estimators) == {n for n in SUBSET_ESTIMATORS if E.info(n).default}
    assert not set(gvbench.harness.spec.SweepSpec("toy").estimators) & set(SUBSET_ESTIMATORS)


def test_too_many_subsets_take_the_subset_rloo_reference():
    task = SubsetToy(n=12, size=6, m=2)  # C(12, 6)² = 853 776 joint outcomes an example
    assert not task.enumerable(1)
    reference = reference_gradient(task, batch_size=1, reps=400)
    assert reference.kind != "exact" and reference.count == 400
    assert np.isfinite(reference.gradient).all()


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"size": 6}, ValueError, r"size \(items chosen\) must be an integer in \[1, n - 1\]"),
        ({"size": 0}, ValueError, r"\[1, 5\] for n = 6"),
        ({"n": 1}, ValueError, "n \\(items\\) must be an integer >= 2"),
        ({"weights": [1.0, 2.0]}, ValueError, "weights must have 6 values"),
        ({"target": float("nan")}, ValueError, "target must be finite"),
    ],
)
def test_the_toys_options_are_checked_at_the_door(options, error, says):
    with pytest.raises(error, match=says):
        SubsetToy(**options)


# --- a user's model that selects k items -----------------------------------------------------


class Selector(nn.Module):
    """Scores 6 items from an example's features and keeps 2; a head reads what was kept."""

    def __init__(self, call_size: bool = True) -> None:
        super().__init__()
        self.scores = nn.Linear(4, 6)
        self.head = nn.Linear(6, 1)
        self.call_size = call_size

    def forward(self, x, sample):
        logits = self.scores(x)
        kept = sample(logits, 2) if self.call_size else sample(logits)
        return self.head(kept * logits.detach()).squeeze(-1)


def selector_task(batched: bool, draws_per_pass: int | None = 3, **options) -> ModuleTask:
    torch.manual_seed(0)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    task = ModuleTask(
        Selector(**options).double(),
        x,
        loss=lambda out, x: (out - x[:, 0]) ** 2,
        variable="subset",
        relaxed_inputs=True,
        batched=batched,
        max_draws_per_pass=draws_per_pass,
    )
    task.enumerable = lambda batch_size: True  # C(6, 2) = 15 subsets an example
    return task


def sweep_selector(batched: bool, estimators=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an estimator that falls back from vmap says so
        return gvbench.sweep(
            selector_task(batched),
            estimators=estimators or [n for n in SUBSET_ESTIMATORS if not E.info(n).exact],
            tau=[0.7],
            k=[2],
            batch_size=[3],
            reps=8,
            warmup=4,
            progress=False,
        )


def test_every_subset_estimator_runs_on_a_module_the_same_either_way():
    batched, looped = sweep_selector(True), sweep_selector(False)
    assert set(status(batched).values()) == {"done"}, status(batched)
    assert (looped.status == batched.status).all()
    for name in ("variance", "bias2", "mse", "cosine"):
        np.testing.assert_allclose(
            batched[name].values, looped[name].values, rtol=1e-12, atol=1e-14, err_msg=name
        )


def test_a_subset_module_is_unbiased_where_it_should_be_and_refuses_categorical_estimators():
    task = selector_task(True, draws_per_pass=None)
    ds = gvbench.sweep(
        task,
        estimators=["subset_rloo", "st_gumbel_softmax"],
        tau=[0.5],
        k=[4],
        batch_size=[3],
        reps=3000,
        warmup=4,
        progress=False,
    )
    assert status(ds)["st_gumbel_softmax"].startswith("not applicable: ST-GS samples categorical")
    rloo = ds.sel(estimator="subset_rloo").squeeze()
    assert abs(float(rloo.bias2)) < 5 * float(rloo.bias2_se)
    assert task.config()["variable"] == "subset"


def test_a_module_and_its_task_must_agree_on_the_variable():
    x = torch.randn(3, 4, dtype=torch.float64)
    loss = lambda out, x: out**2  # noqa: E731
    categorical = ModuleTask(Selector().double(), x, loss=loss, batched=False)
    with pytest.raises(ChoiceShapeError, match=r"asks for a subset of size=2.*variable='subset'"):
        categorical.gradients(E.get("st_gumbel_softmax"), 1, 3, None)
    unsized = Selector(call_size=False).double()
    subset = ModuleTask(unsized, x, loss=loss, variable="subset", batched=False)
    with pytest.raises(ChoiceShapeError, match=r"gives no size.*call sample\(logits, size\)"):
        subset.gradients(E.get("subset_rloo"), 1, 3, None)
    with pytest.raises(ValueError, match="variable must be 'categorical' or 'subset'"):
        ModuleTask(Selector(), x, variable="k-subset")
