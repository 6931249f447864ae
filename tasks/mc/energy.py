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
from numba import njit

from tasks.mc.sites import SiteLattice, SitePairs
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.cpu_inference import thread_workspace
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

    def site_features(self):
        """The kept-features path (tasks.mc.site_features) where the potential allows it, else None;
        asked afresh at every call of the engine (the potential may have changed dtype since)."""
        from tasks.mc.site_features import site_feature_model

        return site_feature_model(self.potential)

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

    batch, pairs, centre_atoms, centre_sites = local_batch(lattice, requests, potential.dtype, potential.device)
    wanted = np.zeros(len(batch.numbers), dtype=bool)
    wanted[centre_atoms] = True
    atomic = per_atom_energies(potential, batch, pairs, wanted).detach().cpu().numpy().astype(np.float64)
    return atomic[:, centre_atoms], batch.system.cpu().numpy()[centre_atoms], centre_sites


def local_batch(lattice: SiteLattice | None, requests: Sequence[EnergyRequest], dtype: torch.dtype,
                device) -> tuple[AtomsBatch, Pairs, np.ndarray, np.ndarray]:
    """One system per request: its centres and their occupied neighbours (atoms in site order);
    pairs only from centres, so the other atoms are context (their own energies are not summed).
    On a CPU the pairs view this thread's scratch arrays: valid until its next ``local_batch``."""
    float_type = torch.empty(0, dtype=dtype).numpy().dtype  # the pairs' shifts are written in it directly
    centres = []
    for request in requests:
        is_centre = request.occupation != 0
        if request.centres is not None:
            wanted = np.zeros(len(is_centre), dtype=bool)
            wanted[request.centres] = True
            is_centre &= wanted
        centres.append(is_centre)
    # scratch kept between calls (fresh arrays of this size cost page faults on every step), sized
    # by the centres' pairs
    workspace = thread_workspace()
    upper = sum(int(np.diff(r.pairs.segment)[c].sum()) for r, c in zip(requests, centres))
    pair_i, pair_j = workspace.array("mc_pair_i", (upper,), np.int64), workspace.array("mc_pair_j", (upper,), np.int64)
    pair_shift = workspace.array("mc_pair_shift", (upper, 3), float_type)
    pair_system = workspace.array("mc_pair_system", (upper,), np.int64)
    pairs_of_atom = np.zeros(sum((r.lattice or lattice).n_sites for r in requests), np.int64)
    positions, numbers, cells, n_atoms, centre_atoms, centre_sites = [], [], [], [], [], []
    n_pairs = offset = 0
    for r, (request, is_centre) in enumerate(zip(requests, centres)):
        sites = request.lattice or lattice
        atoms, centre_rows, n_pairs = _centre_pairs(request.occupation, is_centre, request.pairs.segment,
                                                    request.pairs.j, request.pairs.shift, offset, r, pair_i, pair_j,
                                                    pair_shift, pair_system, pairs_of_atom, n_pairs)
        positions.append(sites.fractional[atoms] @ request.cell)
        numbers.append(request.occupation[atoms])
        cells.append(request.cell)
        n_atoms.append(len(atoms))
        centre_atoms.append(centre_rows)
        centre_sites.append(atoms[centre_rows - offset])
        offset += len(atoms)
    batch = AtomsBatch.from_arrays(np.concatenate(positions), np.stack(cells), np.concatenate(numbers), n_atoms,
                                   [(r.lattice or lattice).pbc for r in requests], dtype, device)
    pairs = Pairs(i=torch.from_numpy(pair_i[:n_pairs]).to(device), j=torch.from_numpy(pair_j[:n_pairs]).to(device),
                  shift=torch.from_numpy(pair_shift[:n_pairs]).to(device),
                  system=torch.from_numpy(pair_system[:n_pairs]).to(device))
    # the pairs of atom a are segment[a]:segment[a + 1] (what the CPU kernels would search for)
    pairs.derived["segment"] = np.concatenate([[0], np.cumsum(pairs_of_atom[:offset])])
    return batch, pairs, np.concatenate(centre_atoms), np.concatenate(centre_sites)


@njit(cache=True)
def _centre_pairs(occupation, is_centre, segment, site_j, site_shift, offset, system,
                  pair_i, pair_j, pair_shift, pair_system, pairs_of_atom, n):
    """Append one request's pairs from its centres to occupied sites from position ``n``, as batch
    atom indices (its atoms, the centres and those neighbours, numbered from ``offset`` in site
    order), counting them per centre atom. Returns the atoms' sites, the centres' atom indices and
    the new end: two passes over the centres' pairs, where array operations took several."""
    n_sites = len(occupation)
    in_system = is_centre.copy()
    for s in range(n_sites):
        if is_centre[s]:
            for p in range(segment[s], segment[s + 1]):
                if occupation[site_j[p]] != 0:
                    in_system[site_j[p]] = True
    local = np.empty(n_sites, np.int64)
    atoms = np.empty(n_sites, np.int64)
    centres = np.empty(n_sites, np.int64)
    n_atoms = n_centres = 0
    for s in range(n_sites):
        if in_system[s]:
            local[s] = offset + n_atoms
            atoms[n_atoms] = s
            n_atoms += 1
            if is_centre[s]:
                centres[n_centres] = local[s]
                n_centres += 1
    for s in range(n_sites):
        if is_centre[s]:
            for p in range(segment[s], segment[s + 1]):
                j = site_j[p]
                if occupation[j] != 0:
                    pair_i[n] = local[s]
                    pair_j[n] = local[j]
                    pair_shift[n, 0] = site_shift[p, 0]
                    pair_shift[n, 1] = site_shift[p, 1]
                    pair_shift[n, 2] = site_shift[p, 2]
                    pair_system[n] = system
                    pairs_of_atom[local[s]] += 1
                    n += 1
    return atoms[:n_atoms], centres[:n_centres], n
