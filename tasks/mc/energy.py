"""Energies of chain configurations, summed over the sites a move touched.

A request is a configuration (site occupation, cell, site pairs) and the sites whose energies are
wanted. A potential with energies per atom (tasks.potential.per_atom_energies) gives the exact
energy change of a swap from the atoms within its cutoff of the moved sites: only their
environments changed, angular terms included, because an atom's energy depends on neighbours
within the cutoff alone. Every request becomes one small periodic system (those atoms and their
neighbours, in the full cell), and all requests of a step go through the potential in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from tasks.mc.sites import SiteLattice, SitePairs
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs


@dataclass(frozen=True, eq=False)
class EnergyRequest:
    occupation: np.ndarray  # (n_sites,) atomic numbers, 0 = vacancy
    cell: np.ndarray  # (3, 3)
    pairs: SitePairs
    centres: np.ndarray | None = None  # sites whose energies are summed; None: every occupied site


class EnergyModel(Protocol):
    cutoff_A: float

    def energies(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> np.ndarray:
        """Per request, the summed energy (eV) of its occupied ``centres``. A model whose energy
        does not split into site energies returns the total for every request: the engine's
        energy changes are differences of two requests about the same sites, right either way."""
        ...


class PotentialEnergy:
    """Site energies from any potential that gives energies per atom (a committee: the mean)."""

    def __init__(self, potential):
        self.potential = potential
        self.cutoff_A = float(potential.cutoff_A)

    def energies(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> np.ndarray:
        from tasks.potential import per_atom_energies

        if not requests:
            return np.zeros(0)
        batch, pairs, centre_atoms = _local_batch(lattice, requests, self.potential.dtype, self.potential.device)
        atomic = per_atom_energies(self.potential, batch, pairs).mean(dim=0)
        values = atomic.detach().cpu().numpy().astype(np.float64)[centre_atoms]
        system = batch.system.cpu().numpy()[centre_atoms]
        return np.bincount(system, weights=values, minlength=len(requests))


def _segments(pairs: SitePairs, sites: np.ndarray) -> np.ndarray:
    """Indices of every pair centred on ``sites``, in site order."""
    starts, stops = pairs.segment[sites], pairs.segment[sites + 1]
    lengths = stops - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(int(lengths.sum())) + offsets


def _local_batch(lattice: SiteLattice, requests: Sequence[EnergyRequest], dtype: torch.dtype,
                 device) -> tuple[AtomsBatch, Pairs, np.ndarray]:
    """One system per request: its centres and their occupied neighbours; pairs only from centres,
    so the other atoms are context (their own energies are not summed)."""
    positions, numbers, cells, n_atoms = [], [], [], []
    p_i, p_j, p_shift, p_system, centre_atoms = [], [], [], [], []
    offset = 0
    local = np.empty(lattice.n_sites, dtype=np.int64)
    for r, request in enumerate(requests):
        occupied = request.occupation != 0
        if request.centres is None:
            is_centre = occupied
        else:
            is_centre = np.zeros(lattice.n_sites, dtype=bool)
            is_centre[request.centres] = True
            is_centre &= occupied
        centres = np.flatnonzero(is_centre)
        idx = _segments(request.pairs, centres)
        idx = idx[occupied[request.pairs.j[idx]]]
        i, j = request.pairs.i[idx], request.pairs.j[idx]
        in_system = is_centre.copy()
        in_system[j] = True
        atoms = np.flatnonzero(in_system)
        local[atoms] = np.arange(offset, offset + len(atoms))
        positions.append(lattice.fractional[atoms] @ request.cell)
        numbers.append(request.occupation[atoms])
        cells.append(request.cell)
        n_atoms.append(len(atoms))
        p_i.append(local[i])
        p_j.append(local[j])
        p_shift.append(request.pairs.shift[idx])
        p_system.append(np.full(len(idx), r))
        centre_atoms.append(local[centres])
        offset += len(atoms)
    n_atoms = np.array(n_atoms, dtype=np.int64)
    batch = AtomsBatch(
        positions=torch.as_tensor(np.concatenate(positions), dtype=dtype, device=device),
        cells=torch.as_tensor(np.stack(cells), dtype=dtype, device=device),
        numbers=torch.as_tensor(np.concatenate(numbers), dtype=torch.long, device=device),
        system=torch.as_tensor(np.repeat(np.arange(len(requests)), n_atoms), dtype=torch.long, device=device),
        n_atoms=n_atoms,
        pbc=np.tile(np.asarray(lattice.pbc, dtype=bool), (len(requests), 1)),
    )
    pairs = Pairs(i=torch.as_tensor(np.concatenate(p_i), dtype=torch.long, device=device),
                  j=torch.as_tensor(np.concatenate(p_j), dtype=torch.long, device=device),
                  shift=torch.as_tensor(np.concatenate(p_shift), dtype=dtype, device=device),
                  system=torch.as_tensor(np.concatenate(p_system), dtype=torch.long, device=device))
    return batch, pairs, np.concatenate(centre_atoms)
