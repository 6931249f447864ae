"""icet's enumeration cut into tasks (tasks/phase/enumeration.py, cells.py), against icet's own
single-process ``enumerate_structures`` and against a brute-force equivalence test that shares no code with icet:
point-group rotations from ASE's space-group tables, every translation tried, decorations compared
site by site."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell
from ase.neighborlist import neighbor_list  # the parent's shells only
from ase.spacegroup import Spacegroup
from icet.tools import enumerate_structures
from icet.tools.structure_enumeration_support.labeling_generation import LabelingGenerator

from tasks.generate import nias_bulk
from tasks.phase.cells import PAD, CellBuilder, EnumeratedCells, cell_atoms, without_vacancies
from tasks.phase.enumeration import (EnumerationTask, costliest_first, enumerate_batch, enumerate_cells,
                                     enumerate_task, enumeration_groups, enumeration_tasks, labeling_count,
                                     snf_labelings)

CRS = nias_bulk("CrS", supercell=(1, 1, 1))  # Cr on 2a (sites 0, 1), S on 2c (sites 2, 3)
CR_X = [["Cr", "X"], ["Cr", "X"], ["S"], ["S"]]
FCC = bulk("Au", "fcc", a=4.08)  # primitive, one site
AU_AG = ["Au", "Ag"]


def _rebuilt(primitive, symbols, cells: EnumeratedCells) -> list[Atoms]:
    return [cell_atoms(primitive, symbols, cells.hnf[i], cells.ncells[i], cells.occupation[i])
            for i in range(len(cells))]


def _assert_same_structures(mine: list[Atoms], reference: list[Atoms]) -> None:
    assert len(mine) == len(reference)
    for a, b in zip(mine, reference):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.pbc, b.pbc)


# --- the independent equivalence test -------------------------------------------------------------

def _cartesian_rotations(spacegroup: int, conventional_cell: np.ndarray) -> list[np.ndarray]:
    """The point group of a space group (ASE's tables) in Cartesian coordinates."""
    A = np.asarray(conventional_cell, dtype=float)
    rotations = []
    for W in Spacegroup(spacegroup).get_rotations():
        R = A.T @ W @ np.linalg.inv(A.T)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
        if not any(np.allclose(R, Q) for Q in rotations):
            rotations.append(R)
    return rotations


CRS_ROTATIONS = _cartesian_rotations(194, CRS.cell.array)  # the hexagonal cell is the conventional one
FCC_ROTATIONS = _cartesian_rotations(225, 4.08 * np.eye(3))


def _species_at(points: np.ndarray, atoms: Atoms, tol: float = 1e-5) -> np.ndarray:
    """The species of ``atoms`` (periodic) at each point; None where no atom sits there."""
    inverse = np.linalg.inv(atoms.cell.array)
    delta = points[:, None, :] @ inverse - (atoms.positions @ inverse)[None]
    delta -= np.round(delta)
    distance = np.linalg.norm(delta @ atoms.cell.array, axis=2)
    nearest = distance.argmin(axis=1)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    return np.where(distance[np.arange(len(points)), nearest] < tol, symbols[nearest], None)


def _equivalent(a: Atoms, b: Atoms, rotations: list[np.ndarray], parent_sites: int) -> bool:
    """Whether some rotation of the parent's point group and some translation map the decorated
    crystal ``a`` onto ``b``, checked at every parent site modulo a common period."""
    if len(a) != len(b) or sorted(a.get_chemical_symbols()) != sorted(b.get_chemical_symbols()):
        return False
    # b's period contains n times any parent lattice vector (n = parent cells in b), so a's atoms
    # shifted by a's cell vectors times 0..n-1 cover every site up to a period of both.
    n = len(b) // parent_sites
    shifts = np.array(list(itertools.product(range(n), repeat=3))) @ a.cell.array
    points = (a.positions[None] + shifts[:, None]).reshape(-1, 3)
    species = np.tile(np.array(a.get_chemical_symbols(), dtype=object), len(shifts))
    b_symbols = b.get_chemical_symbols()
    for R in rotations:
        rotated = points @ R.T
        for j in (j for j, s in enumerate(b_symbols) if s == species[0]):
            moved = rotated + (b.positions[j] - rotated[0])
            # a's own cell first: most wrong maps fail there, at a fraction of the cost
            if (np.array_equal(_species_at(moved[:len(a)], b), species[:len(a)])
                    and np.array_equal(_species_at(moved, b), species)):
                return True
    return False


def _shell_radii_A(primitive: Atoms, cutoff_A: float = 6.0) -> list[float]:
    """Radii halfway between the parent's neighbour shells, so counts within them are robust."""
    shells = np.unique(np.round(neighbor_list("d", primitive, cutoff_A), 2))
    return [(r + s) / 2 for r, s in itertools.pairwise(shells) if s - r > 0.05]


def _fingerprint(atoms: Atoms, radii_A: list[float]) -> tuple:
    """Invariant under rotations and translations: per atom, its species and how many atoms of
    each species lie within each radius (periodic images summed by hand)."""
    cell = atoms.cell.array
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = np.ceil(max(radii_A) / heights).astype(int)
    shifts = np.array(list(itertools.product(*(range(-n, n + 1) for n in reach)))) @ cell
    distance = np.linalg.norm(atoms.positions[None, :, None] + shifts[None, None]
                              - atoms.positions[:, None, None], axis=3)  # (atom, neighbour, image)
    symbols = atoms.get_chemical_symbols()
    kinds = sorted(set(symbols))
    of_kind = np.array([[s == k for k in kinds] for s in symbols], dtype=int)  # (neighbour, kind)
    counts = [np.einsum("anm,nk->ak", (distance > 1e-6) & (distance < r), of_kind) for r in radii_A]
    return tuple(sorted((symbols[a], tuple(tuple(c[a]) for c in counts)) for a in range(len(atoms))))


def _distinct_classes(structures: list[Atoms], primitive: Atoms, rotations) -> list[Atoms]:
    """One representative per equivalence class, classes found by brute force."""
    radii_A = _shell_radii_A(primitive)
    representatives = defaultdict(list)
    for atoms in structures:
        bucket = representatives[_fingerprint(atoms, radii_A)]
        if not any(_equivalent(atoms, r, rotations, len(primitive)) for r in bucket):
            bucket.append(atoms)
    return [r for bucket in representatives.values() for r in bucket]


def _all_decorations(primitive: Atoms, symbols: list[list[str]], ncells: int) -> list[Atoms]:
    """Every decoration of every supercell of ``ncells`` cells that is not periodic in a smaller
    one: all lower-triangular HNFs, all labelings, no symmetry used."""
    out = []
    prim = primitive.copy()
    prim.set_tags(np.arange(len(prim)))
    for a, c in ((a, c) for a in range(1, ncells + 1) for c in range(1, ncells + 1) if ncells % (a * c) == 0):
        f = ncells // (a * c)
        for b, d, e in itertools.product(range(c), range(f), range(f)):
            H = np.array([[a, 0, 0], [b, c, 0], [d, e, f]])
            cell = make_supercell(prim, H.T)
            for choice in itertools.product(*(symbols[t] for t in cell.get_tags())):
                atoms = cell.copy()
                atoms.set_chemical_symbols(list(choice))
                if not _has_smaller_period(atoms):
                    out.append(atoms)
    return out


def _has_smaller_period(atoms: Atoms) -> bool:
    """Whether a parent lattice vector that is not a period of the cell maps it onto itself."""
    tags, symbols = atoms.get_tags(), np.array(atoms.get_chemical_symbols(), dtype=object)
    for j in np.flatnonzero(tags == tags[0])[1:]:
        if np.array_equal(_species_at(atoms.positions + atoms.positions[j] - atoms.positions[0], atoms), symbols):
            return True
    return False


# --- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("primitive, symbols, sizes", [(CRS, CR_X, range(1, 5)), (FCC, AU_AG, range(1, 7))],
                         ids=["NiAs-Cr/X", "fcc-binary"])
def test_union_of_tasks_is_icets_enumeration_in_order(primitive, symbols, sizes):
    reference = list(enumerate_structures(primitive, sizes, symbols))
    _assert_same_structures(_rebuilt(primitive, symbols, enumerate_cells(primitive, sizes, symbols)), reference)


def test_tasks_fanned_out_in_any_order_give_icets_cells():
    """As a cluster runs them: labelings once per SNF, HNF tasks alone in reverse order or batched,
    results put back in task order; with icet's concentration ranges passed through."""
    restriction = {"X": (0.05, 0.2)}
    tasks = enumeration_tasks(CRS, range(1, 6))
    shared = {snf: snf_labelings(CRS, CR_X, snf, concentration_restrictions=restriction)
              for snf in {t.snf for t in tasks}}
    alone = {t: enumerate_task(t, CRS, CR_X, shared[t.snf]) for t in reversed(tasks[::2])}
    batched = enumerate_batch(tasks[1::2], CRS, CR_X, shared)
    rows = np.cumsum([0] + [len(enumerate_task(t, CRS, CR_X, shared[t.snf])) for t in tasks[1::2]])
    batched_parts = [EnumeratedCells(batched.elements, batched.active_sites, batched.ncells[a:b], batched.hnf[a:b],
                                     batched.occupation[a:b]) for a, b in itertools.pairwise(rows)]
    parts = [alone[t] if i % 2 == 0 else batched_parts[i // 2] for i, t in enumerate(tasks)]
    reference = list(enumerate_structures(CRS, range(1, 6), CR_X, concentration_restrictions=restriction))
    _assert_same_structures(_rebuilt(CRS, CR_X, EnumeratedCells.concatenate(parts)), reference)


def test_exact_vacancy_fractions_select_icets_cells_of_those_compositions():
    # 1/4 of the metal sites is 1/8 of all atoms (icet's concentrations count the S too).
    quarter = enumerate_cells(CRS, range(1, 7), CR_X, species_fractions={"X": [Fraction(1, 4)]})
    reference = list(enumerate_structures(CRS, range(1, 7), CR_X, concentration_restrictions={"X": (1 / 8, 1 / 8)}))
    _assert_same_structures(_rebuilt(CRS, CR_X, quarter), reference)

    # A set of fractions, with each fraction run as its own task: the same cells as icet per composition.
    both = enumerate_cells(CRS, range(1, 5), CR_X, species_fractions={"X": ["1/4", "1/2"]})
    split = EnumeratedCells.concatenate([enumerate_cells(CRS, range(1, 5), CR_X, species_fractions={"X": [f]})
                                         for f in ("1/4", "1/2")])
    quarter = list(enumerate_structures(CRS, range(1, 5), CR_X, concentration_restrictions={"X": (1 / 8, 1 / 8)}))
    half = list(enumerate_structures(CRS, range(1, 5), CR_X, concentration_restrictions={"X": (1 / 4, 1 / 4)}))

    def keys(structures):
        return Counter((tuple(s.get_chemical_symbols()), s.cell.array.round(8).tobytes(), s.positions.round(8).tobytes())
                       for s in structures)
    assert keys(_rebuilt(CRS, CR_X, both)) == keys(_rebuilt(CRS, CR_X, split)) == keys(quarter + half)
    metal_vacancy_fractions = {Fraction(s.get_chemical_symbols().count("X"), len(s) // 2)
                               for s in _rebuilt(CRS, CR_X, both)}
    assert metal_vacancy_fractions == {Fraction(1, 4), Fraction(1, 2)}


@pytest.mark.parametrize("primitive, symbols, sizes, fractions, rotations", [
    (CRS, CR_X, range(1, 5), None, CRS_ROTATIONS),
    (CRS, CR_X, [6], {"X": ["1/4"]}, CRS_ROTATIONS),
    (FCC, AU_AG, range(1, 7), None, FCC_ROTATIONS)], ids=["NiAs-Cr/X", "NiAs-Cr3X-24-sites", "fcc-binary"])
def test_no_two_enumerated_cells_are_equivalent(primitive, symbols, sizes, fractions, rotations):
    structures = _rebuilt(primitive, symbols, enumerate_cells(primitive, sizes, symbols, species_fractions=fractions))
    assert len(_distinct_classes(structures, primitive, rotations)) == len(structures)


def test_equivalence_check_finds_a_moved_copy():
    """The brute-force test can say yes: a cell rotated by a symmetry of the parent, shifted by a
    lattice vector, re-based and re-ordered is recognised, and a different cell is not."""
    structures = _rebuilt(CRS, CR_X, enumerate_cells(CRS, [4], CR_X, species_fractions={"X": ["1/4"]}))
    original = structures[3]
    R = CRS_ROTATIONS[5]
    moved = Atoms(original.get_chemical_symbols(), original.positions @ R.T + CRS.cell[0] + CRS.cell[2],
                  cell=original.cell.array @ R.T, pbc=True)
    moved = make_supercell(moved, np.eye(3, dtype=int))  # same cell, new object
    moved.set_cell(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]]) @ moved.cell.array)  # another basis, same lattice
    moved.wrap()
    moved = moved[np.random.default_rng(0).permutation(len(moved))]
    radii_A = _shell_radii_A(CRS)
    assert _fingerprint(moved, radii_A) == _fingerprint(original, radii_A)
    assert _equivalent(moved, original, CRS_ROTATIONS, len(CRS))
    assert not any(_equivalent(other, original, CRS_ROTATIONS, len(CRS)) for other in structures if other is not original)


@pytest.mark.parametrize("primitive, symbols, sizes, rotations", [
    (CRS, [["Cr", "X"], ["Cr", "X"], ["S"], ["S"]], (1, 2), CRS_ROTATIONS),
    (FCC, [AU_AG], (1, 2, 3, 4), FCC_ROTATIONS)], ids=["NiAs-Cr/X", "fcc-binary"])
def test_count_per_size_equals_brute_force_classes(primitive, symbols, sizes, rotations):
    """Nothing missing: every decoration of every supercell falls into one of the enumerated classes."""
    cells = enumerate_cells(primitive, sizes, symbols)
    for ncells in sizes:
        classes = _distinct_classes(_all_decorations(primitive, symbols, ncells), primitive, rotations)
        assert int(np.sum(cells.ncells == ncells)) == len(classes), ncells


def test_cell_atoms_round_trip_and_vacancies_dropped():
    cells = enumerate_cells(CRS, range(1, 5), CR_X)
    reference = list(enumerate_structures(CRS, range(1, 5), CR_X))
    stored = EnumeratedCells.concatenate([cells], width=24)  # padded as in a store of 48-site cells
    for i in (0, 7, len(cells) - 1):
        atoms = cell_atoms(CRS, CR_X, stored.hnf[i].tolist(), int(stored.ncells[i]), stored.occupation[i])
        _assert_same_structures([atoms], [reference[i]])
        bare = without_vacancies(atoms)
        assert "X" not in bare.get_chemical_symbols()
        assert len(bare) == len(atoms) - atoms.get_chemical_symbols().count("X")
        np.testing.assert_array_equal(bare.cell.array, atoms.cell.array)
    unreduced = cell_atoms(CRS, CR_X, cells.hnf[-1], cells.ncells[-1], cells.occupation[-1], niggli_reduce=False)
    np.testing.assert_allclose(unreduced.cell.array, cells.hnf[-1].reshape(3, 3).T.astype(float) @ CRS.cell.array)


@pytest.mark.parametrize("primitive, symbols, sizes", [(CRS, CR_X, range(1, 5)), (FCC, AU_AG, range(1, 7))],
                         ids=["NiAs-Cr/X", "fcc-binary"])
def test_the_cell_builder_gives_icets_structures(primitive, symbols, sizes):
    """The builder places atoms once per supercell and only sets species per cell: every cell must
    still be icet's structure, atom for atom."""
    cells = enumerate_cells(primitive, sizes, symbols)
    build = CellBuilder(primitive, symbols)
    _assert_same_structures([build(cells.hnf[k], cells.ncells[k], cells.sites(k)) for k in range(len(cells))],
                            list(enumerate_structures(primitive, sizes, symbols)))


def test_storage_is_a_few_bytes_per_cell():
    """48-site NiAs cells keep 24 metal occupations, 9 HNF entries and a size: 34 bytes, so the
    recipe's ~130,000 cells take under 5 MB."""
    cells = EnumeratedCells.concatenate([enumerate_cells(CRS, range(1, 5), CR_X)], width=2 * 12)
    bytes_per_cell = cells.nbytes / len(cells)
    assert bytes_per_cell == 34
    assert 130_000 * bytes_per_cell < 5e6
    assert cells.occupation.dtype == cells.hnf.dtype == cells.ncells.dtype == np.uint8
    assert (cells.occupation[cells.ncells == 1, 2:] == PAD).all()


def test_labeling_count_is_the_binomial_count():
    for ncells in (1, 3, 6, 12):
        assert labeling_count(CRS, CR_X, ncells) == 2 ** (2 * ncells)
        quarter = math.comb(2 * ncells, ncells // 2) if ncells % 2 == 0 else 0
        assert labeling_count(CRS, CR_X, ncells, species_fractions={"X": ["1/4"]}) == quarter
        both = quarter + math.comb(2 * ncells, ncells)  # 1/2 of 2n sites is always whole
        assert labeling_count(CRS, CR_X, ncells, species_fractions={"X": ["1/4", "1/2"]}) == both
    # what icet's own generator yields, given the same composition as a range of all atoms
    yielded = LabelingGenerator([(0, 1), (0, 1), (2,), (2,)], {1: (1 / 8, 1 / 8)}).yield_labelings(4)
    assert labeling_count(CRS, CR_X, 4, species_fractions={"X": ["1/4"]}) == sum(1 for _ in yielded)


def test_groups_start_costliest_first_by_icets_labeling_count():
    fractions = ("1/4", "1/2")
    groups = enumeration_groups(CRS, CR_X, range(1, 7), fractions, hnfs_per_task=2)
    ordered = costliest_first(groups, CR_X)
    assert sorted(g.index for g in ordered) == [g.index for g in groups] == list(range(len(groups)))

    def scanned(g):  # what snf_labelings scans, counted by icet's generator, times the work per labeling
        ncells = g.tasks[0].ncells
        count = labeling_count(CRS, CR_X, ncells, species_fractions={"X": [g.fraction]})
        return count * ncells * (1 + len(g.tasks) / 4)

    assert [g.index for g in ordered] == [g.index for g in sorted(groups, key=lambda g: (-scanned(g), g.index))]
    assert ordered[0].tasks[0].ncells == 6 and ordered[-1].tasks[0].ncells == 1


def test_tasks_are_plain_and_in_icets_hnf_order():
    tasks = enumeration_tasks(CRS, [1, 2, 4])
    assert [t.ncells for t in tasks] == [1] + [2] * 3 + [4] * 11
    assert all(len(t.hnf) == 9 and all(type(h) is int for h in t.hnf) for t in tasks)
    assert tasks[0] == EnumerationTask(1, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    size_4 = [t.snf for t in tasks if t.ncells == 4]
    assert size_4 == sorted(size_4, key=lambda s: s != size_4[0])  # grouped by SNF as icet loops
    assert set(size_4) == {(1, 1, 4), (1, 2, 2)}


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="3 site lists, the primitive cell has 4 sites"):
        snf_labelings(CRS, CR_X[:3], (1, 1, 2))
    with pytest.raises(ValueError, match="'Fe' is in species_fractions but on no site"):
        snf_labelings(CRS, CR_X, (1, 1, 2), species_fractions={"Fe": ["1/4"]})
    with pytest.raises(ValueError, match="'Fe' is in concentration_restrictions but on no site"):
        snf_labelings(CRS, CR_X, (1, 1, 2), concentration_restrictions={"Fe": (0, 1)})
    with pytest.raises(ValueError, match="give fractions exactly"):
        snf_labelings(CRS, CR_X, (1, 1, 2), species_fractions={"X": [0.25]})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        snf_labelings(CRS, CR_X, (1, 1, 2), species_fractions={"X": ["3/2"]})
    with pytest.raises(ValueError, match="lists a species twice"):
        snf_labelings(CRS, [["Cr", "Cr"], ["Cr", "X"], ["S"], ["S"]], (1, 1, 2))
    with pytest.raises(ValueError, match="not a Smith normal form"):
        snf_labelings(CRS, CR_X, (2, 3, 1))
    with pytest.raises(ValueError, match="not a Hermite normal form of determinant 2"):
        _ = EnumerationTask(2, (1, 0, 0, 0, 1, 0, 0, 0, 3)).snf
    task = enumeration_tasks(CRS, [4])[0]
    with pytest.raises(ValueError, match="labelings are for SNF"):
        enumerate_task(task, CRS, CR_X, snf_labelings(CRS, CR_X, (1, 2, 2)))
    with pytest.raises(ValueError, match="allows only"):  # S (index 2) on a metal site
        cell_atoms(CRS, CR_X, task.hnf, 4, [2, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="must list 8 active sites"):
        cell_atoms(CRS, CR_X, task.hnf, 4, [0, 1, 0])
    with pytest.raises(ValueError, match="cell sizes must be whole numbers"):
        enumeration_tasks(CRS, [-1])


def test_the_tasks_never_import_dask_or_the_campaign():
    code = "import sys, tasks.phase.enumeration, tasks.phase.cells; print(' '.join(sys.modules))"
    loaded = {m.split(".")[0] for m in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                       check=True).stdout.split()}
    assert not loaded & {"dask", "distributed", "campaign", "schedulers", "torch"}
