"""Metrics against draws of known law, and calibration of their standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from gvbench.harness.metrics import Reference, gradient_metrics
from tests.stats import Z

RNG = np.random.default_rng(0)
P = 4
MU = np.array([1.0, -0.5, 0.2, 0.0])
SCALE = np.array([1.0, 2.0, 0.5, 0.1])
TRACE = float((SCALE**2).sum())


def normal_draws(n, rng, mu=MU):
    return mu + SCALE * rng.standard_normal((n, P))


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_metrics_recover_the_truth(offset):
    g_star = MU + offset
    m = gradient_metrics(normal_draws(50_000, RNG), Reference(g_star))
    bias2 = P * offset**2
    assert abs(m["variance"] - TRACE) <= Z * m["variance_se"]
    assert abs(m["bias2"] - bias2) <= Z * m["bias2_se"]
    assert abs(m["mse"] - (bias2 + TRACE)) <= Z * m["mse_se"]
    assert m["variance_per_coord"] == pytest.approx(m["variance"] / P)
    cosine = MU @ g_star / np.linalg.norm(MU) / np.linalg.norm(g_star)
    assert abs(m["cosine"] - cosine) <= Z * m["cosine_se"]
    snr = np.linalg.norm(MU) / np.sqrt(TRACE / P)
    assert abs(m["snr"] - snr) <= Z * m["snr_se"]


def test_bias2_is_corrected_for_finite_samples():
    """Without the −V/N correction an unbiased estimator shows bias² ≈ V/N > 0."""
    values = [gradient_metrics(normal_draws(20, RNG), Reference(MU))["bias2"] for _ in range(4000)]
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values)) <= Z * se
    assert TRACE / 20 > 10 * se  # the uncorrected version would fail by far


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_standard_errors_are_calibrated(offset):
    """Over many repeated experiments, the SD of each metric matches its mean reported SE."""
    rng = np.random.default_rng(1)
    runs = [gradient_metrics(normal_draws(400, rng), Reference(MU + offset)) for _ in range(600)]
    for name in ("variance", "bias2", "mse", "cosine", "snr"):
        spread = np.std([r[name] for r in runs], ddof=1)
        reported = np.mean([r[f"{name}_se"] for r in runs])
        # SD of a sample SD over 600 runs is ~3%; allow 25% for the delta method's own error.
        # At zero bias the SE of bias² is conservative by design (metrics module): up to 1.6×.
        high = 1.6 if name == "bias2" and offset == 0 else 1.25
        assert 0.75 < reported / spread < high, (name, reported, spread)


def test_reference_noise_is_subtracted():
    rng = np.random.default_rng(2)
    ref_draws = normal_draws(200, rng)
    v_ref = float(((ref_draws - ref_draws.mean(0)) ** 2).sum(1).sum() / 199)
    reference = Reference(ref_draws.mean(0), variance=v_ref, count=200, kind="rloo")
    values = []
    for _ in range(2000):
        ref_draws = normal_draws(200, rng)
        reference = Reference(ref_draws.mean(0), variance=v_ref, count=200, kind="rloo")
        values.append(gradient_metrics(normal_draws(200, rng), reference)["bias2"])
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values)) <= Z * se
    assert TRACE / 200 > 10 * se  # not subtracting V_ref/N_ref would show


def test_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        gradient_metrics(np.zeros((1, 3)), Reference(np.zeros(3)))
    with pytest.raises(ValueError, match="reference has 2 coordinates"):
        gradient_metrics(np.zeros((5, 3)), Reference(np.zeros(2)))
