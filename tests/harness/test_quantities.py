"""The table of quantities is the one declaration of every metric: what the reducer returns,
what a results file stores, what the CLI offers and how figures title them follow from it."""

from __future__ import annotations

import numpy as np
import pytest

from gvbench.harness import store
from gvbench.harness.metrics import METRICS, UNITS_POWER, Reference, gradient_metrics
from gvbench.harness.quantities import (
    CELL_VARIABLES,
    COSTS,
    GROUP_VARIABLES,
    QUANTITIES,
    REQUIRED_FINITE,
    at_equal_cost,
    long_name,
    quantity,
    title,
)


def test_the_reducer_returns_exactly_the_declared_metrics_of_the_draws():
    draws = np.random.default_rng(0).normal(size=(9, 4))
    returned = gradient_metrics(draws, Reference(np.zeros(4)))
    declared = {v for m in QUANTITIES.values() if m.of_draws for v in m.variables}
    assert set(returned) == declared
    assert set(UNITS_POWER) < declared and {"cosine", "snr"} & set(UNITS_POWER) == set()
    assert all(f"{name}_se" in returned for name in METRICS)


def test_every_stored_variable_is_declared_with_its_long_name_and_units():
    coords = {"estimator": ["st"], "tau": [1.0], "k": [1], "batch_size": [1], "seed": [0]}
    ds = store.build_dataset({}, {**coords, "group": ["encoder"]}, {}, {})
    cells = [n for n in ds.data_vars if ds[n].dims == store.DIMS]
    assert set(cells) - {"status", "digest"} == set(CELL_VARIABLES)
    assert {n.removeprefix("group_") for n in ds.data_vars if "group" in ds[n].dims} == set(
        GROUP_VARIABLES
    )
    assert ds["bias2_se"].attrs["long_name"] == long_name("bias2") + " (standard error)"
    assert ds["time_normalized_mse_se"].attrs["units"] == "s"
    assert ds["variance"].attrs["units"] == "1"  # the gradient is dimensionless
    assert ds["group_parameters"].attrs["long_name"].endswith(", per parameter group")
    with pytest.raises(KeyError):
        quantity("not_a_metric")


def test_units_follow_the_gradients_units_by_each_metrics_power():
    assert QUANTITIES["variance"].units("m") == "m^2"
    assert QUANTITIES["mean_norm"].units("m") == "m"
    assert QUANTITIES["cosine"].units("m") == "1"
    assert QUANTITIES["time_normalized_mse"].units("nats/s") == "(nats/s)^2 s"
    assert QUANTITIES["seconds"].units("m") == "s"


def test_metrics_at_equal_cost_are_each_declared_metric_times_each_cost():
    metrics = {"variance": 2.0, "variance_se": 0.5, "mse": 3.0, "mse_se": 0.25}
    scaled = at_equal_cost(metrics, {"evaluations": 4.0, "draw_seconds": 0.125})
    assert scaled == {
        "work_normalized_variance": 8.0,
        "work_normalized_variance_se": 2.0,
        "time_normalized_variance": 0.25,
        "time_normalized_variance_se": 0.0625,
        "work_normalized_mse": 12.0,
        "work_normalized_mse_se": 1.0,
        "time_normalized_mse": 0.375,
        "time_normalized_mse_se": 0.03125,
    }
    assert set(scaled) <= set(CELL_VARIABLES)
    assert {cost.variable for cost in COSTS} <= set(CELL_VARIABLES)


def test_a_done_cell_needs_its_errors_and_figures_title_them():
    assert REQUIRED_FINITE == ("variance", "variance_se", "bias2", "bias2_se", "mse", "mse_se")
    assert store.non_finite({"variance": 1.0, "bias2": np.nan}) == [
        "variance_se",
        "bias2",
        "bias2_se",
        "mse",
        "mse_se",
    ]
    assert [title(m) for m in ("variance", "bias2", "mse")] == ["variance (trace)", "bias²", "MSE"]
    assert title("group_variance") == "group_variance"  # undeclared: its own name
