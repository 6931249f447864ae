"""Phonons by phonopy's finite displacements: the displaced supercells are independent calculations
(a campaign fans them out as labeling tasks), phonopy builds the force constants from their forces.

Frequencies are in THz (phonopy's unit); imaginary modes come out negative.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from tasks.validation.relax import CalculatorFactory

# Γ–M–K–Γ of a hexagonal cell (a sheet like MoS2), in reciprocal-lattice coordinates
HEXAGONAL_PATH = (("Γ", (0.0, 0.0, 0.0)), ("M", (0.5, 0.0, 0.0)), ("K", (1 / 3, 1 / 3, 0.0)), ("Γ", (0.0, 0.0, 0.0)))


def phonopy_of(atoms: Atoms, supercell: Sequence[int], distance_A: float = 0.01):
    """A Phonopy object on ``atoms`` (the unit cell, also taken as primitive) with its displacements."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    phonon = Phonopy(unit, supercell_matrix=np.diag([int(n) for n in supercell]))
    phonon.generate_displacements(distance=distance_A)
    return phonon


def displaced_cells(phonon, pbc=(True, True, True)) -> list[Atoms]:
    """The displaced supercells as ASE structures, in phonopy's order."""
    return [Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=pbc)
            for cell in phonon.supercells_with_displacements]


def forces_of(cells: Sequence[Atoms], calculator: CalculatorFactory) -> np.ndarray:
    out = []
    for atoms in cells:
        work = atoms.copy()
        work.calc = calculator(work)
        out.append(work.get_forces())
    return np.array(out)


def with_forces(phonon, forces: np.ndarray):
    """``phonon`` with its force constants from the displaced cells' forces (n_cells, n_atoms, 3)."""
    phonon.forces = np.asarray(forces, dtype=float)
    phonon.produce_force_constants()
    return phonon


def frequencies_THz(phonon, qpoints: Sequence[Sequence[float]]) -> np.ndarray:
    """(n_q, n_modes) frequencies at reduced q-points, ascending per q."""
    phonon.run_qpoints(np.asarray(qpoints, dtype=float))
    return np.asarray(phonon.qpoints.frequencies)


def band_structure(phonon, path=HEXAGONAL_PATH, points_per_segment: int = 51) -> tuple[np.ndarray, np.ndarray,
                                                                                        list[str]]:
    """Distances along the path (1/Å as phonopy gives them), frequencies (n_points, n_modes) and
    the labels of the path's corners."""
    from phonopy.phonon.band_structure import get_band_qpoints

    corners = [np.array(q) for _, q in path]
    segments = get_band_qpoints([corners], npoints=points_per_segment)
    phonon.run_band_structure(segments, labels=[name for name, _ in path])
    bands = phonon.band_structure
    return (np.concatenate(bands.distances), np.concatenate(bands.frequencies),
            [name for name, _ in path])


def gamma_frequencies_THz(atoms: Atoms, calculator: CalculatorFactory, supercell: Sequence[int],
                          distance_A: float = 0.01) -> np.ndarray:
    """The frequencies at Γ, computed end to end with one calculator."""
    phonon = phonopy_of(atoms, supercell, distance_A)
    with_forces(phonon, forces_of(displaced_cells(phonon, tuple(atoms.pbc)), calculator))
    return frequencies_THz(phonon, [[0.0, 0.0, 0.0]])[0]
