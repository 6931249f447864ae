"""Damage analysis of constructed MoS2 sheets against brute force: O(N²) minimum-image loops, a
hand-written union-find, nearest sites over many images."""

import itertools
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene, mx2

from tasks.irradiation.damage import (ORIGINS, IonFate, Origin, count_by_origin, detached, interstitials, ion_fate,
                                      nearest_sites, origin_labels, sheet_planes_A, vacancies_by_origin, wigner_seitz)

BOND_A = 2.8  # Mo-S bonds (2.41 Å) only; S-S and Mo-Mo (3.18 Å) are longer


def sheet(formula: str = "MoS2") -> Atoms:
    return mx2(formula=formula, kind="2H", a=3.18, thickness=3.19, size=(4, 4, 1), vacuum=15)


def brute_distance(a, b, cell, pbc) -> float:
    """Smallest |b − a + n·cell| over shifts n of up to three cells along periodic directions."""
    best = math.inf
    for n in itertools.product(*[range(-3, 4) if p else [0] for p in pbc]):
        shift = n[0] * cell[0] + n[1] * cell[1] + n[2] * cell[2]
        d = b - a + shift
        best = min(best, math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2))
    return best


def brute_detached(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Every pair checked, components by union-find, the largest (lowest index on ties) is the sheet."""
    n = len(atoms)
    parent = list(range(n))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a in range(n):
        for b in range(a + 1, n):
            if brute_distance(atoms.positions[a], atoms.positions[b], atoms.cell.array, atoms.pbc) < cutoff:
                parent[root(a)] = root(b)
    roots = [root(k) for k in range(n)]
    size = {r: roots.count(r) for r in roots}
    biggest = max(size.values())
    sheet_root = next(r for r in roots if size[r] == biggest)
    return np.array([r != sheet_root for r in roots])


def brute_nearest(sites, cell, pbc, atoms_positions) -> np.ndarray:
    return np.array([min(range(len(sites)), key=lambda s: brute_distance(sites[s], x, cell, pbc))
                     for x in atoms_positions])


def test_origin_labels_of_mx2_sheets_follow_the_construction():
    # mx2 builds each cell as metal, upper chalcogen, lower chalcogen
    expected = np.tile([Origin.METAL, Origin.TOP, Origin.BOTTOM], 16)
    for formula in ("MoS2", "WSe2"):
        assert np.array_equal(origin_labels(sheet(formula)), expected)
    assert ORIGINS == ("top", "metal", "bottom", "ion")
    # with an ion, of the sheet's own species, by index
    atoms = sheet()
    atoms += Atoms("S", positions=[[1.0, 1.0, 25.0]])
    labels = origin_labels(atoms, ion_index=48)
    assert labels[48] == Origin.ION and np.array_equal(labels[:48], expected)
    assert list(count_by_origin(labels)) == [16, 16, 16, 1]


def test_generic_sheets_are_split_into_layers_by_z():
    janus = sheet()
    symbols = janus.get_chemical_symbols()
    for k in range(2, 48, 3):  # the bottom S layer becomes Se: three species, layers by z
        symbols[k] = "Se"
    janus.set_chemical_symbols(symbols)
    assert np.array_equal(origin_labels(janus), origin_labels(sheet()))
    assert np.all(origin_labels(graphene(size=(3, 3, 1), vacuum=5)) == Origin.METAL)


def test_detached_matches_brute_force_on_constructed_impacts():
    atoms = sheet()
    assert not detached(atoms, BOND_A).any()
    # a top S lifted 4 Å, and an S2 dimer (a top and a bottom S) carried far below the sheet
    hit = atoms.copy()
    hit.positions[1, 2] += 4.0
    hit.positions[4] = [2.0, 2.0, 5.0]
    hit.positions[5] = [2.0, 2.0, 3.0]
    expected = np.zeros(48, dtype=bool)
    expected[[1, 4, 5]] = True
    assert np.array_equal(detached(hit, BOND_A), expected)
    assert np.array_equal(brute_detached(hit, BOND_A), expected)
    # periodic nowhere: the sheet's edge atoms lose their bonds across the boundary, not the sheet
    flake = hit.copy()
    flake.pbc = False
    assert np.array_equal(detached(flake, BOND_A), brute_detached(flake, BOND_A))
    assert detached(flake, BOND_A)[[1, 4, 5]].all()
    # an atom bonded only across a periodic boundary stays: moved by whole cells, and then just
    # outside the cell next to its neighbours' images
    moved = atoms.copy()
    moved.positions[0] += 2 * moved.cell[0] - moved.cell[1]
    moved.positions[3] -= moved.cell[0]
    assert not detached(moved, BOND_A).any()
    assert not brute_detached(moved, BOND_A).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detached_matches_brute_force_on_random_damage(seed):
    rng = np.random.default_rng(seed)
    atoms = sheet()
    atoms.positions += rng.normal(0.0, 0.15, atoms.positions.shape)
    lifted = rng.choice(48, size=6, replace=False)
    atoms.positions[lifted, 2] += rng.uniform(1.0, 6.0, size=6) * rng.choice([-1.0, 1.0], size=6)
    atoms.positions[lifted[:2], :2] += rng.uniform(-12.0, 12.0, size=(2, 2))  # some out of the cell
    got = detached(atoms, BOND_A)
    assert np.array_equal(got, brute_detached(atoms, BOND_A))
    assert 0 < got.sum() <= 6


def test_wigner_seitz_counts_vacancies_interstitials_and_boundary_crossings():
    pristine = sheet()
    sites, cell, pbc = pristine.positions, pristine.cell.array, pristine.pbc
    origins = origin_labels(pristine)
    assert np.all(wigner_seitz(sites, cell, pbc, sites) == 1)

    final = sites.copy()
    # atom 0 (Mo at the origin) nudged across the cell corner: it stays on its site
    final[0] += np.array([-0.3, -0.2, 0.1])
    # atom 45 carried by whole periodic cells (an unwrapped trajectory): still its site
    final[45] += cell[0] - 2 * cell[1]
    # a top S (atom 4) removed and a Mo (atom 6) removed: two vacancies
    keep = np.setdiff1d(np.arange(48), [4, 6])
    # an adatom: an extra S 2.0 Å above top S atom 1
    adatom = sites[1] + np.array([0.0, 0.0, 2.0])
    final = np.vstack([final[keep], adatom])
    occupancy = wigner_seitz(sites, cell, pbc, final)
    assert np.flatnonzero(occupancy == 0).tolist() == [4, 6]
    assert np.flatnonzero(occupancy > 1).tolist() == [1]
    assert interstitials(occupancy) == 1 and occupancy.sum() == len(final)
    assert list(vacancies_by_origin(occupancy, origins)) == [1, 1, 0, 0]
    assert np.array_equal(nearest_sites(sites, cell, pbc, final), brute_nearest(sites, cell, pbc, final))


@pytest.mark.parametrize("seed", [0, 1])
def test_wigner_seitz_matches_brute_force_on_random_positions(seed):
    rng = np.random.default_rng(seed)
    pristine = sheet()
    sites, cell, pbc = pristine.positions, pristine.cell.array, pristine.pbc
    # strongly displaced atoms, some outside the cell by up to a cell in-plane and far in z
    final = sites + rng.normal(0.0, 1.0, sites.shape)
    final[:10, :2] += rng.uniform(-1.0, 1.0, (10, 2)) @ cell[:2, :2]
    final[10:14, 2] += rng.uniform(-8.0, 8.0, 4)
    got = nearest_sites(sites, cell, pbc, final)
    assert np.array_equal(got, brute_nearest(sites, cell, pbc, final))
    assert np.array_equal(wigner_seitz(sites, cell, pbc, final), np.bincount(got, minlength=48))


def test_wigner_seitz_needs_a_full_rank_cell():
    with pytest.raises(ValueError, match="full rank"):
        wigner_seitz(np.zeros((1, 3)), np.diag([3.0, 3.0, 0.0]), [True, True, False], np.zeros((1, 3)))


def test_ion_fate_of_constructed_end_states():
    pristine = sheet()
    top_A, bottom_A = sheet_planes_A(pristine.positions, origin_labels(pristine))
    assert (top_A, bottom_A) == pytest.approx((18.19, 15.0))

    def fate(ion_position, without=()):
        atoms = pristine.copy()
        del atoms[list(without)]
        atoms += Atoms("S", positions=[ion_position])
        ion = len(atoms) - 1
        return ion_fate(atoms.positions[ion, 2], bool(detached(atoms, BOND_A)[ion]), top_A, bottom_A)

    assert fate([1.0, 1.0, 26.0]) is IonFate.REFLECTED
    assert fate([1.0, 1.0, 6.0]) is IonFate.TRANSMITTED
    # in the hollow of three S above (below) a Mo (atom 3), 1.4 Å beyond the face: 2.3 Å from each
    # of the three S, bonded, an adatom
    assert fate(pristine.positions[3] + [0.0, 0.0, 1.595 + 1.4]) is IonFate.ADSORBED
    assert fate(pristine.positions[3] - [0.0, 0.0, 1.595 + 1.4]) is IonFate.ADSORBED
    # in the place of a removed top S: substituted
    assert fate(pristine.positions[4] + [0.1, 0.0, 0.2], without=[4]) is IonFate.EMBEDDED
    # a free ion inside the sheet's thickness (in a pore) is classified by the middle plane
    assert ion_fate(17.0, True, top_A, bottom_A) is IonFate.REFLECTED
    assert ion_fate(16.0, True, top_A, bottom_A) is IonFate.TRANSMITTED
    assert IonFate.REFLECTED == "reflected"
