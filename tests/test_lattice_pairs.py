"""Site pairs of enumerated supercells from the primitive cell's neighbour vectors
(tasks.mc.lattice_pairs) against a neighbour search of every supercell (vesin, tasks.mc.sites)."""

import numpy as np

from tasks.mc.lattice_pairs import PrimitiveNeighbours
from tasks.mc.sites import SiteLattice, site_pairs
from tasks.phase.enumeration import enumerate_cells
from tasks.phase.lattice import Lattice


def _supercells(lattice: Lattice, sizes) -> list:
    found = enumerate_cells(lattice.primitive(), sizes, lattice.chemical_symbols())
    seen = {}
    for k in range(len(found)):
        seen.setdefault((int(found.ncells[k]), tuple(found.hnf[k])), k)
    return [lattice.cell_atoms(found.hnf[k], int(found.ncells[k]), found.sites(k)) for k in seen.values()]


def _as_set(pairs) -> set:
    return set(zip(pairs.i.tolist(), pairs.j.tolist(), map(tuple, pairs.shift.astype(int).tolist())))


def test_pairs_are_those_a_neighbour_search_finds():
    lattice = Lattice()
    cells = _supercells(lattice, range(1, 5))
    assert len(cells) > 10
    primitive = lattice.primitive()
    table = PrimitiveNeighbours.of(primitive.get_scaled_positions(), primitive.cell.array, reach_A=6.0)
    sites = [SiteLattice(a.get_scaled_positions(), (True, True, True), np.zeros(len(a), bool)) for a in cells]
    for cutoff in (6.0, 4.2):  # at the reach and below it
        found = table.pairs(sites, [a.cell.array for a in cells], cutoff)
        for lattice_sites, atoms, pairs in zip(sites, cells, found):
            reference = site_pairs(lattice_sites, atoms.cell.array, cutoff, skin_A=0.0)
            assert len(pairs.i) == len(reference.i) and _as_set(pairs) == _as_set(reference)
            assert np.array_equal(pairs.segment, reference.segment)
            assert np.all(np.diff(pairs.i) >= 0), "sorted by centre"


def test_a_site_off_the_lattice_or_a_longer_cutoff_is_refused():
    lattice = Lattice()
    atoms = _supercells(lattice, [2])[0]
    primitive = lattice.primitive()
    table = PrimitiveNeighbours.of(primitive.get_scaled_positions(), primitive.cell.array, reach_A=5.0)
    fractional = atoms.get_scaled_positions()
    sites = SiteLattice(fractional, (True, True, True), np.zeros(len(atoms), bool))
    assert table.pairs([sites], [atoms.cell.array], 5.0) is not None
    assert table.pairs([sites], [atoms.cell.array], 5.5) is None, "beyond the table's reach"
    moved = fractional.copy()
    moved[0] += 0.01
    off = SiteLattice(moved, (True, True, True), np.zeros(len(atoms), bool))
    assert table.pairs([sites, off], [atoms.cell.array] * 2, 5.0) is None
