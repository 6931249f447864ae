"""Site pairs of many supercells of one primitive lattice without a neighbour search.

Every site of a cell whose sites are lattice points of a primitive cell (an enumerated supercell,
however reduced) has the neighbour vectors of its primitive site. The primitive's vectors within
the reach are found once (vesin); a cell's pairs then follow site by site: the end of each vector
is looked up among the cell's sites by its wrapped fractional coordinates. For the small cells of
an enumeration a neighbour search per cell costs more than the networks' work on its decorations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit
from vesin import NeighborList

from tasks.mc.sites import SiteLattice, SitePairs

KEY_GRID = 1 << 16  # per fractional coordinate: far finer than two sites' distance, far coarser than rounding


@dataclass(frozen=True, eq=False)
class PrimitiveNeighbours:
    cell: np.ndarray  # (3, 3) of the primitive
    fractional: np.ndarray  # (b, 3) its sites
    vectors: np.ndarray  # (V, 3) Å; those of primitive site b are vectors[segment[b]:segment[b + 1]]
    segment: np.ndarray
    reach_A: float

    @classmethod
    def of(cls, fractional: np.ndarray, cell: np.ndarray, reach_A: float) -> "PrimitiveNeighbours":
        cell = np.asarray(cell, dtype=np.float64)
        fractional = np.asarray(fractional, dtype=np.float64)
        i, vectors = NeighborList(cutoff=float(reach_A), full_list=True, sorted=True).compute(
            points=np.ascontiguousarray(fractional @ cell), box=cell, periodic=True, quantities="iD")
        segment = np.searchsorted(np.asarray(i, dtype=np.int64), np.arange(len(fractional) + 1)).astype(np.int64)
        return cls(cell, fractional, np.ascontiguousarray(vectors, dtype=np.float64).reshape(-1, 3), segment,
                   float(reach_A))

    def pairs(self, lattices: Sequence[SiteLattice], cells: Sequence[np.ndarray],
              cutoff_A: float) -> list[SitePairs] | None:
        """Per lattice, in its cell, the pairs ``site_pairs(lattice, cell, cutoff_A, skin_A=0)`` finds
        (a centre's pairs in another order), or None if a site of one of them is not a lattice
        point of the primitive (the caller then searches)."""
        if not len(lattices) or cutoff_A > self.reach_A or not all(all(sites.pbc) for sites in lattices):
            return None
        n_sites = np.array([sites.n_sites for sites in lattices], dtype=np.int64)
        first_site = np.concatenate([[0], np.cumsum(n_sites)])
        fractional = np.ascontiguousarray(np.concatenate([sites.fractional for sites in lattices]), dtype=np.float64)
        cells = np.ascontiguousarray(cells, dtype=np.float64)
        # cutoff_A may be below the reach: vectors beyond it are left out
        lengths = np.linalg.norm(self.vectors, axis=1)
        most = int(np.diff(self.segment).max(initial=0))
        out_i = np.empty(len(fractional) * most, np.int64)
        out_j = np.empty_like(out_i)
        out_shift = np.empty((len(out_i), 3), np.float64)
        bounds = np.zeros(len(lattices) + 1, np.int64)
        found = _pairs_of_cells(fractional, first_site, cells, np.linalg.inv(cells), np.linalg.inv(self.cell),
                                self.fractional, self.vectors, lengths < cutoff_A, self.segment, out_i, out_j,
                                out_shift, bounds)
        if not found:
            return None
        out = []
        for k, sites in enumerate(lattices):
            i, j = out_i[bounds[k]:bounds[k + 1]], out_j[bounds[k]:bounds[k + 1]]
            out.append(SitePairs(i, j, out_shift[bounds[k]:bounds[k + 1]],
                                 np.searchsorted(i, np.arange(sites.n_sites + 1)).astype(np.int64), cells[k].copy(),
                                 float(cutoff_A), float(cutoff_A), sites.fractional[i], sites.fractional[j]))
        return out


@njit(cache=True)
def _wrapped_key(f0, f1, f2):
    g0 = np.int64(np.round((f0 - np.floor(f0)) * KEY_GRID)) % KEY_GRID
    g1 = np.int64(np.round((f1 - np.floor(f1)) * KEY_GRID)) % KEY_GRID
    g2 = np.int64(np.round((f2 - np.floor(f2)) * KEY_GRID)) % KEY_GRID
    return (g0 * KEY_GRID + g1) * KEY_GRID + g2


@njit(cache=True)
def _pairs_of_cells(fractional, first_site, cells, inverses, primitive_inverse, primitive_fractional, vectors,
                    within, segment, out_i, out_j, out_shift, bounds):
    """Cell k's pairs, as its own site indices, into out_*[bounds[k]:bounds[k + 1]] (sorted by
    centre). False if a site is not a lattice point or a vector's end is not a site."""
    n = 0
    for k in range(len(first_site) - 1):
        start, stop = first_site[k], first_site[k + 1]
        keys = np.empty(stop - start, np.int64)
        for s in range(start, stop):
            keys[s - start] = _wrapped_key(fractional[s, 0], fractional[s, 1], fractional[s, 2])
        order = np.argsort(keys)
        sorted_keys = keys[order]
        inverse = inverses[k]
        for s in range(start, stop):
            # the site's primitive site: its position minus that site's is a lattice vector
            f0, f1, f2 = fractional[s, 0], fractional[s, 1], fractional[s, 2]
            p0 = f0 * cells[k, 0, 0] + f1 * cells[k, 1, 0] + f2 * cells[k, 2, 0]
            p1 = f0 * cells[k, 0, 1] + f1 * cells[k, 1, 1] + f2 * cells[k, 2, 1]
            p2 = f0 * cells[k, 0, 2] + f1 * cells[k, 1, 2] + f2 * cells[k, 2, 2]
            # its fractional coordinates in the primitive cell
            q0 = p0 * primitive_inverse[0, 0] + p1 * primitive_inverse[1, 0] + p2 * primitive_inverse[2, 0]
            q1 = p0 * primitive_inverse[0, 1] + p1 * primitive_inverse[1, 1] + p2 * primitive_inverse[2, 1]
            q2 = p0 * primitive_inverse[0, 2] + p1 * primitive_inverse[1, 2] + p2 * primitive_inverse[2, 2]
            basis = -1
            for b in range(len(primitive_fractional)):
                d0 = q0 - primitive_fractional[b, 0]
                d1 = q1 - primitive_fractional[b, 1]
                d2 = q2 - primitive_fractional[b, 2]
                worst = max(abs(d0 - np.round(d0)), abs(d1 - np.round(d1)), abs(d2 - np.round(d2)))
                if worst < 1e-6:
                    basis = b
                    break
            if basis < 0:
                return False
            for v in range(segment[basis], segment[basis + 1]):
                if not within[v]:
                    continue
                v0, v1, v2 = vectors[v, 0], vectors[v, 1], vectors[v, 2]
                e0 = f0 + v0 * inverse[0, 0] + v1 * inverse[1, 0] + v2 * inverse[2, 0]
                e1 = f1 + v0 * inverse[0, 1] + v1 * inverse[1, 1] + v2 * inverse[2, 1]
                e2 = f2 + v0 * inverse[0, 2] + v1 * inverse[1, 2] + v2 * inverse[2, 2]
                key = _wrapped_key(e0, e1, e2)
                at = np.searchsorted(sorted_keys, key)
                if at >= len(sorted_keys) or sorted_keys[at] != key:
                    return False
                j = start + order[at]
                out_i[n] = s - start
                out_j[n] = j - start
                out_shift[n, 0] = np.round(e0 - fractional[j, 0])
                out_shift[n, 1] = np.round(e1 - fractional[j, 1])
                out_shift[n, 2] = np.round(e2 - fractional[j, 2])
                n += 1
        bounds[k + 1] = n
    return True
