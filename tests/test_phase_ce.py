"""Cluster-expansion-guided sampling on NiAs Cr(1-x)S: lattice, SQS cells, fits, next-structure rule.

References share no code with the modules: hand-written Wyckoff positions and spglib, metal–metal
distances from ASE's neighbour list, the random-alloy pair correlation (point correlation
squared), energies made from known ECIs, a 1-D lower envelope by brute force over point pairs,
and leverages by Gaussian elimination written out in loops."""

import numpy as np
import pytest
import spglib
from ase.neighborlist import neighbor_list
from icet.tools import enumerate_structures

from tasks.phase.cluster_expansion import (CEFit, cluster_space, cluster_vectors, fit_cluster_expansion,
                                           nias_primitive, predict, sqs_cell_size, sqs_cells, vacancy_fractions)
from tasks.phase.sampling import (Candidates, Computed, Reason, _lower_hull_at, next_structures,
                                  predicted_ground_states, sampling_converged)
from tests.test_architecture import _modules_after_import

A_A, C_A = 3.45, 5.75
SITES = [["Cr", "X"], ["Cr", "X"], ["S"], ["S"]]


@pytest.fixture(scope="module")
def primitive():
    return nias_primitive(A_A, C_A)


@pytest.fixture(scope="module")
def pair_space(primitive):
    """Three pair orbits: few enough parameters to recover by least squares."""
    return cluster_space(primitive, [4.6], SITES)


@pytest.fixture(scope="module")
def sqs_space(primitive):
    """Pairs to 6 Å and one triplet, so SQS cells have correlations to match."""
    return cluster_space(primitive, [6.0, 4.0], SITES)


@pytest.fixture(scope="module")
def enumerated(primitive):
    """Every inequivalent Cr/X decoration of 1–4 primitive cells (336 structures)."""
    return list(enumerate_structures(primitive, range(1, 5), SITES))


def test_phase_tasks_never_import_dask_or_the_campaign():
    loaded = _modules_after_import("tasks.phase.cluster_expansion", "tasks.phase.sampling")
    assert not loaded & {"dask", "distributed", "dask_jobqueue", "campaign", "schedulers"}


# ---------------------------------------------------------------- lattice

def test_nias_primitive_has_the_wyckoff_positions_and_space_group(primitive):
    assert primitive.get_chemical_symbols() == ["Cr", "Cr", "S", "S"]
    np.testing.assert_allclose(primitive.cell.cellpar(), [A_A, A_A, C_A, 90, 90, 120], atol=1e-10)
    expected = [(0, 0, 0), (0, 0, 0.5), (1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.75)]  # 2a then 2c
    np.testing.assert_allclose(primitive.get_scaled_positions(), expected, atol=1e-10)
    cell = (primitive.cell[:], primitive.get_scaled_positions(), primitive.numbers)
    assert spglib.get_spacegroup(cell, symprec=1e-5) == "P6_3/mmc (194)"


def test_pair_orbits_are_the_metal_metal_distances_below_the_cutoff(primitive, pair_space):
    big = primitive.repeat((3, 3, 3))
    i, j, d = neighbor_list("ijd", big, 4.6)
    metal = np.asarray(big.get_chemical_symbols()) == "Cr"
    distances = np.unique(np.round(d[metal[i] & metal[j]], 6))
    radii = [o["radius"] for o in pair_space.as_list if o["order"] == 2]
    np.testing.assert_allclose(sorted(2 * np.array(radii)), distances, atol=1e-5)
    np.testing.assert_allclose(distances[:3], [C_A / 2, A_A, np.hypot(A_A, C_A / 2)], atol=1e-5)


# ---------------------------------------------------------------- SQS

def _pair_distance_from_random(space, cell):
    """Σ over pair orbits of |pair correlation − (point correlation)²|: in a random alloy the two
    sites of a pair are independent, so its correlation is the point correlation squared."""
    cv = space.get_cluster_vector(cell)
    orders = np.array([o["order"] for o in space.as_list])
    return np.abs(cv[orders == 2] - cv[1] ** 2).sum()


def test_sqs_cells_have_the_exact_composition_in_the_smallest_cell(sqs_space):
    fractions = [0.0, 0.25, 1 / 3, 0.375, 0.5, 0.3]
    cells = sqs_cells(sqs_space, fractions, max_size=5, n_steps=100, seed=0)
    np.testing.assert_allclose(vacancy_fractions(sqs_space, cells), fractions, atol=1e-12)
    # 2 metal sites per primitive cell: 2·n·x must be whole, first at n = 1, 2, 3, 4, 1, 5
    assert [len(c) // 4 for c in cells] == [1, 2, 3, 4, 1, 5]
    for c in cells:
        assert c.get_chemical_symbols().count("S") == len(c) // 2


def test_sqs_pairs_are_closer_to_random_than_random_occupations_of_the_same_cell(sqs_space):
    rng = np.random.default_rng(7)
    enumerated_cells = sqs_cells(sqs_space, [1 / 3, 0.375, 0.3], max_size=5, n_steps=100, seed=0)
    annealed = sqs_cells(sqs_space, [0.375], max_size=5, n_steps=2000, seed=3, enumerate_max_size=0)
    for cell in enumerated_cells + annealed:
        metal = [k for k, s in enumerate(cell.get_chemical_symbols()) if s in ("Cr", "X")]
        shuffled = []
        for _ in range(10):
            symbols = np.array(cell.get_chemical_symbols())
            symbols[metal] = rng.permutation(symbols[metal])
            other = cell.copy()
            other.set_chemical_symbols(list(symbols))
            shuffled.append(_pair_distance_from_random(sqs_space, other))
        sqs = _pair_distance_from_random(sqs_space, cell)
        assert sqs <= min(shuffled) + 1e-12 and sqs < np.mean(shuffled), (len(cell), sqs, shuffled)


def test_annealed_sqs_same_seed_same_cells(sqs_space):
    def run(seed):
        cells = sqs_cells(sqs_space, [0.25, 0.375], max_size=4, n_steps=300, seed=seed, enumerate_max_size=0)
        return [(c.get_chemical_symbols(), c.cell[:].round(9).tolist()) for c in cells]
    assert run(11) == run(11)
    assert run(11) != run(12)  # the seed reaches icet's annealer
    assert run(np.random.default_rng(5)) == run(np.random.default_rng(5))


# ---------------------------------------------------------------- fits

ECIS = np.array([-5.0, 0.8, 0.12, 0.05, -0.03])  # zerolet, point, pairs at 2.88, 3.45, 4.49 Å


def test_least_squares_recovers_known_ecis_with_zero_cv(pair_space, enumerated):
    energies = cluster_vectors(pair_space, enumerated) @ ECIS
    fit = fit_cluster_expansion(pair_space, enumerated, energies, "least-squares", n_splits=5, seed=0)
    np.testing.assert_allclose(fit.parameters, ECIS, atol=1e-9)
    assert fit.cv_rmse_eV_per_site < 1e-9 and fit.n_structures == len(enumerated)
    assert fit.settings() == {"fit_method": "least-squares", "validation_method": "k-fold", "n_splits": 5,
                              "seed": 0, "standardize": True}
    np.testing.assert_allclose(predict(pair_space, fit.parameters, enumerated[:20]), energies[:20], atol=1e-9)
    ardr = fit_cluster_expansion(pair_space, enumerated, energies, "ardr", n_splits=5, seed=0)
    assert ardr.cv_rmse_eV_per_site < 1e-6


def test_cv_score_is_the_noise_level(pair_space, enumerated):
    sigma = 0.01
    noise = np.random.default_rng(1).normal(0, sigma, len(enumerated))
    energies = cluster_vectors(pair_space, enumerated) @ ECIS + noise
    fit = fit_cluster_expansion(pair_space, enumerated, energies, "least-squares", n_splits=10, seed=2)
    # with p = 5 parameters and n = 336 structures the expected CV error is σ·√(1 + p/n) ≈ 1.007σ
    assert 0.85 * sigma < fit.cv_rmse_eV_per_site < 1.2 * sigma
    np.testing.assert_allclose(fit.parameters, ECIS, atol=0.5 * sigma)
    again = fit_cluster_expansion(pair_space, enumerated, energies, "least-squares", n_splits=10, seed=2)
    assert again.cv_rmse_eV_per_site == fit.cv_rmse_eV_per_site


# ---------------------------------------------------------------- next-structure rule

def _solve_by_loops(a, b):
    """Gauss–Jordan elimination with partial pivoting, written out."""
    n = len(b)
    m = [list(map(float, a[r])) + [float(b[r])] for r in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                for k in range(col, n + 1):
                    m[r][k] -= f * m[col][k]
    return [m[r][n] / m[r][r] for r in range(n)]


def _leverage_by_loops(X, x, ridge):
    p = len(x)
    gram = [[ridge * (i == j) + sum(X[k][i] * X[k][j] for k in range(len(X))) for j in range(p)] for i in range(p)]
    z = _solve_by_loops(gram, x)
    return sum(x[i] * z[i] for i in range(p))


def _energy_columns(energies, rng, n_other=3):
    """Cluster vectors whose last entry is the energy, so parameters e_last predict it exactly."""
    e = np.asarray(energies, dtype=float)
    return np.column_stack([np.ones(len(e)), rng.uniform(-1, 1, (len(e), n_other)), e])


def test_predicted_ground_state_is_picked_first_and_joins_the_hull():
    rng = np.random.default_rng(0)
    parameters = np.array([0, 0, 0, 0, 1.0])
    computed = Computed(_energy_columns([0.0, -0.1, 0.0], rng), np.array([0.0, 0.5, 1.0]), np.array([0.0, -0.1, 0.0]))
    # hull of the computed: -0.05 at x = 0.25 and at 0.75
    predicted = [0.3, -0.10, -0.20, -0.06]  # above; 0.05 below; 0.15 below; 0.01 below
    x = np.array([0.5, 0.25, 0.25, 0.75])
    candidates = Candidates(_energy_columns(predicted, rng), x, np.full(4, 8))
    picks = next_structures(candidates, computed, parameters, n_picks=4)
    assert (picks[0].index, picks[0].reason) == (2, Reason.GROUND_STATE)
    assert picks[0].score == pytest.approx(-0.15)
    # once candidate 2 (-0.20 at 0.25) is on the hull, the hull at 0.75 is -0.0667 and at 0.25 is
    # -0.20: candidates 1 and 3 were below the computed hull but are above the predicted one
    assert [p.reason for p in picks[1:]] == [Reason.UNCERTAINTY] * 3
    assert [p.index for p in predicted_ground_states(candidates, computed, parameters)] == [2]


def test_without_ground_states_picks_follow_leverage_per_cost_by_loops():
    rng = np.random.default_rng(3)
    p, ridge, cost_power = 5, 1e-3, 1.5
    X = rng.normal(size=(7, p))
    computed = Computed(X, np.linspace(0, 1, 7), np.zeros(7))
    C = rng.normal(size=(12, p))
    n_sites = rng.integers(4, 20, 12)
    candidates = Candidates(C, np.linspace(0.05, 0.95, 12), n_sites)
    # predictions all zero, the hull is zero: nothing below it
    picks = next_structures(candidates, computed, np.zeros(p), n_picks=3, cost_power=cost_power, ridge=ridge)
    assert all(pk.reason == Reason.UNCERTAINTY for pk in picks)
    rows = X.tolist()
    taken = []
    for pk in picks:
        scores = [_leverage_by_loops(rows, C[i].tolist(), ridge) / n_sites[i] ** cost_power for i in range(12)]
        expected = max((i for i in range(12) if i not in taken), key=lambda i: scores[i])
        assert pk.index == expected
        assert pk.score == pytest.approx(scores[expected], rel=1e-9)
        taken.append(pk.index)
        rows.append(C[pk.index].tolist())  # the batch's earlier picks count as computed
    assert len(set(taken)) == 3


def test_lower_hull_matches_the_brute_force_envelope():
    rng = np.random.default_rng(4)
    x = np.r_[rng.choice(np.linspace(0, 1, 9), 20), [0.0, 1.0]]
    e = rng.normal(size=len(x))
    queries = np.linspace(0, 1, 41)
    # the lower convex envelope in 1-D is the lowest chord between two points bracketing the query
    brute = [min(e[i] + (e[j] - e[i]) * ((q - x[i]) / (x[j] - x[i]) if x[j] != x[i] else 0.0)
                 for i in range(len(x)) for j in range(len(x)) if x[i] <= q <= x[j]) for q in queries]
    np.testing.assert_allclose(_lower_hull_at(x, e, queries), brute, atol=1e-12)
    collinear = _lower_hull_at(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 2.0]), np.array([0.25, 1.5]))
    np.testing.assert_allclose(collinear, [0.5, np.nan])


def test_sampling_stops_when_cv_is_low_and_no_ground_state_is_uncomputed():
    rng = np.random.default_rng(0)
    computed = Computed(_energy_columns([0.0, 0.0], rng), np.array([0.0, 1.0]), np.zeros(2))
    above = Candidates(_energy_columns([0.1], rng), np.array([0.5]), np.array([8]))
    below = Candidates(_energy_columns([-0.1], rng), np.array([0.5]), np.array([8]))

    def fit(cv):
        return CEFit(np.array([0, 0, 0, 0, 1.0]), cv, 0.0, 2, "least-squares", "k-fold", 2, 0, True)
    assert sampling_converged(fit(0.001), above, computed, cv_threshold_eV_per_site=0.005)
    assert not sampling_converged(fit(0.01), above, computed, cv_threshold_eV_per_site=0.005)
    assert not sampling_converged(fit(0.001), below, computed, cv_threshold_eV_per_site=0.005)


# ---------------------------------------------------------------- bad input

def test_bad_input_is_a_value_error_that_says_what(primitive, pair_space, enumerated):
    with pytest.raises(ValueError, match="0.3 is not reachable exactly within max_size=4"):
        sqs_cells(pair_space, [0.25, 0.3], max_size=4, n_steps=100, seed=0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        sqs_cell_size(pair_space, 1.5, max_size=4)
    with pytest.raises(ValueError, match="active sublattice"):
        sqs_cells(cluster_space(primitive, [4.6], [["Cr", "V"], ["Cr", "V"], ["S"], ["S"]]), [0.5], 2, 100, 0)
    with pytest.raises(ValueError, match="chemical_symbols lists 2 sites"):
        cluster_space(primitive, [4.6], SITES[:2])
    with pytest.raises(ValueError, match="fit_method must be one of"):
        fit_cluster_expansion(pair_space, enumerated[:10], np.zeros(10), "ridge")
    with pytest.raises(ValueError, match="10 structures but energies of shape"):
        fit_cluster_expansion(pair_space, enumerated[:10], np.zeros(9))
    with pytest.raises(ValueError, match="n_splits must lie in"):
        fit_cluster_expansion(pair_space, enumerated[:10], np.zeros(10), n_splits=11)
    computed = Computed(np.ones((2, 3)), np.array([0.0, 1.0]), np.zeros(2))
    with pytest.raises(ValueError, match="n_sites has shape"):
        Candidates(np.ones((4, 3)), np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="parameters of shape"):
        next_structures(Candidates(np.ones((4, 3)), np.zeros(4), np.ones(4)), computed, np.zeros(4), 2)
