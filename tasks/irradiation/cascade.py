"""Many ion impacts advanced together as one batched MD state.

Each system is a sheet plus its ion. Atoms in the ``bath`` (the sheet's border strip during the
impact, every sheet atom while thermalising) follow Langevin dynamics, the others plain velocity
Verlet (BAOAB with no friction is exactly velocity Verlet). Every system has its own time step,
clock, end time and random stream, so a system's trajectory does not depend on which others share
its batch. Atoms that fly away from the sheet are recorded and taken out of their system, and
systems that reach their end time leave the batch, so no step is spent on finished impacts.

Energy bookkeeping: E_pot + E_kin + ``exchanged_eV`` stays constant up to the integration error,
where ``exchanged_eV`` sums what left the system through the bath, the removal of the sheet's
centre-of-mass drift and the removed atoms; its change is the NVE core's energy drift.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from tasks.md.state import FS, KB_EV_PER_K, MDState, evaluate, subset, with_positions
from tasks.nnp.batch import per_system_max, per_system_sum
from tasks.nnp.graph import index_maps, subset_pairs

ION = 3  # origin code of the projectile (tasks.irradiation.damage.ORIGINS)


@dataclass(frozen=True, eq=False)
class Cascade:
    md: MDState
    origin: torch.Tensor  # (N,) origin layer code of each atom (ION for the projectile)
    index: torch.Tensor  # (N,) each atom's index in its own system as built
    bath: torch.Tensor  # (N,) bool: atoms under the Langevin thermostat
    impact: torch.Tensor  # (B,) the caller's number of each system
    top_z_A: torch.Tensor  # (B,) pristine top plane: atoms beyond it by escape distance leave
    bottom_z_A: torch.Tensor  # (B,)
    end_fs: torch.Tensor  # (B,)
    exchanged_eV: torch.Tensor  # (B,)
    start_energy_eV: torch.Tensor  # (B,) E_pot + E_kin when the impact began
    max_drift_eV: torch.Tensor  # (B,) largest |energy drift| so far
    border_max_kinetic_eV: torch.Tensor  # (B,) hottest bath atom seen during the impact
    steps: torch.Tensor  # (B,) long
    generators: tuple[torch.Generator, ...]  # one random stream per system

    @property
    def n_systems(self) -> int:
        return self.md.n_systems

    def total_energy_eV(self) -> torch.Tensor:
        return self.md.energy + self.md.kinetic_energy()

    def drift_eV(self) -> torch.Tensor:
        return self.total_energy_eV() + self.exchanged_eV - self.start_energy_eV


@dataclass(frozen=True)
class Escape:
    """An atom that left its sheet in flight."""

    impact: int
    index: int
    number: int
    origin: int
    position_A: np.ndarray
    velocity_A_per_fs: np.ndarray
    time_fs: float
    upward: bool


@dataclass(frozen=True)
class Finished:
    """A system at its end (time reached, or stopped by non-finite forces)."""

    impact: int
    numbers: np.ndarray
    positions_A: np.ndarray
    velocities_A_per_fs: np.ndarray
    origin: np.ndarray
    index: np.ndarray
    cell_A: np.ndarray
    pbc: np.ndarray
    time_fs: float
    steps: int
    energy_drift_eV: float
    max_energy_drift_eV: float
    border_max_kinetic_eV: float
    finite: bool


def _per_atom(cascade: Cascade, values: torch.Tensor) -> torch.Tensor:
    return values[cascade.md.batch.system][:, None]


def bath_noise(cascade: Cascade) -> torch.Tensor:
    """Gaussian noise (n_bath, 3) for the bath atoms, system by system from each system's own
    generator: what a system draws depends on itself alone."""
    md = cascade.md
    counts = torch.bincount(md.batch.system[cascade.bath], minlength=md.n_systems).tolist()
    # drawn on the CPU, where the generators live, then moved: a GPU run draws what a CPU run does
    parts = [torch.randn((n, 3), generator=g, dtype=md.velocities.dtype) for n, g in zip(counts, cascade.generators)]
    return torch.cat(parts).to(md.velocities.device) if parts else md.velocities[:0]


def step(cascade: Cascade, model, timestep_fs: torch.Tensor, bath_temperature_K: torch.Tensor,
         friction_per_fs: float) -> Cascade:
    """One BAOAB step with per-system time steps; friction only on bath atoms."""
    md = cascade.md
    dt = _per_atom(cascade, timestep_fs) * FS
    inv_m = 1.0 / md.masses[:, None]
    free = ~md.fixed[:, None]
    v = torch.where(free, md.velocities + 0.5 * dt * md.forces * inv_m, 0.0)
    positions = md.batch.positions + 0.5 * dt * v
    if bool(cascade.bath.any()):
        bath = cascade.bath
        c1 = torch.exp(-friction_per_fs * dt[bath] / FS)
        kT = _per_atom(cascade, bath_temperature_K)[bath] * KB_EV_PER_K
        before = v[bath]
        after = c1 * before + torch.sqrt((1 - c1 ** 2) * kT * inv_m[bath]) * bath_noise(cascade)
        after = torch.where(free[bath], after, 0.0)
        v = v.clone()
        v[bath] = after
        given = 0.5 * md.masses[bath] * (before.pow(2).sum(1) - after.pow(2).sum(1))
        exchanged = cascade.exchanged_eV + per_system_sum(given, md.batch.system[bath], md.n_systems)
    else:
        exchanged = cascade.exchanged_eV
    positions = positions + 0.5 * dt * v
    new = with_positions(model, md, positions)
    v = torch.where(free, v + 0.5 * dt * new.forces * inv_m, 0.0)
    new = replace(new, velocities=v, step=md.step + 1, time_fs=md.time_fs + timestep_fs)
    return replace(cascade, md=new, exchanged_eV=exchanged, steps=cascade.steps + 1)


def remove_sheet_drift(cascade: Cascade, reach_A: float = 3.0) -> Cascade:
    """Take each sheet's centre-of-mass velocity out (the ion, and atoms further than ``reach_A``
    beyond the pristine outer planes, on their way out, keep theirs); the kinetic energy this
    removes is counted as exchanged."""
    md = cascade.md
    z, system = md.batch.positions[:, 2], md.batch.system
    near = (z < cascade.top_z_A[system] + reach_A) & (z > cascade.bottom_z_A[system] - reach_A)
    sheet = (cascade.origin != ION) & ~md.fixed & near
    weight = torch.where(sheet, md.masses, 0.0)
    momentum = per_system_sum(weight[:, None] * md.velocities, md.batch.system, md.n_systems)
    mass = torch.clamp(per_system_sum(weight, md.batch.system, md.n_systems), min=1e-12)
    drift = momentum / mass[:, None]
    before = md.kinetic_energy()
    velocities = torch.where(sheet[:, None], md.velocities - drift[md.batch.system], md.velocities)
    md = replace(md, velocities=velocities)
    return replace(cascade, md=md, exchanged_eV=cascade.exchanged_eV + before - md.kinetic_energy())


def escaping(cascade: Cascade, distance_A: float) -> torch.Tensor:
    """(N,) bool: atoms further than ``distance_A`` beyond the pristine sheet's outer planes and
    moving away from it."""
    md = cascade.md
    z, vz = md.batch.positions[:, 2], md.velocities[:, 2]
    system = md.batch.system
    up = (z > cascade.top_z_A[system] + distance_A) & (vz > 0)
    down = (z < cascade.bottom_z_A[system] - distance_A) & (vz < 0)
    return (up | down) & ~md.fixed


def _keep(cascade: Cascade, atoms: torch.Tensor, systems: torch.Tensor) -> Cascade:
    atoms = atoms & systems[cascade.md.batch.system]
    kept = systems.cpu().numpy()
    return replace(cascade, md=subset(cascade.md, atoms, systems), origin=cascade.origin[atoms],
                   index=cascade.index[atoms], bath=cascade.bath[atoms],
                   **{name: getattr(cascade, name)[systems] for name in (
                       "impact", "top_z_A", "bottom_z_A", "end_fs", "exchanged_eV", "start_energy_eV",
                       "max_drift_eV", "border_max_kinetic_eV", "steps")},
                   generators=tuple(g for g, k in zip(cascade.generators, kept) if k))


def remove_escaped(cascade: Cascade, model, distance_A: float) -> tuple[Cascade, list[Escape]]:
    """Record and remove escaping atoms. Their systems are evaluated anew (the others keep their
    forces, and every system its neighbour list), and the energy the removed atoms carried is
    counted as exchanged."""
    leaving = escaping(cascade, distance_A)
    if not bool(leaving.any()):
        return cascade, []
    md = cascade.md
    velocities = md.velocities * FS  # Å/fs (FS: one fs in ASE time units)
    escapes = [Escape(int(cascade.impact[md.batch.system[a]]), int(cascade.index[a]), int(md.batch.numbers[a]),
                      int(cascade.origin[a]), md.batch.positions[a].detach().cpu().numpy().copy(),
                      velocities[a].detach().cpu().numpy().copy(), float(md.time_fs[md.batch.system[a]]),
                      bool(md.velocities[a, 2] > 0))
               for a in torch.nonzero(leaving).squeeze(1).tolist()]
    before = cascade.total_energy_eV()
    everyone = torch.ones(md.n_systems, dtype=torch.bool, device=leaving.device)
    kept = _keep(cascade, ~leaving, everyone)
    changed = torch.zeros(md.n_systems, dtype=torch.bool, device=leaving.device)
    changed[md.batch.system[leaving]] = True
    kept = replace(kept, md=reevaluated(model, kept.md, changed))
    return replace(kept, exchanged_eV=kept.exchanged_eV + before - kept.total_energy_eV()), escapes


def reevaluated(model, md: MDState, systems: torch.Tensor) -> MDState:
    """``md`` with energy and forces of ``systems`` (B,) bool evaluated anew, the others as they were."""
    atoms = systems[md.batch.system]
    atom_map, system_map = index_maps(atoms, systems)
    energy, forces, deviation = evaluate(model, md.batch.subset(atoms, systems, system_map),
                                         subset_pairs(md.pairs, atom_map, system_map), md.fixed[atoms])
    new_energy, new_forces = md.energy.clone(), md.forces.clone()
    new_energy[systems], new_forces[atoms] = energy, forces
    new_deviation = None
    if md.deviation is not None and deviation is not None:
        new_deviation = md.deviation.clone()
        new_deviation[systems] = deviation
    return replace(md, energy=new_energy, forces=new_forces, deviation=new_deviation)


def take_finished(cascade: Cascade, done: torch.Tensor, finite: torch.Tensor) -> tuple[Cascade, list[Finished]]:
    """Systems flagged ``done`` (B,) leave the batch as Finished records."""
    if not bool(done.any()):
        return cascade, []
    md = cascade.md
    numbers, positions = md.batch.numbers.cpu().numpy(), md.batch.positions.detach().cpu().numpy()
    velocities = (md.velocities * FS).detach().cpu().numpy()  # Å/fs
    origin, index = cascade.origin.cpu().numpy(), cascade.index.cpu().numpy()
    drift = cascade.drift_eV().detach().cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(md.batch.n_atoms)])
    out = []
    for b in torch.nonzero(done).squeeze(1).tolist():
        atoms = slice(starts[b], starts[b + 1])
        out.append(Finished(
            impact=int(cascade.impact[b]), numbers=numbers[atoms], positions_A=positions[atoms],
            velocities_A_per_fs=velocities[atoms], origin=origin[atoms], index=index[atoms],
            cell_A=md.batch.cells[b].detach().cpu().numpy(), pbc=md.batch.pbc[b].copy(),
            time_fs=float(md.time_fs[b]), steps=int(cascade.steps[b]), energy_drift_eV=float(drift[b]),
            max_energy_drift_eV=float(cascade.max_drift_eV[b]),
            border_max_kinetic_eV=float(cascade.border_max_kinetic_eV[b]), finite=bool(finite[b])))
    everyone = torch.ones(md.batch.positions.shape[0], dtype=torch.bool, device=done.device)
    return _keep(cascade, everyone, ~done), out


def finite_systems(cascade: Cascade) -> torch.Tensor:
    md = cascade.md
    bad_atoms = ~torch.isfinite(md.forces).all(dim=1) | ~torch.isfinite(md.batch.positions).all(dim=1)
    bad = per_system_sum(bad_atoms.to(md.energy.dtype), md.batch.system, md.n_systems) > 0
    return ~bad & torch.isfinite(md.energy)


def border_kinetic_eV(cascade: Cascade) -> torch.Tensor:
    """(B,) the largest kinetic energy of a bath atom of each system (0 with no bath atoms)."""
    md = cascade.md
    kinetic = 0.5 * md.masses * md.velocities.pow(2).sum(1)
    return per_system_max(torch.where(cascade.bath, kinetic, 0.0), md.batch.system, md.n_systems)
