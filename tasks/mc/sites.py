"""The sites a chain lives on and their neighbour pairs.

A chain's structure is a site lattice (fractional coordinates, fixed) decorated by atomic numbers,
0 for a vacancy, in a cell that cell moves strain. Pairs between sites, vacant ones included, are
found once within the potential's cutoff plus a skin: a swap then only changes which pairs are
live, and a strained cell keeps the list valid while no pair can have crossed the skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from vesin import NeighborList


@dataclass(frozen=True, eq=False)
class SiteLattice:
    fractional: np.ndarray  # (n_sites, 3)
    pbc: tuple[bool, bool, bool]
    mobile: np.ndarray  # (n_sites,) bool: sites whose occupant may trade places with a vacancy

    @property
    def n_sites(self) -> int:
        return len(self.fractional)

    def positions(self, cell: np.ndarray) -> np.ndarray:
        return self.fractional @ cell


@dataclass(frozen=True, eq=False)
class SitePairs:
    """Directed site pairs (i → j, sorted by i) within ``reach_A`` of the cell they were found in."""

    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray  # (P, 3) integer cell shifts, as float64 (what the potential takes)
    segment: np.ndarray  # (n_sites + 1,): pairs of site s are segment[s]:segment[s + 1]
    cell: np.ndarray  # the cell they were found in
    cutoff_A: float
    reach_A: float  # cutoff + skin
    fractional_i: np.ndarray  # (P, 3) fractional coordinates of each pair's sites, for distances in any cell
    fractional_j: np.ndarray

    def within_cutoff(self, sites: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """``sites`` and every site within the cutoff of one of them in ``cell`` (sorted, unique):
        the atoms whose energies a change on ``sites`` can change."""
        if not len(sites):
            return sites
        return _within_cutoff(np.asarray(sites, dtype=np.int64), self.segment, self.j, self.fractional_i,
                              self.fractional_j, self.shift, np.asarray(cell, dtype=np.float64), self.cutoff_A ** 2)

    def valid_for(self, cell: np.ndarray) -> bool:
        """Whether every pair within the cutoff in ``cell`` is in the list: distances shrink at most
        by the smallest singular value of the strain that maps the list's cell onto ``cell``."""
        strain = np.linalg.solve(self.cell, cell)  # cell = self.cell @ strain (row vectors)
        return float(np.linalg.svd(strain, compute_uv=False).min()) * self.reach_A >= self.cutoff_A * (1 + 1e-12)


def site_pairs(lattice: SiteLattice, cell: np.ndarray, cutoff_A: float, skin_A: float) -> SitePairs:
    reach = float(cutoff_A + skin_A)
    periodic = np.asarray(lattice.pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64) if periodic.any() else np.zeros((3, 3))
    i, j, s = NeighborList(cutoff=reach, full_list=True, sorted=True).compute(
        points=np.ascontiguousarray(lattice.positions(cell), dtype=np.float64), box=box, periodic=periodic,
        quantities="ijS")
    i, j = i.astype(np.int64), j.astype(np.int64)
    segment = np.searchsorted(i, np.arange(lattice.n_sites + 1)).astype(np.int64)
    return SitePairs(i, j, np.asarray(s, dtype=np.float64).reshape(-1, 3), segment, np.array(cell, dtype=np.float64),
                     float(cutoff_A), reach, lattice.fractional[i], lattice.fractional[j])


@njit(cache=True)
def pair_vector(p, fractional_i, fractional_j, shift, cell):
    """Pair p's vector (x, y, z) in ``cell`` from the fractional coordinates of its sites and its shift."""
    f0 = fractional_j[p, 0] - fractional_i[p, 0] + shift[p, 0]
    f1 = fractional_j[p, 1] - fractional_i[p, 1] + shift[p, 1]
    f2 = fractional_j[p, 2] - fractional_i[p, 2] + shift[p, 2]
    return (f0 * cell[0, 0] + f1 * cell[1, 0] + f2 * cell[2, 0], f0 * cell[0, 1] + f1 * cell[1, 1] + f2 * cell[2, 1],
            f0 * cell[0, 2] + f1 * cell[1, 2] + f2 * cell[2, 2])


@njit(cache=True)
def _within_cutoff(sites, segment, site_j, fractional_i, fractional_j, shift, cell, cutoff_sq):
    """SitePairs.within_cutoff in one pass over the sites' pairs (array operations took several)."""
    near = np.zeros(len(segment) - 1, np.bool_)
    for s in sites:
        near[s] = True
        for p in range(segment[s], segment[s + 1]):
            x, y, z = pair_vector(p, fractional_i, fractional_j, shift, cell)
            if x * x + y * y + z * z < cutoff_sq:
                near[site_j[p]] = True
    return np.flatnonzero(near)
