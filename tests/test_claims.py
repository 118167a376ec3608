"""The claims' decisions: each verdict reachable, decided from the SE, and able to fail for a
wrong estimator."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import gvbench
from gvbench.listops.report import listops_claims
from gvbench.report.claims import FAILS, HOLDS, OPEN, Estimate, bonferroni, verdict
from gvbench.toy_study.claims import toy_claims
from gvbench.vae.report import vae_claims


def test_verdict_thresholds_and_bonferroni():
    assert [verdict(z) for z in (3.0, 2.9, -2.9, -3.0, np.nan)] == [HOLDS, OPEN, OPEN, FAILS, OPEN]
    assert bonferroni(1) == pytest.approx(3.0)
    assert 3.0 < bonferroni(10) < bonferroni(100)


def _seeds(values) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=float), dims="seed")


def test_a_difference_over_few_seeds_is_judged_on_t_not_on_the_normal():
    a, b = Estimate.over_seeds(_seeds([1.0, 2.0, 3.0])), Estimate.over_seeds(_seeds([0, 0.5, 1]))
    difference = a - b
    assert difference.se == pytest.approx(np.sqrt(1 / 3 + 0.25 / 3))
    assert difference.df == pytest.approx(
        (1 / 3 + 0.25 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (0.25 / 3) ** 2 / 2)
    )
    t = difference.value / difference.se
    assert 0 < difference.z() < t  # heavier tails: the same t is less evidence
    many = Estimate.over_seeds(_seeds(np.arange(2000.0))) - Estimate.over_seeds(
        _seeds(np.arange(2000.0) - 100)
    )
    assert many.z() == pytest.approx(many.value / many.se, rel=1e-2)  # large n: t ≈ z


def test_the_seed_test_has_its_nominal_level():
    """Two groups of three seeds with equal means: |z| ≥ 2 at most about 4.55% of the time
    (the normal's tail; Welch's test is a little conservative at n = 3), never the ~12% that
    t read as a normal gives."""
    rng = np.random.default_rng(7)
    trials = 20_000
    draws = rng.normal(size=(trials, 2, 3))
    hits = sum(
        abs((Estimate.over_seeds(_seeds(x)) - Estimate.over_seeds(_seeds(y))).z()) >= 2
        for x, y in draws
    )
    expected = 2 * 0.022750131948179195
    se = np.sqrt(expected * (1 - expected) / trials)
    assert expected / 2 < hits / trials < expected + 5 * se


@pytest.fixture(scope="module")
def toy_sweep():
    """A real toy sweep: where the paper's claims are plain at 4,000 draws."""
    return gvbench.sweep(
        "toy",
        estimators=["st_gumbel_softmax", "gumbel_rao", "gumbel_softmax"],
        tau=[0.01, 1.0],
        k=[1, 100],
        reps=4000,
        seed=3,
        progress=False,
    )


def test_the_toy_claims_hold_for_gumbel_rao(toy_sweep):
    claims = toy_claims(toy_sweep.sel(estimator=["st_gumbel_softmax", "gumbel_rao"]))
    assert [c.verdict for c in claims] == [HOLDS, HOLDS, HOLDS], claims


def test_the_toy_claims_fail_for_a_wrong_estimator(toy_sweep):
    # ST-GS measured again under GR-MCK's name (a Gumbel-Rao that does not Rao-Blackwellize):
    # no variance reduction anywhere, so neither growth claim can hold.
    st = toy_sweep.sel(estimator=["st_gumbel_softmax"])
    again = gvbench.sweep(
        "toy",
        estimators=["st_gumbel_softmax"],
        tau=[0.01, 1.0],
        k=[1, 100],
        reps=4000,
        seed=4,
        progress=False,
    ).assign_coords(estimator=["gumbel_rao"])
    claims = toy_claims(xr.concat([st, again], "estimator"))
    assert claims[0].verdict != HOLDS and claims[1].verdict != HOLDS, claims
    # GS under GR-MCK's name: a different bias, which the bias claim catches.
    gs = toy_sweep.sel(estimator=["gumbel_softmax"]).assign_coords(estimator=["gumbel_rao"])
    assert toy_claims(xr.concat([st, gs], "estimator"))[2].verdict == FAILS
    # Without a single standard error the bias claim is undecided, never "holds".
    blind = xr.concat([st, again], "estimator")
    blind["bias2_se"] = blind["bias2_se"] * np.nan
    assert toy_claims(blind)[2].verdict == OPEN


def _listops(st_low, st_high, gr_low, gr_high) -> xr.Dataset:
    """Test accuracy over (run, τ, L, seed) from per-seed lists."""
    values = np.array([[st_low, st_high], [gr_low, gr_high]], dtype=float)[:, :, None, :]
    return xr.Dataset(
        {"test_accuracy": (("run", "tau", "max_length", "seed"), values)},
        coords={
            "run": np.array(["ST-GS", "GR-MC10"], dtype=object),
            "tau": [0.01, 0.1],
            "max_length": [10],
            "seed": np.arange(values.shape[-1]),
        },
    )


def test_listops_claims_each_verdict():
    collapse = _listops(
        [0.30, 0.32, 0.31, 0.29],
        [0.70, 0.71, 0.69, 0.70],
        [0.68, 0.70, 0.69, 0.71],
        [0.70, 0.72, 0.71, 0.69],
    )
    assert [c.verdict for c in listops_claims(collapse)] == [HOLDS, HOLDS]
    reverse = _listops(
        [0.70, 0.71, 0.69, 0.70],
        [0.30, 0.32, 0.31, 0.29],
        [0.30, 0.32, 0.31, 0.29],
        [0.70, 0.72, 0.71, 0.69],
    )
    assert [c.verdict for c in listops_claims(reverse)] == [FAILS, FAILS]
    noisy = _listops(
        [0.2, 0.8, 0.5, 0.4], [0.3, 0.9, 0.6, 0.5], [0.3, 0.9, 0.6, 0.5], [0.2, 0.8, 0.5, 0.4]
    )
    assert [c.verdict for c in listops_claims(noisy)] == [OPEN, OPEN]
    # Seeds that agree exactly have no spread to decide with: not resolved, never a division.
    same = _listops([0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5])
    assert [c.verdict for c in listops_claims(same)] == [OPEN, OPEN]


def _vae(bounds: dict[tuple[str, int, int], list[float]]) -> xr.Dataset:
    runs, arities, batches = ["GS", "ST-GS", "GR-MC10"], [2, 8], [20, 200]
    values = np.array(
        [[[bounds[(r, a, b)] for b in batches] for a in arities] for r in runs], dtype=float
    )
    return xr.Dataset(
        {"test_iw_nll": (("run", "arity", "batch_size", "seed"), values)},
        coords={
            "run": np.array(runs, dtype=object),
            "arity": arities,
            "batch_size": batches,
            "seed": np.arange(values.shape[-1]),
        },
    )


def _bounds(st_small, st_large, gr_small, gr_large, gs, spread=0.2):
    jitter = np.array([-1.0, 0.0, 1.0]) * spread
    means = {"ST-GS": (st_small, st_large), "GR-MC10": (gr_small, gr_large), "GS": (gs, gs)}
    return {
        (r, a, b): list(means[r][i] + jitter + a * 0.01)
        for r in means
        for a in (2, 8)
        for i, b in enumerate((20, 200))
    }


def test_vae_claims_each_verdict():
    paper = _vae(
        _bounds(st_small=105, st_large=101, gr_small=100, gr_large=100.3, gs=100, spread=0.1)
    )
    assert [c.verdict for c in vae_claims(paper)] == [HOLDS, HOLDS, HOLDS]
    # GR-MCK worse than ST-GS, more so at the small batch, far worse than GS.
    against = _vae(_bounds(st_small=100, st_large=100, gr_small=105, gr_large=101, gs=95))
    assert [c.verdict for c in vae_claims(against)] == [FAILS, FAILS, FAILS]
    noisy = _vae(
        _bounds(st_small=100.2, st_large=100, gr_small=100, gr_large=100, gs=99, spread=30)
    )
    assert [c.verdict for c in vae_claims(noisy)] == [OPEN, OPEN, OPEN]


def test_variance_ratio_and_its_log_se_by_the_delta_method():
    from gvbench.harness.compare import variance_ratio

    ds = xr.Dataset(
        {
            "variance": (("estimator", "tau"), [[4.0, 9.0], [2.0, 1.0]]),
            "variance_se": (("estimator", "tau"), [[0.4, 0.9], [0.1, 0.2]]),
        },
        coords={"estimator": ["st_gumbel_softmax", "gumbel_rao"], "tau": [0.1, 1.0]},
    )
    compared = variance_ratio(ds)
    np.testing.assert_allclose(compared["ratio"], [2.0, 9.0])
    np.testing.assert_allclose(compared["log_se"], [np.hypot(0.1, 0.05), np.hypot(0.1, 0.2)])
    assert "estimator" not in compared.coords


def test_an_unresolved_claim_says_how_many_seeds_would_decide_it():
    """The seeds a z = 3 decision needs are the least n at which the measured difference and
    spread would reach it; a decided claim carries no such statement."""
    noisy = _listops(
        [0.50, 0.53, 0.49, 0.52], [0.51, 0.52, 0.50, 0.545], [0.50, 0.52, 0.51, 0.53], [0.5] * 4
    )
    claim = listops_claims(noisy)[0]
    assert claim.verdict == OPEN and "seeds per configuration" in claim.evidence
    accuracy = noisy["test_accuracy"].sel(max_length=10)
    drop = Estimate.over_seeds(accuracy.sel(run="ST-GS", tau=0.1)) - Estimate.over_seeds(
        accuracy.sel(run="ST-GS", tau=0.01)
    )
    needed = drop.seeds_to_decide()
    assert f"with {needed} seeds per configuration" in claim.evidence

    def z_at(n):
        return abs(Estimate(drop.value, tuple((v * 4 / n, n - 1.0) for v, _ in drop.parts)).z())

    assert z_at(needed) >= 3 > z_at(needed - 1)
    decided = _listops(
        [0.30, 0.32, 0.31, 0.29], [0.70, 0.71, 0.69, 0.70], [0.68, 0.70, 0.69, 0.71], [0.7] * 4
    )
    assert "seeds per configuration" not in listops_claims(decided)[0].evidence
    # No spread (seeds that agree exactly): nothing can be promised.
    same = listops_claims(_listops([0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]))[0]
    assert "no number of seeds can be stated" in same.evidence


def _claim(z, **fields):
    from gvbench.report.claims import Claim

    return Claim("t", f"claim at z = {z}", verdict(z), "evidence.", "rule", z=z, **fields)


def test_a_report_decides_its_claims_as_one_holm_family():
    from gvbench.report.claims import family

    # Alone, every claim at |z| >= 3 is decided; in a family at 0.001 the step-down decides
    # 3.5 only while the family is small enough.
    decided = family([_claim(8.0), _claim(3.5), _claim(0.5), _claim(-5.0)])
    assert [c.verdict for c in decided] == [HOLDS, HOLDS, OPEN, FAILS]
    larger = family([_claim(8.0), _claim(-5.0), _claim(3.5), _claim(3.4), _claim(0.5)])
    assert [c.verdict for c in larger] == [HOLDS, FAILS, OPEN, OPEN, OPEN]
    assert all("Holm over its 5 measured claims" in c.rule for c in larger)
    # Nothing measured: not resolved, and not counted in the family.
    assert [c.verdict for c in family([_claim(float("nan")), _claim(3.5)])] == [OPEN, HOLDS]


def test_a_claim_of_no_difference_fails_only_where_a_difference_is_resolved():
    from gvbench.report.claims import family

    same = [_claim(3.0, tests=10, same=True), _claim(5.0, tests=10, same=True)]
    assert [c.verdict for c in family(same)] == [HOLDS, FAILS]


def test_an_unresolved_claim_states_its_power_at_the_family_threshold():
    from scipy import stats

    from gvbench.report.claims import Claim, family

    difference = Estimate(0.1, ((0.0025, 3.0),))  # t = 2 on 3 df: open alone and in a family
    alone = Claim(
        "t",
        "s",
        verdict(difference.z()),
        "e." + difference.power(),
        "r",
        z=difference.z(),
        power=difference,
    )
    claim = family([alone, _claim(8.0)])[0]
    threshold = float(stats.norm.isf(0.001 / (2 * 2)))  # Bonferroni over the two claims
    assert claim.verdict == OPEN and claim.evidence.count("Not resolved") == 1
    assert f"decided (z = {threshold:g})" in claim.evidence
    assert "decided (z = 3)" not in claim.evidence
