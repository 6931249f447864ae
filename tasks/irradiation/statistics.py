"""Sputtering yields and their confidence intervals, and when an adaptive ensemble has enough impacts.

A yield is the mean of per-impact counts (atoms sputtered by one impact). Two intervals:
- BCa bootstrap of the mean (scipy.stats.bootstrap): no distributional assumption, right when
  many impacts sputter something;
- exact Poisson (Garwood) interval of the mean from the total count: right for rare events (Mo
  sputtering, where most impacts give 0), where a bootstrap of a sample of mostly zeros sees too
  little of the tail and collapses to zero width when every count is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats

# Rule of ``IntervalMethod.AUTO``: below either threshold the sample is "rare events" and the exact
# Poisson interval is used. With fewer than 5 impacts that sputter anything, the bootstrap
# distribution of the mean is a handful of lumps and the BCa interval under-covers.
RARE_TOTAL_COUNT = 20
RARE_NONZERO_IMPACTS = 5

DEFAULT_RESAMPLES = 9999  # scipy's default: BCa endpoints are tail quantiles and need many resamples


class IntervalMethod(str, Enum):
    AUTO = "auto"
    BCA = "bca"
    POISSON = "poisson"


@dataclass(frozen=True)
class YieldInterval:
    """Mean count per impact and its confidence interval; ``method`` is the one used (never AUTO)."""

    mean: float
    low: float
    high: float
    n_impacts: int
    method: IntervalMethod
    confidence: float

    @property
    def relative_half_width(self) -> float:
        """(high − low) / 2 / mean: half the interval's width over the mean (BCa intervals are not
        symmetric, so this is the average of the two sides); inf for a zero mean, which no relative
        target can meet."""
        if self.mean <= 0.0:
            return math.inf
        return (self.high - self.low) / 2.0 / self.mean


def _counts_array(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=float).ravel()
    if counts.size == 0:
        raise ValueError("no impacts: an interval needs at least one per-impact count")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("per-impact counts must be finite and non-negative")
    return counts


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def bca_interval(counts, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, *,
                 rng: np.random.Generator | int) -> tuple[float, float]:
    """BCa bootstrap interval (low, high) of the mean of ``counts`` (one value per impact).

    ``rng``: a numpy Generator (advanced by the call) or an integer seed.

    Degenerate samples (every count equal, which includes a single impact and all zeros) have no
    spread to resample: the interval is returned as (mean, mean), zero width, without calling the
    bootstrap (which would warn and give NaN). That zero width says "the sample cannot tell", not
    "certain": use ``poisson_interval`` (or ``yield_interval``'s AUTO) for samples of mostly zeros.
    """
    counts = _counts_array(counts)
    _check_confidence(confidence)
    mean = float(counts.mean())
    if np.all(counts == counts[0]):
        return mean, mean
    result = stats.bootstrap((counts,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="BCa", rng=np.random.default_rng(rng))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def poisson_interval(total_count: int, n_impacts: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval (low, high) of the mean count per impact, from the total count.

    The total over ``n_impacts`` independent impacts is taken as Poisson with mean n·μ; the bounds
    on n·μ are the chi-square quantiles χ²(α/2; 2k)/2 and χ²(1−α/2; 2k+2)/2 (low = 0 for k = 0),
    divided by n. The interval is conservative: its coverage is at least ``confidence`` for every μ.
    Over-dispersed counts (an impact sputtering many atoms at once) make it too narrow.
    """
    if int(total_count) != total_count or total_count < 0:
        raise ValueError(f"total_count must be a non-negative integer, got {total_count}")
    if int(n_impacts) != n_impacts or n_impacts < 1:
        raise ValueError(f"n_impacts must be a positive integer, got {n_impacts}")
    _check_confidence(confidence)
    k = int(total_count)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else stats.chi2.ppf(alpha / 2.0, 2 * k) / 2.0
    high = stats.chi2.ppf(1.0 - alpha / 2.0, 2 * k + 2) / 2.0
    return float(low / n_impacts), float(high / n_impacts)


def is_rare(counts) -> bool:
    """AUTO's rule: the total count is below RARE_TOTAL_COUNT, or fewer than RARE_NONZERO_IMPACTS
    impacts have a nonzero count."""
    counts = _counts_array(counts)
    return bool(counts.sum() < RARE_TOTAL_COUNT or np.count_nonzero(counts) < RARE_NONZERO_IMPACTS)


def yield_interval(counts, confidence: float = 0.95, *, rng: np.random.Generator | int,
                   method: IntervalMethod | str = IntervalMethod.AUTO,
                   n_resamples: int = DEFAULT_RESAMPLES) -> YieldInterval:
    """The yield (mean per-impact count) of ``counts`` with its interval.

    AUTO takes the Poisson interval when ``is_rare(counts)`` and BCa otherwise. ``rng`` is only
    drawn from by BCa. The Poisson method needs integer counts.
    """
    counts = _counts_array(counts)
    method = IntervalMethod(method)
    if method is IntervalMethod.AUTO:
        method = IntervalMethod.POISSON if is_rare(counts) else IntervalMethod.BCA
    if method is IntervalMethod.POISSON:
        if np.any(counts != np.round(counts)):
            raise ValueError("the Poisson interval needs integer per-impact counts")
        low, high = poisson_interval(int(round(counts.sum())), counts.size, confidence)
    else:
        low, high = bca_interval(counts, confidence, n_resamples, rng=rng)
    return YieldInterval(mean=float(counts.mean()), low=low, high=high, n_impacts=int(counts.size),
                         method=method, confidence=confidence)


class StopReason(str, Enum):
    TARGET = "target"  # the interval is narrow enough
    CAP = "cap"  # max_impacts reached
    CONTINUE = "continue"


@dataclass(frozen=True)
class EnsembleCheck:
    """Whether an adaptive ensemble of one (ion, energy) may stop, and why."""

    done: bool
    reason: StopReason
    interval: YieldInterval

    @property
    def relative_half_width(self) -> float:
        return self.interval.relative_half_width


def enough_impacts(counts, target_relative_ci: float, max_impacts: int, *, rng: np.random.Generator | int,
                   confidence: float = 0.95, min_impacts: int = 10,
                   method: IntervalMethod | str = IntervalMethod.AUTO,
                   n_resamples: int = DEFAULT_RESAMPLES) -> EnsembleCheck:
    """Stop when the interval's relative half-width ((high − low) / 2 / mean) is at most
    ``target_relative_ci`` with at least ``min_impacts`` impacts, or when ``max_impacts`` is reached.

    A zero yield has an infinite relative width: it never meets the target and runs to the cap.
    ``min_impacts`` guards against stopping on a small sample whose counts happen to be equal
    (a zero-width BCa interval).
    """
    if target_relative_ci <= 0:
        raise ValueError(f"target_relative_ci must be positive, got {target_relative_ci}")
    if max_impacts < 1:
        raise ValueError(f"max_impacts must be positive, got {max_impacts}")
    interval = yield_interval(counts, confidence, rng=rng, method=method, n_resamples=n_resamples)
    if interval.n_impacts >= max_impacts:
        return EnsembleCheck(done=True, reason=StopReason.CAP, interval=interval)
    if interval.n_impacts >= min_impacts and interval.relative_half_width <= target_relative_ci:
        return EnsembleCheck(done=True, reason=StopReason.TARGET, interval=interval)
    return EnsembleCheck(done=False, reason=StopReason.CONTINUE, interval=interval)


def impacts_to_add(check: EnsembleCheck, target_relative_ci: float, max_impacts: int, *,
                   min_batch: int = 10, min_impacts: int = 10, max_growth: float = 4.0) -> int:
    """Size of the next batch after ``check`` (from ``enough_impacts`` with the same target and cap).

    A relative width w at n impacts shrinks as 1/sqrt(n), so the target needs n·(w/target)²
    impacts; the batch adds the difference, within these bounds, applied in this order:
    - at most (max_growth − 1)·n: an estimate from few impacts is noisy, and the exact Poisson
      interval of a small count is wider than the 1/sqrt(n) scaling assumes, so one early batch
      would overshoot the target by far;
    - at least ``min_batch``, and enough to reach ``min_impacts``;
    - at most what is left below ``max_impacts``.
    A zero yield has no width to extrapolate from: the ensemble grows by the largest step allowed.
    0 when ``check.done``. The first batch (no counts yet) is the recipe's choice.
    """
    if check.done:
        return 0
    n = check.interval.n_impacts
    largest_step = math.floor((max_growth - 1.0) * n)
    width = check.relative_half_width
    if math.isinf(width):
        wanted = largest_step
    else:
        wanted = min(math.ceil(n * (width / target_relative_ci) ** 2) - n, largest_step)
    wanted = max(wanted, min_batch, min_impacts - n)
    return int(max(0, min(wanted, max_impacts - n)))
