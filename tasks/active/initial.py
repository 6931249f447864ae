"""Initial training data beyond perturbed cells: point defects, slab cuts, dimers, isolated
atoms, and labeler relaxation paths thinned by farthest-point sampling on energies."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.optimize import BFGS

from tasks.labeling import labeler_atoms
from tasks.outcome import Outcome, run_each
from tasks.structures import Structure


def vacancy(atoms: Atoms, species: str, count: int, rng: np.random.Generator) -> Atoms:
    """Remove ``count`` atoms of ``species``: one at random, then its nearest same-species
    neighbours (count 2 on MoS2's S gives the V_S2 column when the partner is across the layer)."""
    sites = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == species)
    if len(sites) < count:
        raise ValueError(f"cannot remove {count} {species} from {atoms.get_chemical_formula()}")
    first = int(rng.choice(sites))
    distances = atoms.get_distances(first, sites, mic=True)
    removed = sites[np.argsort(distances, kind="stable")[:count]]
    out = atoms.copy()
    del out[sorted(removed.tolist())]
    return out


def antisite(atoms: Atoms, species: str, replacement: str, rng: np.random.Generator) -> Atoms:
    sites = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == species)
    if len(sites) == 0:
        raise ValueError(f"no {species} in {atoms.get_chemical_formula()} for an antisite")
    out = atoms.copy()
    out.symbols[int(rng.choice(sites))] = replacement
    return out


def slab(atoms: Atoms, axis: int, shift: float, vacuum_A: float) -> Atoms:
    """Cut a bulk cell normal to cell vector ``axis`` after shifting all atoms by ``shift`` (a
    fraction of that vector, wrapped), so different shifts expose different terminations; the
    cut direction gets ``vacuum_A`` of empty space and stays periodic (a slab in a box)."""
    out = atoms.copy()
    scaled = out.get_scaled_positions(wrap=True)
    scaled[:, axis] = (scaled[:, axis] + shift) % 1.0
    out.set_scaled_positions(scaled)
    cell = out.cell.array.copy()
    length = np.linalg.norm(cell[axis])
    cell[axis] *= (length + vacuum_A) / length
    out.set_cell(cell, scale_atoms=False)
    return out


def dimers(elements: Sequence[str], distances_A: Sequence[float], box_A: float = 14.0) -> list[Atoms]:
    out = []
    for a, b in itertools.combinations_with_replacement(sorted(set(elements)), 2):
        for r in distances_A:
            atoms = Atoms([a, b], positions=[[0, 0, 0], [0, 0, r]], cell=[box_A] * 3, pbc=False)
            atoms.center()
            out.append(atoms)
    return out


def isolated_atoms(elements: Sequence[str], box_A: float = 14.0) -> list[Atoms]:
    return [Atoms(e, positions=[[box_A / 2] * 3], cell=[box_A] * 3, pbc=False) for e in sorted(set(elements))]


def farthest_point_indices(values: np.ndarray, fraction: float, first: int = 0) -> list[int]:
    """Greedy farthest-point sampling of rows of ``values`` (1-D energies or feature vectors),
    starting from row ``first``; keeps ceil(fraction · n) rows, sorted."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    n_keep = min(len(x), max(1, int(np.ceil(fraction * len(x)))))
    chosen = [first]
    distance = np.linalg.norm(x - x[first], axis=1)
    while len(chosen) < n_keep:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(x - x[nxt], axis=1))
    return sorted(chosen)


def relaxation_path(structure: Structure, labeler: Any, max_steps: int, fmax_eV_per_A: float,
                    keep_fraction: float) -> list[dict]:
    """Relax with the labeler (ASE BFGS), its calculator set up as for labeling (in the same
    per-structure workdir); return the labeled snapshots picked from the path by farthest-point
    sampling on their energies (first and lowest-energy snapshots always kept)."""
    atoms = labeler_atoms(structure, labeler)
    path: list[dict] = []

    def record() -> None:
        stress = np.full(6, np.nan)
        path.append({"positions_A": atoms.positions.copy(), "cell_A": atoms.cell.array.copy(),
                     "energy_eV": float(atoms.get_potential_energy()),
                     "forces_eV_per_A": np.asarray(atoms.get_forces(), dtype=np.float64).copy(),
                     "stress_eV_per_A3": stress})

    optimiser = BFGS(atoms, logfile=None)
    optimiser.attach(record)
    optimiser.run(fmax=fmax_eV_per_A, steps=max_steps)
    energies = np.array([p["energy_eV"] for p in path])
    keep = set(farthest_point_indices(energies, keep_fraction)) | {int(np.argmin(energies))}
    return [dict(p, step=i) for i, p in enumerate(path) if i in keep]


def relax_batch(keys: list[str], structures: list[Structure], labeler: Any, max_steps: int,
                fmax_eV_per_A: float, keep_fraction: float) -> list[Outcome]:
    return run_each(relaxation_path, keys, structures, labeler, max_steps, fmax_eV_per_A, keep_fraction)
