"""The batched MD state and how forces are evaluated on it (with a Verlet skin).

Units are ASE's: Å, eV, amu, and velocities in Å·sqrt(eV/amu), so Atoms.get_velocities() and
set_velocities() read and write them directly. Time steps are given in fs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from ase import Atoms, units

from tasks.nnp.batch import AtomsBatch, per_system_max, per_system_sum
from tasks.nnp.graph import Pairs, index_maps, replace_systems, subset_pairs

KB_EV_PER_K = units.kB
FS = units.fs  # one femtosecond in ASE time units


@dataclass(frozen=True, eq=False)
class MDState:
    batch: AtomsBatch
    velocities: torch.Tensor  # (N, 3)
    masses: torch.Tensor  # (N,) amu
    fixed: torch.Tensor  # (N,) bool: atoms that never move
    energy: torch.Tensor  # (B,) potential energy of the current positions
    forces: torch.Tensor  # (N, 3), zero on fixed atoms
    deviation: torch.Tensor | None  # (B,) committee force deviation, if the model gives one
    pairs: Pairs
    pairs_positions: torch.Tensor  # positions when the pair list was built
    skin_A: float
    step: int = 0
    time_fs: torch.Tensor | None = None  # (B,) elapsed time per system (steps may differ)

    @property
    def n_systems(self) -> int:
        return self.batch.n_systems

    def degrees_of_freedom(self) -> torch.Tensor:
        free = (~self.fixed).to(self.velocities.dtype)
        return torch.clamp(3 * per_system_sum(free, self.batch.system, self.n_systems), min=1.0)

    def kinetic_energy(self) -> torch.Tensor:
        per_atom = 0.5 * self.masses * self.velocities.pow(2).sum(dim=1)
        return per_system_sum(per_atom, self.batch.system, self.n_systems)

    def temperature_K(self) -> torch.Tensor:
        return 2 * self.kinetic_energy() / (self.degrees_of_freedom() * KB_EV_PER_K)

    def to_atoms(self) -> list[Atoms]:
        out, start = [], 0
        velocities = self.velocities.detach().cpu().numpy()
        for atoms, n in zip(self.batch.to_atoms(), self.batch.n_atoms):
            atoms.set_velocities(velocities[start:start + n])
            out.append(atoms)
            start += n
        return out


def subset(state: MDState, atoms: torch.Tensor, systems: torch.Tensor) -> MDState:
    """The state without the dropped atoms (bool mask ``atoms``, N) and systems (``systems``, B);
    a dropped system drops its atoms too. Forces and energies are carried over, not recomputed:
    the caller re-evaluates the systems whose atoms it removed, if their energy matters."""
    atoms = atoms & systems[state.batch.system]
    atom_map, system_map = index_maps(atoms, systems)
    return replace(state, batch=state.batch.subset(atoms, systems, system_map),
                   velocities=state.velocities[atoms], masses=state.masses[atoms], fixed=state.fixed[atoms],
                   energy=state.energy[systems], forces=state.forces[atoms],
                   deviation=None if state.deviation is None else state.deviation[systems],
                   pairs=subset_pairs(state.pairs, atom_map, system_map), pairs_positions=state.pairs_positions[atoms],
                   time_fs=state.time_fs[systems])


def evaluate(model: torch.nn.Module, state_batch: AtomsBatch, pairs: Pairs, fixed: torch.Tensor):
    out = model(state_batch, pairs)
    forces = out["forces"].detach()
    forces = torch.where(fixed[:, None], torch.zeros_like(forces), forces)
    return out["energy"].detach(), forces, out.get("force_deviation")


def initial_state(model: torch.nn.Module, systems: Sequence[Atoms], *, temperature_K: float | Sequence[float] = 0.0,
                  seed: int, fixed: Sequence[np.ndarray] | None = None, skin_A: float = 0.5,
                  dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> MDState:
    """State from ASE Atoms; velocities from the Atoms if set, else Maxwell–Boltzmann at temperature_K
    (seeded), with the centre-of-mass motion of each system removed."""
    dtype = dtype or model.dtype
    device = device or model.device
    batch = AtomsBatch.from_atoms(systems, dtype=dtype, device=device)
    masses = torch.as_tensor(np.concatenate([a.get_masses() for a in systems]), dtype=dtype, device=device)
    fixed_mask = torch.as_tensor(np.concatenate(fixed) if fixed is not None else np.zeros(len(masses), bool),
                                 dtype=torch.bool, device=device)
    temps = np.broadcast_to(np.asarray(temperature_K, dtype=np.float64), (len(systems),))
    rng = np.random.default_rng(seed)
    velocities = []
    for atoms, t in zip(systems, temps):
        v = atoms.get_velocities()
        if v is None or not np.any(v):
            sigma = np.sqrt(KB_EV_PER_K * t / atoms.get_masses())[:, None]
            v = rng.normal(size=(len(atoms), 3)) * sigma
            if len(atoms) > 1:
                v -= (atoms.get_masses()[:, None] * v).sum(0) / atoms.get_masses().sum()
        velocities.append(v)
    velocities = torch.as_tensor(np.concatenate(velocities), dtype=dtype, device=device)
    velocities = torch.where(fixed_mask[:, None], torch.zeros_like(velocities), velocities)
    pairs = batch.pairs(model.cutoff_A + skin_A)
    energy, forces, deviation = evaluate(model, batch, pairs, fixed_mask)
    return MDState(batch, velocities, masses, fixed_mask, energy, forces, deviation, pairs, batch.positions.clone(),
                   skin_A, 0, torch.zeros(len(systems), dtype=dtype, device=device))


# When a system is due, the systems past this fraction of their allowance are rebuilt with it: each
# rebuild merges new pairs into the whole batch's list (a copy of all of it), and in a batch of
# hundreds of cells one is due nearly every step; grouped, one merge serves several steps.
CO_REBUILD_FRACTION = 0.75


def with_positions(model: torch.nn.Module, state: MDState, positions: torch.Tensor, **changes) -> MDState:
    """New positions → new forces. A system's pairs are rebuilt only when one of its atoms moved
    over skin/2 since its last build (with it, those past CO_REBUILD_FRACTION of that): one hot
    system (an ion impact) does not make the whole batch rebuild every step."""
    batch = state.batch.with_positions(positions)
    pairs, reference = state.pairs, state.pairs_positions
    displacement = per_system_max((positions - reference).norm(dim=1), batch.system, batch.n_systems)
    if bool((displacement > 0.5 * state.skin_A).any()):
        moved = displacement > CO_REBUILD_FRACTION * 0.5 * state.skin_A
        systems = torch.nonzero(moved).squeeze(1).cpu().numpy()
        fresh = batch.pairs(model.cutoff_A + state.skin_A, systems)
        pairs = fresh if len(systems) == batch.n_systems else replace_systems(pairs, fresh, systems, batch.n_systems)
        reference = torch.where(moved[batch.system][:, None], positions, reference)
    energy, forces, deviation = evaluate(model, batch, pairs, state.fixed)
    return replace(state, batch=batch, energy=energy, forces=forces, deviation=deviation, pairs=pairs,
                   pairs_positions=reference, **changes)
