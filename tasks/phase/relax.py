"""Relaxations of the phase diagram's cells, positions and cell together (the hull compares
relaxed energies): with a potential through its ASE calculator, or with the labeler, whose path is
kept, thinned by farthest-point sampling, so that it can train potentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pydantic import Field

from tasks.active.initial import farthest_point_indices
from tasks.labeling import labeler_atoms
from tasks.outcome import Outcome, run_each
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel
from tasks.structures import Structure


class RelaxSettings(StrictModel):
    fmax_eV_per_A: float = Field(0.05, gt=0, description="converged when every force (and the cell's "
                                 "stress times volume) is below this")
    max_steps: int = Field(200, ge=1)
    cell: bool = Field(True, description="relax the cell too (FrechetCellFilter, hydrostatic and shear)")
    keep_fraction: float = Field(0.3, gt=0, le=1, description="labeler relaxations: the share of the path's "
                                 "snapshots kept as training frames (farthest-point on energy)")


@dataclass(frozen=True, eq=False)
class Relaxed:
    numbers: np.ndarray
    positions_A: np.ndarray
    cell_A: np.ndarray
    energy_eV: float
    max_force_eV_per_A: float
    converged: bool
    steps: int
    path: list[dict] = field(default_factory=list)  # labeler snapshots kept for training

    @property
    def energy_eV_per_atom(self) -> float:
        return self.energy_eV / len(self.numbers)


def relax(atoms: Atoms, settings: RelaxSettings, record_path: bool = False) -> Relaxed:
    """FIRE on ``atoms`` (its calculator attached), the cell through FrechetCellFilter if asked."""
    target = FrechetCellFilter(atoms) if settings.cell else atoms
    optimiser = FIRE(target, logfile=None)
    path: list[dict] = []
    if record_path:
        def record() -> None:
            stress = np.asarray(atoms.get_stress(voigt=True)) if atoms.pbc.all() else np.full(6, np.nan)
            path.append({"positions_A": atoms.positions.copy(), "cell_A": atoms.cell.array.copy(),
                         "energy_eV": float(atoms.get_potential_energy()),
                         "forces_eV_per_A": np.asarray(atoms.get_forces(), dtype=np.float64).copy(),
                         "stress_eV_per_A3": stress})
        optimiser.attach(record)
    converged = bool(optimiser.run(fmax=settings.fmax_eV_per_A, steps=settings.max_steps))
    energy = float(atoms.get_potential_energy())
    if not np.isfinite(energy):
        raise RuntimeError(f"relaxation reached a non-finite energy ({energy})")
    max_force = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
    if path:
        energies = np.array([p["energy_eV"] for p in path])
        keep = set(farthest_point_indices(energies, settings.keep_fraction)) | {len(path) - 1}
        path = [dict(p, step=i) for i, p in enumerate(path) if i in keep]
    return Relaxed(atoms.numbers.copy(), atoms.positions.copy(), atoms.cell.array.copy(), energy, max_force,
                   converged, int(optimiser.nsteps), path)


def _relax_with_labeler(structure: Structure, labeler: Any, settings: RelaxSettings) -> Relaxed:
    return relax(labeler_atoms(structure, labeler), settings, record_path=True)


def labeler_relax_batch(keys: list[str], structures: list[Structure], labeler: Any,
                        settings: RelaxSettings) -> list[Outcome]:
    """Labeler relaxations, one failure failing only its structure."""
    return run_each(_relax_with_labeler, keys, structures, labeler, settings)


def _relax_with_calculator(structure: Structure, calculator, settings: RelaxSettings) -> Relaxed:
    atoms = structure.to_atoms()
    atoms.calc = calculator
    return relax(atoms, settings)


def potential_relax_batch(keys: list[str], structures: list[Structure], potential: PotentialFiles,
                          settings: RelaxSettings) -> list[Outcome]:
    """Relaxations with the potential, loaded once per task."""
    from tasks.nnp.calculator import NNPCalculator

    return run_each(_relax_with_calculator, keys, structures, NNPCalculator(potential.load()), settings)
