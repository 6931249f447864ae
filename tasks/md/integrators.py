"""Pure step functions over a batched MDState: each takes a state and returns the next one.

Per-system settings (temperature, time step) are tensors of shape (B,) or scalars.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from tasks.md.state import FS, KB_EV_PER_K, MDState, with_positions


def _per_atom(state: MDState, value) -> torch.Tensor:
    """A scalar or per-system (B,) value as a per-atom column (N, 1)."""
    value = torch.as_tensor(value, dtype=state.velocities.dtype, device=state.velocities.device)
    if value.ndim == 0:
        value = value.expand(state.n_systems)
    return value[state.batch.system][:, None]


def _free(state: MDState, velocities: torch.Tensor) -> torch.Tensor:
    return torch.where(state.fixed[:, None], torch.zeros_like(velocities), velocities)


def _advanced(new: MDState, old: MDState, velocities: torch.Tensor, timestep_fs) -> MDState:
    """The moved state with its new velocities, one step and timestep_fs (per system) later."""
    elapsed = torch.as_tensor(timestep_fs, dtype=old.time_fs.dtype, device=old.time_fs.device)
    return replace(new, velocities=velocities, step=old.step + 1, time_fs=old.time_fs + elapsed.expand(old.n_systems))


def velocity_verlet_step(state: MDState, model, *, timestep_fs) -> MDState:
    """NVE. timestep_fs: scalar or (B,)."""
    dt = _per_atom(state, timestep_fs) * FS
    accel = state.forces / state.masses[:, None]
    half = _free(state, state.velocities + 0.5 * dt * accel)
    positions = state.batch.positions + dt * half
    new = with_positions(model, state, positions)
    velocities = _free(state, half + 0.5 * dt * new.forces / state.masses[:, None])
    return _advanced(new, state, velocities, timestep_fs)


def langevin_step(state: MDState, model, *, timestep_fs, temperature_K, friction_per_fs: float,
                  generator: torch.Generator) -> MDState:
    """NVT Langevin (BAOAB splitting), per-system temperature. The generator carries the seed."""
    dt = _per_atom(state, timestep_fs) * FS
    gamma = friction_per_fs / FS
    kT = _per_atom(state, temperature_K) * KB_EV_PER_K
    inv_m = 1.0 / state.masses[:, None]
    v = state.velocities + 0.5 * dt * state.forces * inv_m  # B
    positions = state.batch.positions + 0.5 * dt * _free(state, v)  # A
    c1 = torch.exp(-gamma * dt)  # O
    noise = torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
    v = c1 * v + torch.sqrt((1 - c1 ** 2) * kT * inv_m) * noise
    v = _free(state, v)
    positions = positions + 0.5 * dt * v  # A
    new = with_positions(model, state, positions)
    v = _free(state, v + 0.5 * dt * new.forces * inv_m)  # B
    return _advanced(new, state, v, timestep_fs)


def berendsen_step(state: MDState, model, *, timestep_fs, temperature_K, tau_fs: float) -> MDState:
    """Velocity Verlet followed by Berendsen velocity rescaling towards temperature_K (per system)."""
    new = velocity_verlet_step(state, model, timestep_fs=timestep_fs)
    current = torch.clamp(new.temperature_K(), min=1e-8)
    target = torch.as_tensor(temperature_K, dtype=current.dtype, device=current.device).expand(state.n_systems)
    ratio = torch.as_tensor(timestep_fs, dtype=current.dtype, device=current.device) / tau_fs
    scale = torch.sqrt(torch.clamp(1 + ratio * (target / current - 1), 0.8, 1.25))
    return replace(new, velocities=new.velocities * scale[new.batch.system][:, None])


def adaptive_timestep_fs(state: MDState, *, max_displacement_A: float, max_timestep_fs: float,
                         min_timestep_fs: float = 1e-4, max_energy_step_eV: float | None = None) -> torch.Tensor:
    """Per-system step so that no atom moves more than d under its current velocity and
    acceleration (|v| dt + |a| dt²/2 = d), within [min, max] (for ion impacts, where a projectile
    at keV energies would otherwise jump through its target). d is max_displacement_A, or less where
    a strong force would do more than max_energy_step_eV of work over it (|F| d ≤ e_max, as LAMMPS's
    fix dt/reset): in a repulsion's switching region the force changes within a fraction of an Å.
    Fixed atoms do not count."""
    speed = state.velocities.norm(dim=1)  # Å per ASE time unit
    force = state.forces.norm(dim=1)
    accel = force / state.masses
    d = torch.full_like(speed, max_displacement_A)
    if max_energy_step_eV is not None:
        d = torch.minimum(d, max_energy_step_eV / torch.clamp(force, min=1e-12))
    # the positive root of |a|/2 dt² + |v| dt − d = 0, written to stay exact as |a| → 0
    dt = 2 * d / (speed + torch.sqrt(speed ** 2 + 2 * accel * d))
    dt = torch.where(state.fixed | ~torch.isfinite(dt), torch.full_like(dt, float("inf")), dt)
    largest = torch.full((state.n_systems,), float("inf"), dtype=dt.dtype, device=dt.device)
    smallest = largest.scatter_reduce(0, state.batch.system, dt, reduce="amin")
    return torch.clamp(smallest / FS, min=min_timestep_fs, max=max_timestep_fs)
