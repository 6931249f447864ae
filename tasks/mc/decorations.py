"""Total energies of many whole decorations of site lattices in one pass of a potential: the
cells of one supercell share their sites and neighbour pairs (found once), and each cell keeps
the pairs between two of its occupied sites (tasks.phase.ranking ranks enumerated cells so).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from numba import njit

from tasks.mc.energy import EnergyRequest
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs


def decoration_energies(potential, requests: Sequence[EnergyRequest], max_atoms: int = 16384) -> np.ndarray:
    """Every member's total energy (M, n) of whole decorations (every occupied site; ``centres``
    must be None), each request with its own lattice (site pairs found once per lattice serve all
    its decorations), in passes of at most ``max_atoms`` atoms."""
    if any(r.centres is not None or r.lattice is None for r in requests):
        raise ValueError("decoration_energies takes whole decorations, each with its lattice")
    n_atoms = [np.count_nonzero(r.occupation) for r in requests]
    out, start = [], 0
    while start < len(requests):
        stop, atoms = start, 0
        while stop < len(requests) and (stop == start or atoms + n_atoms[stop] <= max_atoms):
            atoms += n_atoms[stop]
            stop += 1
        out.append(_decoration_totals(potential, requests[start:stop]))
        start = stop
    return np.concatenate(out, axis=1) if out else np.zeros((1, 0))


def _decoration_totals(potential, requests: Sequence[EnergyRequest]) -> np.ndarray:
    """(M, len(requests)) total energies of whole decorations in one pass of the potential."""
    from tasks.potential import per_atom_energies

    batch, pairs, request_of_system = _decorations_batch(requests, potential.dtype, potential.device)
    atomic = per_atom_energies(potential, batch, pairs).detach().cpu().numpy().astype(np.float64)
    system = batch.system.cpu().numpy()
    out = np.empty((len(atomic), len(requests)))
    for m, values in enumerate(atomic):
        out[m, request_of_system] = np.bincount(system, weights=values, minlength=len(requests))
    return out


def _decorations_batch(requests: Sequence[EnergyRequest], dtype: torch.dtype,
                       device) -> tuple[AtomsBatch, Pairs, np.ndarray]:
    """What tasks.mc.energy's local_batch gives for whole decorations (every occupied site a
    centre, no context), over all decorations of one lattice at a time (the cells of one supercell
    share their sites and pairs): per decoration, its atoms are its occupied sites and its pairs
    those of the lattice between two of them. The systems come grouped by lattice; the third value
    is each system's request."""
    groups: dict[tuple[int, int], list[int]] = {}
    for r, request in enumerate(requests):
        groups.setdefault((id(request.lattice), id(request.pairs)), []).append(r)
    order = np.array([r for members in groups.values() for r in members], dtype=np.int64)
    occupations = [np.stack([requests[r].occupation for r in members]) for members in groups.values()]
    upper = sum(len(occupation) * len(requests[members[0]].pairs.i)
                for occupation, members in zip(occupations, groups.values()))
    float_type = torch.empty(0, dtype=dtype).numpy().dtype  # the pairs' shifts are written in it directly
    pair_i, pair_j = np.empty(upper, np.int64), np.empty(upper, np.int64)
    pair_shift, pair_system = np.empty((upper, 3), float_type), np.empty(upper, np.int64)
    positions, numbers, n_atoms, cells = [], [], [], []
    pairs_of_atom = np.zeros(sum(int(np.count_nonzero(o)) for o in occupations), np.int64)
    n_pairs = atoms_before = systems_before = 0
    for members, occupation in zip(groups.values(), occupations):
        sites, lattice_pairs = requests[members[0]].lattice, requests[members[0]].pairs
        occupied = occupation != 0
        # atoms in decoration order, then site order: the pairs come sorted by centre
        local = (np.cumsum(occupied.ravel()) - 1 + atoms_before).reshape(occupied.shape)
        row, site = np.nonzero(occupied)
        cell = np.stack([requests[r].cell for r in members])
        cells.append(cell)
        if (cell == cell[0]).all():  # the cells of one supercell: its sites' positions once
            positions.append((sites.fractional @ cell[0])[site])
        else:
            positions.append(np.einsum("ax,axy->ay", sites.fractional[site], cell[row]))
        numbers.append(occupation[row, site])
        n_atoms.append(occupied.sum(axis=1))
        n_pairs = _live_pairs(occupied, local, lattice_pairs.i, lattice_pairs.j,
                              lattice_pairs.shift.astype(float_type), systems_before,
                              pair_i, pair_j, pair_shift, pair_system, pairs_of_atom, n_pairs)
        atoms_before += len(row)
        systems_before += len(members)
    batch = AtomsBatch.from_arrays(np.concatenate(positions), np.concatenate(cells), np.concatenate(numbers),
                                   np.concatenate(n_atoms), [requests[r].lattice.pbc for r in order], dtype, device)
    pairs = Pairs(i=torch.from_numpy(pair_i[:n_pairs]).to(device), j=torch.from_numpy(pair_j[:n_pairs]).to(device),
                  shift=torch.from_numpy(pair_shift[:n_pairs]).to(device),
                  system=torch.from_numpy(pair_system[:n_pairs]).to(device))
    # the pairs of atom a are segment[a]:segment[a + 1] (what the CPU kernels would search for)
    pairs.derived["segment"] = np.concatenate([[0], np.cumsum(pairs_of_atom)])
    return batch, pairs, order


@njit(cache=True)
def _live_pairs(occupied, local, lattice_i, lattice_j, lattice_shift, first_system,
                pair_i, pair_j, pair_shift, pair_system, pairs_of_atom, n):
    """Append, decoration by decoration, the lattice pairs between two occupied sites (as batch
    atom indices) from position ``n``, counting them per centre atom; returns the new end. One
    pass over the lattice's pairs per decoration, where array operations took several."""
    for g in range(occupied.shape[0]):
        for p in range(len(lattice_i)):
            a, b = lattice_i[p], lattice_j[p]
            if occupied[g, a] and occupied[g, b]:
                pair_i[n] = local[g, a]
                pair_j[n] = local[g, b]
                pair_shift[n, 0] = lattice_shift[p, 0]
                pair_shift[n, 1] = lattice_shift[p, 1]
                pair_shift[n, 2] = lattice_shift[p, 2]
                pair_system[n] = first_system + g
                pairs_of_atom[local[g, a]] += 1
                n += 1
    return n
