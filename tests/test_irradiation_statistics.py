"""Yield intervals against scipy called directly, an independent Poisson inversion, published
table values and simulated coverage; adaptive stopping on a known distribution."""

import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from tasks.irradiation.statistics import (IntervalMethod, StopReason, bca_interval, enough_impacts, impacts_to_add,
                                          is_rare, poisson_interval, yield_interval)

Z95 = 1.959963984540054


def brentq_poisson_interval(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact interval by its definition: the total-count means λ at which observing ≤ k (upper
    bound) or ≥ k (lower bound) has probability α/2, found by root finding on the Poisson cdf."""
    alpha = 1.0 - confidence
    upper = optimize.brentq(lambda lam: stats.poisson.cdf(k, lam) - alpha / 2, 1e-12, 10.0 * k + 50.0, xtol=1e-12)
    if k == 0:
        lower = 0.0
    else:
        lower = optimize.brentq(lambda lam: stats.poisson.sf(k - 1, lam) - alpha / 2, 1e-12, upper, xtol=1e-12)
    return lower / n, upper / n


@pytest.mark.parametrize("k", [0, 1, 5, 30])
@pytest.mark.parametrize("n", [1, 100])
def test_poisson_interval_inverts_the_poisson_cdf(k, n):
    for confidence in (0.95, 0.68):
        low, high = poisson_interval(k, n, confidence)
        ref_low, ref_high = brentq_poisson_interval(k, n, confidence)
        assert low == pytest.approx(ref_low, rel=1e-8, abs=1e-14)
        assert high == pytest.approx(ref_high, rel=1e-8)


@pytest.mark.parametrize("k, low, high", [
    # two-sided 95% exact Poisson limits as tabulated (Garwood 1936; e.g. Gehrels 1986, CL 0.975 each side)
    (0, 0.0, 3.689), (1, 0.0253, 5.572), (5, 1.624, 11.668), (10, 4.795, 18.390)])
def test_poisson_interval_matches_table_values(k, low, high):
    got_low, got_high = poisson_interval(k, 1)
    assert got_low == pytest.approx(low, abs=1e-3)
    assert got_high == pytest.approx(high, abs=1e-3)
    # per impact: the total's interval divided by the number of impacts
    assert poisson_interval(k, 100)[1] == pytest.approx(high / 100, abs=1e-5)


def test_bca_equals_scipy_bootstrap_with_the_same_seed():
    counts = np.random.default_rng(3).poisson(2.0, size=60)
    got = bca_interval(counts, 0.9, 999, rng=np.random.default_rng(7))
    ref = stats.bootstrap((counts,), np.mean, n_resamples=999, confidence_level=0.9, method="BCa",
                          rng=np.random.default_rng(7)).confidence_interval
    assert got == (ref.low, ref.high)
    assert bca_interval(counts, 0.9, 999, rng=7) == got  # an integer seed is the same Generator
    assert got[0] < counts.mean() < got[1]


@pytest.mark.parametrize("counts", [[0] * 50, [3], [2, 2, 2, 2]])
def test_degenerate_samples_give_a_zero_width_interval_without_warnings(counts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = bca_interval(counts, rng=0)
    assert low == high == float(np.mean(counts))


def test_auto_takes_poisson_for_rare_events_and_bca_otherwise():
    assert is_rare([0] * 99 + [19])  # total below 20
    assert is_rare([0] * 96 + [5, 5, 5, 5])  # total 20 but only 4 impacts sputter
    assert not is_rare([0] * 95 + [4, 4, 4, 4, 4])
    zeros = yield_interval(np.zeros(100), rng=0)
    assert zeros.method is IntervalMethod.POISSON
    assert (zeros.mean, zeros.low) == (0.0, 0.0)
    assert zeros.high == pytest.approx(3.689 / 100, abs=1e-5)
    assert zeros.relative_half_width == math.inf
    many = yield_interval(np.random.default_rng(0).poisson(2.0, 100), rng=1, n_resamples=999)
    assert many.method is IntervalMethod.BCA and many.method == "bca"
    assert many.low < many.mean < many.high and many.n_impacts == 100
    forced = yield_interval([0, 1, 0, 2], rng=0, method="bca", n_resamples=999)
    assert forced.method is IntervalMethod.BCA
    with pytest.raises(ValueError):
        yield_interval([0.5, 1.5], rng=0, method="poisson")
    with pytest.raises(ValueError):
        yield_interval([], rng=0)


def _coverage(mean: float, method: str, repetitions: int, rng: np.random.Generator) -> float:
    hits = 0
    for _ in range(repetitions):
        counts = rng.poisson(mean, size=100)
        interval = yield_interval(counts, rng=rng, method=method, n_resamples=999)
        hits += interval.low <= mean <= interval.high
    return hits / repetitions


def test_coverage_on_simulated_poisson_impacts():
    rng = np.random.default_rng(2024)
    # Rare events (about 5 per 100 impacts): the exact interval is conservative, never below 95%
    # beyond sampling noise (binomial sd of a coverage over 2000 repetitions: 0.005).
    rare = _coverage(0.05, "poisson", 2000, rng)
    assert 0.94 <= rare <= 0.995
    # Common events, where the counts really are Poisson: the exact interval sits at 95%.
    assert _coverage(2.0, "poisson", 2000, rng) == pytest.approx(0.95, abs=0.015)
    # BCa on the same data (fewer repetitions: a bootstrap each; sd 0.0097 over 500).
    assert _coverage(2.0, "auto", 500, rng) == pytest.approx(0.95, abs=0.03)


def _run_adaptive(sample, target: float, cap: int, rng: np.random.Generator, fixed_batch: int | None = None):
    """The adaptive loop a recipe runs: a first batch, then check and add until done."""
    counts = sample(10)
    batches = 1
    while True:
        check = enough_impacts(counts, target, cap, rng=rng, n_resamples=999)
        add = impacts_to_add(check, target, cap)
        if check.done:
            assert add == 0
            return counts, check, batches
        assert 0 < add <= cap - len(counts)
        counts = np.concatenate([counts, sample(fixed_batch or add)])
        batches += 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_stopping_on_a_known_distribution(seed):
    mu, target = 1.5, 0.1
    theory = (Z95 * math.sqrt(mu) / (mu * target)) ** 2  # 256 impacts
    rng = np.random.default_rng(seed)
    # batches of 10: the loop stops at the first check under the target, near the theory
    counts, check, _ = _run_adaptive(lambda n: rng.poisson(mu, n), target, 5000, rng, fixed_batch=10)
    assert check.reason is StopReason.TARGET and check.relative_half_width <= target
    assert len(counts) == pytest.approx(theory, rel=0.2)
    # a check one batch earlier was still above the target
    assert not enough_impacts(counts[:-10], target, 5000, rng=rng, n_resamples=999).done
    # batches sized by impacts_to_add: a few batches, near the theory, overshooting by little
    counts, check, batches = _run_adaptive(lambda n: rng.poisson(mu, n), target, 5000, rng)
    assert check.reason is StopReason.TARGET
    assert 0.8 * theory <= len(counts) <= 1.4 * theory
    assert batches <= 6


def test_adaptive_stops_at_the_cap():
    rng = np.random.default_rng(5)
    counts, check, _ = _run_adaptive(lambda n: rng.poisson(1.5, n), 0.01, 300, rng)
    assert len(counts) == 300 and check.reason is StopReason.CAP and check.done


def test_zero_yield_runs_to_the_cap():
    rng = np.random.default_rng(6)
    counts, check, batches = _run_adaptive(lambda n: np.zeros(n, dtype=int), 0.5, 100, rng)
    assert len(counts) == 100 and check.reason is StopReason.CAP
    assert batches == 3  # 10, 40, 100: the largest growth allowed, as there is no width to extrapolate
    assert check.interval.method is IntervalMethod.POISSON and check.interval.high > 0


def test_few_equal_counts_do_not_stop_before_min_impacts():
    check = enough_impacts([2, 2, 2, 2, 2], 0.1, 100, rng=0, method="bca")
    assert check.relative_half_width == 0.0 and not check.done
    assert impacts_to_add(check, 0.1, 100, min_batch=2, min_impacts=10) == 5
