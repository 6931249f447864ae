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
    lattice: SiteLattice | None = None  # its own lattice, where requests of one call differ in it


class EnergyModel(Protocol):
    cutoff_A: float

    def energies(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> np.ndarray:
        """Per request, the summed energy (eV) of its occupied ``centres``. A model whose energy
        does not split into site energies returns the total for every request: the engine's
        energy changes are differences of two requests about the same sites, right either way."""
        ...


def has_site_energies(model: EnergyModel) -> bool:
    """Whether ``model.site_energies(lattice, requests)`` gives, per request, an (n_sites,) array of
    its occupied centres' energies (0 elsewhere): the engine then keeps every chain's site energies
    and evaluates a swap's new configuration alone."""
    return callable(getattr(model, "site_energies", None))


class PotentialEnergy:
    """Site energies from any potential that gives energies per atom (a committee: the mean)."""

    def __init__(self, potential):
        self.potential = potential
        self.cutoff_A = float(potential.cutoff_A)

    def energies(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> np.ndarray:
        return self.site_energies(lattice, requests).sum(axis=1)

    def site_energies(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> np.ndarray:
        """(requests, n_sites): the energy of each occupied centre of each request, 0 elsewhere."""
        out = np.zeros((len(requests), lattice.n_sites))
        if requests:
            values, request, site = centre_energies(self.potential, lattice, requests)
            out[request, site] = values.mean(axis=0)
        return out


def centre_energies(potential, lattice: SiteLattice | None,
                    requests: Sequence[EnergyRequest]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every member's energy (M, C) of every occupied centre of the requests (M = 1 for a single
    model), each centre's request (C,) and site (C,), from one pass of the potential."""
    from tasks.potential import per_atom_energies

    batch, pairs, centre_atoms, centre_sites = _local_batch(lattice, requests, potential.dtype, potential.device)
    wanted = np.zeros(len(batch.numbers), dtype=bool)
    wanted[centre_atoms] = True
    atomic = per_atom_energies(potential, batch, pairs, wanted).detach().cpu().numpy().astype(np.float64)
    return atomic[:, centre_atoms], batch.system.cpu().numpy()[centre_atoms], centre_sites


def _local_batch(lattice: SiteLattice | None, requests: Sequence[EnergyRequest], dtype: torch.dtype,
                 device) -> tuple[AtomsBatch, Pairs, np.ndarray, np.ndarray]:
    """One system per request: its centres and their occupied neighbours; pairs only from centres,
    so the other atoms are context (their own energies are not summed)."""
    positions, numbers, cells, n_atoms = [], [], [], []
    p_i, p_j, p_shift, p_system, centre_atoms, centre_sites = [], [], [], [], [], []
    offset = 0
    for r, request in enumerate(requests):
        sites = request.lattice or lattice
        local = np.empty(sites.n_sites, dtype=np.int64)
        occupied = request.occupation != 0
        if request.centres is None:
            is_centre = occupied
        else:
            is_centre = np.zeros(sites.n_sites, dtype=bool)
            is_centre[request.centres] = True
            is_centre &= occupied
        centres = np.flatnonzero(is_centre)
        idx = request.pairs.of_sites(centres)
        idx = idx[occupied[request.pairs.j[idx]]]
        i, j = request.pairs.i[idx], request.pairs.j[idx]
        in_system = is_centre.copy()
        in_system[j] = True
        atoms = np.flatnonzero(in_system)
        local[atoms] = np.arange(offset, offset + len(atoms))
        positions.append(sites.fractional[atoms] @ request.cell)
        numbers.append(request.occupation[atoms])
        cells.append(request.cell)
        n_atoms.append(len(atoms))
        p_i.append(local[i])
        p_j.append(local[j])
        p_shift.append(np.take(request.pairs.shift, idx, axis=0))
        p_system.append(np.full(len(idx), r))
        centre_atoms.append(local[centres])
        centre_sites.append(centres)
        offset += len(atoms)
    batch = AtomsBatch.from_arrays(np.concatenate(positions), np.stack(cells), np.concatenate(numbers), n_atoms,
                                   [(r.lattice or lattice).pbc for r in requests], dtype, device)
    pairs = Pairs(i=torch.as_tensor(np.concatenate(p_i), dtype=torch.long, device=device),
                  j=torch.as_tensor(np.concatenate(p_j), dtype=torch.long, device=device),
                  shift=torch.as_tensor(np.concatenate(p_shift), dtype=dtype, device=device),
                  system=torch.as_tensor(np.concatenate(p_system), dtype=torch.long, device=device))
    return batch, pairs, np.concatenate(centre_atoms), np.concatenate(centre_sites)

