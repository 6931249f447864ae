"""Threshold displacement energies: the least recoil energy that leaves a defect.

A primary knock-on atom (PKA) of a relaxed cell at rest gets kinetic energy E along a direction;
after ``time_fs`` of NVE dynamics the cell holds a defect when a Wigner–Seitz analysis of the atoms
still bonded to it finds an empty site (the PKA, or an atom it pushed, left its place or the
sheet). Per direction, bisection on E between an energy that leaves no defect and one that does;
every direction's trial of a round is one system of one batched MD state. Directions lie on a
Fibonacci hemisphere (z ≥ 0: out of a sheet through its top layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from tasks.irradiation.damage import detached, wigner_seitz
from tasks.md.integrators import adaptive_timestep_fs, velocity_verlet_step
from tasks.md.state import initial_state, subset


def fibonacci_hemisphere(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over z > 0 (equal-area bands, golden-angle azimuths)."""
    k = np.arange(n)
    z = 1.0 - (k + 0.5) / n
    azimuth = k * np.pi * (3.0 - np.sqrt(5.0))
    r = np.sqrt(1.0 - z ** 2)
    return np.stack([r * np.cos(azimuth), r * np.sin(azimuth), z], axis=1)


@dataclass(frozen=True)
class ThresholdSettings:
    low_eV: float = 1.0  # a bracket: the search reports thresholds outside it as at its ends
    high_eV: float = 80.0
    rounds: int = 8  # the bracket halves each round: (high − low) / 2^rounds at the end
    time_fs: float = 500.0
    max_timestep_fs: float = 1.0
    max_displacement_A: float = 0.05
    bond_cutoff_A: float = 3.0  # atoms outside the largest bonded component have left the cell


def first_atom_of(atoms: Atoms, symbol: str) -> int:
    """The PKA of an element: among its atoms in the topmost layer (within 0.5 Å of the highest),
    the one nearest the cell's in-plane centre."""
    symbols = np.array(atoms.get_chemical_symbols())
    mine = np.flatnonzero(symbols == symbol)
    if not len(mine):
        raise ValueError(f"no {symbol} in {atoms.get_chemical_formula()} to knock on")
    z = atoms.positions[mine, 2]
    top = mine[z > z.max() - 0.5]
    centre = (atoms.cell[0] + atoms.cell[1])[:2] / 2
    return int(top[np.argmin(np.linalg.norm(atoms.positions[top, :2] - centre, axis=1))])


def leaves_defect(model, cell: Atoms, pka: int, directions: np.ndarray, energies_eV: np.ndarray,
                  settings: ThresholdSettings) -> np.ndarray:
    """(k,) bool: whether giving the PKA energies_eV[i] along directions[i] leaves a defect."""
    systems = []
    mass = cell.get_masses()[pka]
    for direction, energy in zip(directions, energies_eV):
        atoms = cell.copy()
        velocities = np.zeros((len(atoms), 3))
        velocities[pka] = np.sqrt(2.0 * energy / mass) * np.asarray(direction) / np.linalg.norm(direction)
        atoms.set_velocities(velocities)
        systems.append(atoms)
    state = initial_state(model, systems, seed=0)
    number = torch.arange(len(systems))  # each live system's index in ``systems``
    final = [None] * len(systems)
    while state.n_systems:
        done = state.time_fs >= settings.time_fs - 1e-9
        if bool(done.any()):
            for b, atoms in zip(torch.nonzero(done).squeeze(1).tolist(), _atoms_of(state, done)):
                final[int(number[b])] = atoms
            keep = ~done
            state = subset(state, torch.ones(len(state.masses), dtype=torch.bool), keep)
            number = number[keep.cpu()]
            if not state.n_systems:
                break
        step = adaptive_timestep_fs(state, max_displacement_A=settings.max_displacement_A,
                                    max_timestep_fs=settings.max_timestep_fs)
        step = torch.minimum(step, settings.time_fs - state.time_fs)  # land on the end time
        state = velocity_verlet_step(state, model, timestep_fs=step)
    return np.array([_has_vacancy(cell, atoms, settings.bond_cutoff_A) for atoms in final])


def _atoms_of(state, systems: torch.Tensor) -> list[Atoms]:
    everything = state.batch.to_atoms()
    return [everything[b] for b in torch.nonzero(systems).squeeze(1).tolist()]


def _has_vacancy(pristine: Atoms, final: Atoms, bond_cutoff_A: float) -> bool:
    bonded = ~detached(final, bond_cutoff_A)
    occupancy = wigner_seitz(pristine.positions, pristine.cell.array, pristine.pbc, final.positions[bonded])
    return bool((occupancy == 0).any())


@dataclass(frozen=True)
class Thresholds:
    directions: np.ndarray  # (k, 3)
    threshold_eV: np.ndarray  # (k,) the least energy found to leave a defect (high_eV: none found below it)
    below_eV: np.ndarray  # (k,) the largest energy found to leave none (low_eV: every energy did)


def threshold_energies(model, cell: Atoms, pka: int, directions: np.ndarray,
                       settings: ThresholdSettings) -> Thresholds:
    """Bisection per direction, all directions of a round in one batched MD run. A direction that
    leaves no defect at ``high_eV`` reports high_eV (its threshold lies above), one that leaves a
    defect at ``low_eV`` reports low_eV."""
    k = len(directions)
    low, high = np.full(k, settings.low_eV), np.full(k, settings.high_eV)
    ends = leaves_defect(model, cell, pka, np.concatenate([directions, directions]),
                         np.concatenate([low, high]), settings)
    at_low, at_high = ends[:k], ends[k:]
    open_ = ~at_low & at_high  # a bracket to narrow
    high[at_low] = low[at_low]
    low[~at_high] = high[~at_high]
    for _ in range(settings.rounds):
        if not open_.any():
            break
        middle = (low + high) / 2
        defect = leaves_defect(model, cell, pka, directions[open_], middle[open_], settings)
        rows = np.flatnonzero(open_)
        high[rows[defect]] = middle[rows[defect]]
        low[rows[~defect]] = middle[rows[~defect]]
    return Thresholds(np.asarray(directions), high, low)
