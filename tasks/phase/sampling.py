"""Which structures to compute next, by ATAT maps' rule: first the predicted ground states not yet
computed, then those that most reduce the fit's uncertainty per unit cost; and when to stop.

Energies are per lattice site against the vacancy fraction x of the active sublattice. Every
structure has the same sites per primitive cell, so a formation energy differs from the energy
per site by a function linear in x, which moves no point across a lower hull: raw energies per
site serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.spatial import ConvexHull

from tasks.phase.cluster_expansion import CEFit


class Reason(str, Enum):
    GROUND_STATE = "ground state"
    UNCERTAINTY = "uncertainty"


@dataclass(frozen=True)
class Pick:
    """One chosen candidate. ``score``: for a ground state, predicted energy minus the hull's at
    its composition (eV/site, negative); for uncertainty, leverage / cost at the time of the pick."""
    index: int
    reason: Reason
    score: float


@dataclass(frozen=True, eq=False)
class Candidates:
    """Structures not yet computed: cluster vectors (n, p), vacancy fractions (n,), sites (n,)."""
    cluster_vectors: np.ndarray
    vacancy_fractions: np.ndarray
    n_sites: np.ndarray

    def __post_init__(self):
        _check_rows("candidates", self.cluster_vectors, vacancy_fractions=self.vacancy_fractions,
                    n_sites=self.n_sites)
        if np.any(np.asarray(self.n_sites) <= 0):
            raise ValueError("candidates' n_sites must be positive (they are the cost)")


@dataclass(frozen=True, eq=False)
class Computed:
    """Structures with energies: cluster vectors (m, p), vacancy fractions (m,), eV per site (m,)."""
    cluster_vectors: np.ndarray
    vacancy_fractions: np.ndarray
    energies_eV_per_site: np.ndarray

    def __post_init__(self):
        _check_rows("computed", self.cluster_vectors, vacancy_fractions=self.vacancy_fractions,
                    energies_eV_per_site=self.energies_eV_per_site)
        if len(self.energies_eV_per_site) == 0:
            raise ValueError("the rule needs at least one computed structure")


def predicted_ground_states(candidates: Candidates, computed: Computed, parameters: np.ndarray,
                            tol_eV_per_site: float = 1e-4) -> list[Pick]:
    """Candidates predicted below the lower hull of the computed energies, deepest first.

    After each pick its predicted point joins the hull, so a second candidate is taken only if it
    lies below that one too: the picks are the hull vertices the fit predicts, not ten variants
    of one composition. A candidate outside the computed composition range has no hull to fall
    below and is left to the uncertainty stage (compute the end members first).
    """
    predicted = _predict(candidates, parameters)
    x = np.asarray(candidates.vacancy_fractions, dtype=np.float64)
    hull_x = list(np.asarray(computed.vacancy_fractions, dtype=np.float64))
    hull_e = list(np.asarray(computed.energies_eV_per_site, dtype=np.float64))
    picks: list[Pick] = []
    free = np.ones(len(x), dtype=bool)
    while free.any():
        above = predicted - _lower_hull_at(np.array(hull_x), np.array(hull_e), x)
        above[~free | np.isnan(above)] = np.inf
        best = int(np.argmin(above))
        if not above[best] < -tol_eV_per_site:
            break
        picks.append(Pick(best, Reason.GROUND_STATE, float(above[best])))
        free[best] = False
        hull_x.append(x[best])
        hull_e.append(predicted[best])
    return picks


def leverages(computed_cluster_vectors: np.ndarray, cluster_vectors: np.ndarray, ridge: float) -> np.ndarray:
    """x^T (X^T X + ridge·I)^{-1} x for each row x: a candidate's least-squares prediction
    variance in units of the noise variance. The ridge keeps it finite while X^T X is singular
    (fewer computed structures than parameters); directions no computed structure spans then
    score about |x|²/ridge and are filled first."""
    X = np.asarray(computed_cluster_vectors, dtype=np.float64)
    C = np.asarray(cluster_vectors, dtype=np.float64)
    gram = X.T @ X + ridge * np.eye(X.shape[1])
    return np.einsum("ij,ji->i", C, np.linalg.solve(gram, C.T))


def next_structures(candidates: Candidates, computed: Computed, parameters: np.ndarray, n_picks: int,
                    cost_power: float = 1.0, ridge: float = 1e-3,
                    tol_eV_per_site: float = 1e-4) -> list[Pick]:
    """Up to ``n_picks`` candidate indices, each with its reason and score: predicted ground
    states first (predicted_ground_states), then the largest leverage per cost, cost =
    n_sites**cost_power. Each pick joins X before the next is scored, so a batch spreads over
    directions instead of repeating the most uncertain one."""
    if n_picks < 0:
        raise ValueError(f"n_picks must be non-negative, got {n_picks}")
    if ridge <= 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    _check_parameters(candidates, parameters)
    if computed.cluster_vectors.shape[1] != candidates.cluster_vectors.shape[1]:
        raise ValueError(f"computed cluster vectors have {computed.cluster_vectors.shape[1]} entries, "
                         f"candidates {candidates.cluster_vectors.shape[1]}")
    picks = predicted_ground_states(candidates, computed, parameters, tol_eV_per_site)[:n_picks]
    C = np.asarray(candidates.cluster_vectors, dtype=np.float64)
    cost = np.asarray(candidates.n_sites, dtype=np.float64) ** cost_power
    X = np.vstack([np.asarray(computed.cluster_vectors, dtype=np.float64)] + [C[[p.index]] for p in picks])
    free = np.ones(len(C), dtype=bool)
    free[[p.index for p in picks]] = False
    while len(picks) < n_picks and free.any():
        score = leverages(X, C, ridge) / cost
        score[~free] = -np.inf
        best = int(np.argmax(score))
        picks.append(Pick(best, Reason.UNCERTAINTY, float(score[best])))
        free[best] = False
        X = np.vstack([X, C[best]])
    return picks


def sampling_converged(fit: CEFit, candidates: Candidates, computed: Computed, cv_threshold_eV_per_site: float,
                       tol_eV_per_site: float = 1e-4) -> bool:
    """maps' stopping test: the CV score is below the threshold and the fit predicts no ground
    state that has not been computed."""
    return (fit.cv_rmse_eV_per_site < cv_threshold_eV_per_site
            and not predicted_ground_states(candidates, computed, fit.parameters, tol_eV_per_site))


def _predict(candidates: Candidates, parameters: np.ndarray) -> np.ndarray:
    _check_parameters(candidates, parameters)
    return np.asarray(candidates.cluster_vectors, dtype=np.float64) @ np.asarray(parameters, dtype=np.float64)


def _check_parameters(candidates: Candidates, parameters: np.ndarray) -> None:
    if np.shape(parameters) != (candidates.cluster_vectors.shape[1],):
        raise ValueError(f"parameters of shape {np.shape(parameters)} do not match cluster vectors "
                         f"of {candidates.cluster_vectors.shape[1]} entries")


def _check_rows(name: str, cluster_vectors: np.ndarray, **columns: np.ndarray) -> None:
    if np.ndim(cluster_vectors) != 2:
        raise ValueError(f"{name}' cluster_vectors must be 2-D (structures, parameters), got shape "
                         f"{np.shape(cluster_vectors)}")
    for key, column in columns.items():
        if np.shape(column) != (len(cluster_vectors),):
            raise ValueError(f"{name}' {key} has shape {np.shape(column)}, expected ({len(cluster_vectors)},)")


def _lower_hull_at(x: np.ndarray, e: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The lower convex hull of points (x, e) evaluated at ``query``; NaN outside [min x, max x].

    A private stand-in until tasks/phase/hull.py exists. Two points far above the data close
    the hull, so collinear points or only two compositions do not leave Qhull a flat set.
    """
    xs = np.unique(x)
    lowest = np.array([e[x == v].min() for v in xs])
    if len(xs) == 1:
        return np.where(np.isclose(query, xs[0]), lowest[0], np.nan)
    lid = lowest.max() + 1.0 + (lowest.max() - lowest.min())
    points = np.column_stack([np.r_[xs, xs[0], xs[-1]], np.r_[lowest, lid, lid]])
    vertices = [v for v in ConvexHull(points).vertices if v < len(xs)]
    vertices.sort(key=lambda v: xs[v])
    out = np.interp(query, xs[vertices], lowest[vertices])
    outside = (query < xs[0] - 1e-12) | (query > xs[-1] + 1e-12)  # fractions from counts agree to rounding
    return np.where(outside, np.nan, out)
