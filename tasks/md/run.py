"""Run a step function for n steps and record per-system observables every k steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tasks.md.state import MDState


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Observables with shape (frames, systems); positions (frames, atoms, 3) if kept."""

    step: np.ndarray
    time_fs: np.ndarray
    potential_energy_eV: np.ndarray
    kinetic_energy_eV: np.ndarray
    temperature_K: np.ndarray
    force_deviation_eV_per_A: np.ndarray | None
    positions_A: np.ndarray | None

    @property
    def total_energy_eV(self) -> np.ndarray:
        return self.potential_energy_eV + self.kinetic_energy_eV


def run(state: MDState, step: Callable[[MDState], MDState], n_steps: int, *, observe_every: int = 10,
        keep_positions: bool = False) -> tuple[MDState, Trajectory]:
    """``step`` is a step function with its model and settings bound (functools.partial)."""
    rows: dict[str, list] = {k: [] for k in ("step", "time", "epot", "ekin", "temp", "dev", "pos")}

    def observe(s: MDState) -> None:
        rows["step"].append(s.step)
        rows["time"].append(s.time_fs.cpu().numpy().copy())
        rows["epot"].append(s.energy.cpu().numpy().copy())
        rows["ekin"].append(s.kinetic_energy().cpu().numpy())
        rows["temp"].append(s.temperature_K().cpu().numpy())
        if s.deviation is not None:
            rows["dev"].append(s.deviation.cpu().numpy().copy())
        if keep_positions:
            rows["pos"].append(s.batch.positions.detach().cpu().numpy().copy())

    observe(state)
    for _ in range(n_steps):
        state = step(state)
        if state.step % observe_every == 0:
            observe(state)
    return state, Trajectory(np.array(rows["step"]), np.array(rows["time"]), np.array(rows["epot"]),
                             np.array(rows["ekin"]), np.array(rows["temp"]),
                             np.array(rows["dev"]) if rows["dev"] else None,
                             np.array(rows["pos"]) if keep_positions else None)
