"""How well a potential ranks structures: Spearman's rho (the order, what decides which structures
go on the hull) and the RMSE (the energies themselves), of predicted against reference values."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

MIN_POINTS_FOR_RHO = 3  # with 2 points rho is ±1 whatever the values: it says nothing


class RankingAgreement(NamedTuple):
    """``spearman_rho``: NaN with fewer than MIN_POINTS_FOR_RHO finite pairs, or when either side is
    constant (no order to compare). ``rmse``: in the inputs' unit; NaN with no finite pair."""

    spearman_rho: float
    rmse: float


def ranking_agreement(predicted, reference) -> RankingAgreement:
    """Spearman's rho (ties take their average rank) and RMSE of ``predicted`` against ``reference``.

    Pairs where either value is NaN or infinite are left out (a structure the potential or the
    labeler failed on), so the two numbers describe the structures that both sides have.
    """
    predicted = np.asarray(predicted, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted and reference differ in length: {predicted.size} vs {reference.size}")
    both = np.isfinite(predicted) & np.isfinite(reference)
    predicted, reference = predicted[both], reference[both]
    if predicted.size == 0:
        return RankingAgreement(float("nan"), float("nan"))
    rmse = float(np.sqrt(np.mean((predicted - reference) ** 2)))
    if predicted.size < MIN_POINTS_FOR_RHO or np.ptp(predicted) == 0.0 or np.ptp(reference) == 0.0:
        return RankingAgreement(float("nan"), rmse)
    # Constant sides are caught above, where scipy would warn and give NaN anyway.
    return RankingAgreement(float(stats.spearmanr(predicted, reference).statistic), rmse)
