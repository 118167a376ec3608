"""The 95% intervals the harness's standard errors give cover the exact values: over 1000
experiments with fixed seeds (deterministic), for draws of three laws, at zero and at large
bias, against an exact reference and against a sampled one (tests/coverage.py)."""

from __future__ import annotations

import pytest

from tests.coverage import LAWS, METRICS, coverage

DRAWS, SEEDS = 1000, 1000
# The binomial SD of a share over 1000 experiments is 0.7%: 93–97% is nominal ± 2.9 SD.
NOMINAL = (0.93, 0.97)


def within(share: float, band: tuple[float, float]) -> bool:
    return band[0] <= share <= band[1]


@pytest.mark.slow
@pytest.mark.parametrize("law", sorted(LAWS))
def test_intervals_are_nominal_at_large_bias(law):
    shares = coverage(LAWS[law], 2.0, DRAWS, SEEDS)
    assert all(within(shares[m], NOMINAL) for m in METRICS), shares


@pytest.mark.slow
@pytest.mark.parametrize("law", sorted(LAWS))
def test_intervals_are_at_least_nominal_at_zero_bias(law):
    # Where the bias vanishes, bias² and the cosine sit on the edge of their range and their
    # SEs are conservative by design: at least nominal, not within the band.
    shares = coverage(LAWS[law], 0.0, DRAWS, SEEDS)
    regular = ("variance", "mse", "snr")
    assert all(within(shares[m], NOMINAL) for m in regular), shares
    assert shares["bias2"] >= 0.95 and shares["cosine"] >= 0.95, shares


@pytest.mark.slow
@pytest.mark.parametrize("offset", [0.0, 2.0])
def test_a_heavy_tailed_sampled_reference_never_narrows_the_intervals(offset):
    # The reference is itself the mean of heavy-tailed draws: its noise enters bias², MSE
    # and the cosine, bounded by what its draws measured (no law assumed).
    shares = coverage(LAWS["student-t"], offset, DRAWS, 400, reference_draws=2000)
    assert all(shares[m] >= NOMINAL[0] for m in METRICS), shares
