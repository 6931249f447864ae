"""FIRE relaxation at fixed cell, per system in one batch (Bitzek et al. 2006, as ASE's FIRE)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from tasks.md.state import initial_state, with_positions
from tasks.nnp.batch import per_system_max, per_system_sum


@dataclass(frozen=True)
class FireSettings:
    fmax_eV_per_A: float = 0.05
    max_steps: int = 500
    timestep: float = 0.1  # ASE time units, as ASE's FIRE
    max_timestep: float = 1.0
    max_step_A: float = 0.2
    n_min: int = 5
    f_inc: float = 1.1
    f_dec: float = 0.5
    alpha_start: float = 0.1
    f_alpha: float = 0.99


@dataclass(frozen=True, eq=False)
class RelaxResult:
    systems: list[Atoms]
    energy_eV: np.ndarray  # (B,)
    max_force_eV_per_A: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    steps: int


def fire_relax(model, systems: Sequence[Atoms], settings: FireSettings = FireSettings(), *,
               fixed: Sequence[np.ndarray] | None = None) -> RelaxResult:
    state = initial_state(model, systems, temperature_K=0.0, seed=0, fixed=fixed)
    state = replace(state, velocities=torch.zeros_like(state.velocities))
    b = state.n_systems
    device = state.velocities.device
    dt = torch.full((b,), settings.timestep, dtype=state.velocities.dtype, device=device)
    alpha = torch.full((b,), settings.alpha_start, dtype=dt.dtype, device=device)
    n_positive = torch.zeros(b, dtype=torch.long, device=device)
    system = state.batch.system
    for step in range(settings.max_steps):
        fmax = per_system_max(state.forces.norm(dim=1), system, b)
        done = fmax < settings.fmax_eV_per_A
        if bool(done.all()):
            break
        f, v = state.forces, state.velocities
        power = per_system_sum((f * v).sum(dim=1), system, b)
        v_norm = per_system_sum(v.pow(2).sum(dim=1), system, b).sqrt()
        f_norm = torch.clamp(per_system_sum(f.pow(2).sum(dim=1), system, b).sqrt(), min=1e-30)
        mix = alpha[system][:, None]
        v = (1 - mix) * v + mix * (v_norm / f_norm)[system][:, None] * f
        if step == 0:  # as ASE: the first step starts from rest and adapts nothing
            uphill = grow = torch.zeros(b, dtype=torch.bool, device=device)
            n_positive = n_positive - 1
        else:
            uphill = power <= 0
            grow = (~uphill) & (n_positive > settings.n_min)
        dt = torch.where(uphill, dt * settings.f_dec, torch.where(grow, torch.clamp(dt * settings.f_inc, max=settings.max_timestep), dt))
        alpha = torch.where(uphill, torch.full_like(alpha, settings.alpha_start), torch.where(grow, alpha * settings.f_alpha, alpha))
        n_positive = torch.where(uphill, torch.zeros_like(n_positive), n_positive + 1)
        v = torch.where(uphill[system][:, None], torch.zeros_like(v), v)
        v = v + dt[system][:, None] * f
        dr = dt[system][:, None] * v
        dr_norm = per_system_sum(dr.pow(2).sum(dim=1), system, b).sqrt()
        scale = torch.clamp(settings.max_step_A / torch.clamp(dr_norm, min=1e-30), max=1.0)
        dr = dr * scale[system][:, None]
        dr = torch.where(done[system][:, None], torch.zeros_like(dr), dr)  # converged systems stay put
        v = torch.where(done[system][:, None], torch.zeros_like(v), v)
        state = replace(with_positions(model, state, state.batch.positions + dr), velocities=v)
    fmax = per_system_max(state.forces.norm(dim=1), system, b)
    return RelaxResult(state.batch.to_atoms(), state.energy.cpu().numpy(), fmax.cpu().numpy(),
                       (fmax < settings.fmax_eV_per_A).cpu().numpy(), step)
