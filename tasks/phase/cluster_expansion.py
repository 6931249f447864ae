"""Cluster expansion of the Cr/vacancy sublattice of NiAs Cr(1-x)S: the lattice, SQS cells per
composition, and fits with cross validation. icet and trainstation do the work; this module
chooses cell sizes, checks inputs and returns plain results.

Structures carry vacancies as 'X' atoms, so every structure has the parent lattice's sites and
energies are per lattice site (Cr, vacancy and S sites all count), as icet's cluster vectors are.
Remove the 'X' atoms before a DFT calculation (tasks.phase.cells.without_vacancies).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from icet import ClusterExpansion, ClusterSpace
from icet.tools.structure_generation import generate_sqs, generate_sqs_by_enumeration
from sklearn.exceptions import UndefinedMetricWarning
from trainstation import CrossValidationEstimator

from tasks.generate import nias_bulk
from tasks.phase.cells import VACANCY

Seed = int | np.random.Generator


def nias_primitive(a_A: float, c_A: float, formula: str = "CrS") -> Atoms:
    """The 4-atom NiAs (P6_3/mmc) cell: metal on 2a (0,0,0),(0,0,½), S on 2c (⅓,⅔,¼),(⅔,⅓,¾)."""
    if a_A <= 0 or c_A <= 0:
        raise ValueError(f"lattice constants must be positive, got a_A={a_A}, c_A={c_A}")
    return nias_bulk(formula, a_A, c_A, (1, 1, 1))


def cluster_space(primitive: Atoms, cutoffs_A: Sequence[float],
                  chemical_symbols: Sequence[Sequence[str]]) -> ClusterSpace:
    """icet's cluster space; ``cutoffs_A[k]`` is the cutoff of clusters of order k + 2 (pairs
    first), ``chemical_symbols[i]`` the species allowed on site i (['Cr', 'X'] or ['S'])."""
    if len(chemical_symbols) != len(primitive):
        raise ValueError(f"chemical_symbols lists {len(chemical_symbols)} sites, "
                         f"the primitive cell has {len(primitive)}")
    if len(cutoffs_A) == 0 or any(c <= 0 for c in cutoffs_A):
        raise ValueError(f"cutoffs_A must be one or more positive distances, got {list(cutoffs_A)}")
    return ClusterSpace(primitive, list(cutoffs_A), [list(s) for s in chemical_symbols])


def active_sublattice(cluster_space: ClusterSpace) -> tuple[str, str]:
    """(icet's sublattice letter, host species) of the one sublattice shared by a species and 'X'."""
    found = [sl for sl in cluster_space.get_sublattices(cluster_space.primitive_structure)
             if len(sl.chemical_symbols) > 1]
    if len(found) != 1 or len(found[0].chemical_symbols) != 2 or VACANCY not in found[0].chemical_symbols:
        raise ValueError("the cluster space must have exactly one active sublattice of a species "
                         f"and '{VACANCY}', got {[tuple(sl.chemical_symbols) for sl in found]}")
    sl = found[0]
    return sl.symbol, next(s for s in sl.chemical_symbols if s != VACANCY)


def vacancy_fractions(cluster_space: ClusterSpace, structures: Sequence[Atoms]) -> np.ndarray:
    """x of Cr(1-x)S for each structure: the share of the active sublattice that is 'X'."""
    letter, _ = active_sublattice(cluster_space)
    out = []
    for s in structures:
        sl = next(sl for sl in cluster_space.get_sublattices(s) if sl.symbol == letter)
        symbols = np.asarray(s.get_chemical_symbols())[sl.indices]
        out.append(np.mean(symbols == VACANCY))
    return np.asarray(out, dtype=np.float64)


def cluster_vectors(cluster_space: ClusterSpace, structures: Sequence[Atoms]) -> np.ndarray:
    """(n_structures, n_parameters): icet's cluster vectors, the rows of the fit matrix."""
    return np.array([cluster_space.get_cluster_vector(s) for s in structures], dtype=np.float64).reshape(
        len(structures), len(cluster_space))


def sqs_cell_size(cluster_space: ClusterSpace, vacancy_fraction: float, max_size: int, tol: float = 1e-6) -> int:
    """Smallest number of primitive cells (≤ max_size) whose active sites hold the composition
    exactly; larger cells cost more DFT, so the smallest one that fits is taken."""
    if not 0.0 <= vacancy_fraction <= 1.0:
        raise ValueError(f"vacancy fraction must lie in [0, 1], got {vacancy_fraction}")
    per_cell = _active_sites_per_cell(cluster_space)
    for size in range(1, max_size + 1):
        n_vacancies = vacancy_fraction * per_cell * size
        if abs(n_vacancies - round(n_vacancies)) < tol:
            return size
    raise ValueError(f"vacancy fraction {vacancy_fraction} is not reachable exactly within max_size="
                     f"{max_size} primitive cells ({per_cell} active sites each)")


def sqs_cells(cluster_space: ClusterSpace, vacancy_fractions: Sequence[float], max_size: int, n_steps: int,
              seed: Seed, enumerate_max_size: int = 7) -> list[Atoms]:
    """One SQS per vacancy fraction, in the smallest cell that holds it exactly (sqs_cell_size).

    Cells of up to ``enumerate_max_size`` primitive cells are found by icet's exhaustive
    enumeration (the optimum, no randomness); larger ones by icet's annealing over ``n_steps``
    trial swaps, seeded with the same integer for every composition, so a cell does not depend on
    which other compositions were asked for. Enumeration costs several times more per added
    primitive cell, while annealing of a few thousand steps already misses the optimum at 8 cells
    on this lattice: enumerate as far as the budget allows. Returned cells hold vacancies as 'X'.
    """
    sizes = [sqs_cell_size(cluster_space, x, max_size) for x in vacancy_fractions]  # all checked before any work
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    random_seed = int_seed(seed)
    letter, host = active_sublattice(cluster_space)
    per_cell = _active_sites_per_cell(cluster_space)
    cells = []
    for x, size in zip(vacancy_fractions, sizes):
        n_sites = per_cell * size
        n_vacancies = round(x * n_sites)
        if n_vacancies in (0, n_sites):  # one species: every cell is the same, the primitive one
            cells.append(_filled_primitive(cluster_space, letter, VACANCY if n_vacancies else host))
            continue
        target = {letter: {host: 1.0 - n_vacancies / n_sites, VACANCY: n_vacancies / n_sites}}
        if size <= enumerate_max_size:
            cell = generate_sqs_by_enumeration(cluster_space, size, target, include_smaller_cells=False)
        else:
            # icet's annealer reseeds Python's global `random` module from this seed.
            cell = generate_sqs(cluster_space, size, target, include_smaller_cells=False, n_steps=n_steps,
                                random_seed=random_seed)
        cells.append(cell)
    return cells


def _active_sites_per_cell(cluster_space: ClusterSpace) -> int:
    letter, _ = active_sublattice(cluster_space)
    sublattices = cluster_space.get_sublattices(cluster_space.primitive_structure)
    return len(next(sl for sl in sublattices if sl.symbol == letter).indices)


def _filled_primitive(cluster_space: ClusterSpace, letter: str, species: str) -> Atoms:
    cell = cluster_space.primitive_structure.copy()
    symbols = cell.get_chemical_symbols()
    for sl in cluster_space.get_sublattices(cell):
        for i in sl.indices:
            symbols[i] = species if sl.symbol == letter else sl.chemical_symbols[0]
    cell.set_chemical_symbols(symbols)
    return cell


def int_seed(seed: Seed) -> int:
    """icet and trainstation take integer seeds below 2³² (scikit-learn's RandomState): an int is
    taken modulo 2³² (campaign seeds are 63-bit), a Generator gives one draw."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**31 - 1))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed) % 2**32
    raise TypeError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


# ------------------------------------------------------------------- fits

class FitMethod(str, Enum):
    """trainstation's fit methods offered here (its names)."""
    ARDR = "ardr"
    LASSO = "lasso"
    LEAST_SQUARES = "least-squares"


@dataclass(frozen=True, eq=False)  # an array field makes == ambiguous
class CEFit:
    """A fitted expansion: icet's parameters (one per cluster-vector entry) and how they were got.

    ``cv_rmse_eV_per_site`` pools the squared errors of every held-out structure (trainstation's
    own ``rmse_validation`` averages per-split RMSEs, which for leave-one-out is a mean absolute
    error, not the study's CV score).
    """
    parameters: np.ndarray
    cv_rmse_eV_per_site: float
    rmse_train_eV_per_site: float
    n_structures: int
    fit_method: str
    validation_method: str
    n_splits: int
    seed: int
    standardize: bool

    def settings(self) -> dict:
        """The trainstation settings, for storing beside the parameters."""
        return {"fit_method": self.fit_method, "validation_method": self.validation_method,
                "n_splits": self.n_splits, "seed": self.seed, "standardize": self.standardize}


def fit_cluster_expansion(cluster_space: ClusterSpace, structures: Sequence[Atoms],
                          energies_eV_per_site: Sequence[float],
                          fit_method: FitMethod | str = FitMethod.LEAST_SQUARES,
                          n_splits: int | None = None, seed: Seed = 0,
                          standardize: bool = True) -> CEFit:
    """k-fold cross validation then a final fit on all structures (trainstation's
    CrossValidationEstimator). ``n_splits=None`` is leave-one-out, the study's N-fold score."""
    try:
        method = FitMethod(fit_method)
    except ValueError:
        raise ValueError(f"fit_method must be one of {[m.value for m in FitMethod]}, got {fit_method!r}") from None
    y = np.asarray(energies_eV_per_site, dtype=np.float64)
    if y.shape != (len(structures),):
        raise ValueError(f"{len(structures)} structures but energies of shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("energies_eV_per_site must all be finite")
    splits = len(structures) if n_splits is None else n_splits
    if not 2 <= splits <= len(structures):
        raise ValueError(f"n_splits must lie in [2, n_structures={len(structures)}], got {splits}")
    seed_int = int_seed(seed)
    A = cluster_vectors(cluster_space, structures)
    cve = CrossValidationEstimator((A, y), fit_method=method.value, validation_method="k-fold",
                                   n_splits=splits, seed=seed_int, standardize=standardize)
    with warnings.catch_warnings():
        # each leave-one-out split scores R² on one structure, which sklearn warns is undefined; an
        # exact fit's information criteria take log(0), and few structures make ill-conditioned
        # problems: the CV score returned says how good the fit is, these warnings say nothing more
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="trainstation")
        warnings.filterwarnings("ignore", message="Warning: Condition number is large")
        cve.validate()
        cve.train()
    held_out = cve.scatter_data_validation
    cv_rmse = float(np.sqrt(np.mean((held_out.predicted - held_out.target) ** 2)))
    parameters = np.asarray(cve.parameters, dtype=np.float64)
    return CEFit(parameters=parameters, cv_rmse_eV_per_site=cv_rmse,
                 rmse_train_eV_per_site=float(np.sqrt(np.mean((A @ parameters - y) ** 2))),
                 n_structures=len(structures), fit_method=method.value, validation_method="k-fold",
                 n_splits=splits, seed=seed_int, standardize=standardize)


def predict(cluster_space: ClusterSpace, parameters: np.ndarray, structures: Sequence[Atoms]) -> np.ndarray:
    """Energies per lattice site, eV, from icet's ClusterExpansion."""
    expansion = ClusterExpansion(cluster_space, np.asarray(parameters, dtype=np.float64))
    return np.array([expansion.predict(s) for s in structures], dtype=np.float64)
