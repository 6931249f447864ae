"""The sites a chain lives on and their neighbour pairs.

A chain's structure is a site lattice (fractional coordinates, fixed) decorated by atomic numbers,
0 for a vacancy, in a cell that cell moves strain. Pairs between sites, vacant ones included, are
found once within the potential's cutoff plus a skin: a swap then only changes which pairs are
live, and a strained cell keeps the list valid while no pair can have crossed the skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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

    def of_sites(self, sites: np.ndarray) -> np.ndarray:
        """Indices of every pair centred on ``sites`` (sorted), in site order."""
        starts, stops = self.segment[sites], self.segment[sites + 1]
        lengths = stops - starts
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.arange(int(lengths.sum())) + offsets

    def within_cutoff(self, sites: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """``sites`` and every site within the cutoff of one of them in ``cell`` (sorted, unique):
        the atoms whose energies a change on ``sites`` can change."""
        if not len(sites):
            return sites
        idx = self.of_sites(np.unique(sites))
        vectors = (np.take(self.fractional_j, idx, axis=0) - np.take(self.fractional_i, idx, axis=0)
                   + np.take(self.shift, idx, axis=0)) @ cell
        near = np.einsum("px,px->p", vectors, vectors) < self.cutoff_A ** 2
        return np.union1d(sites, self.j[idx[near]])

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
