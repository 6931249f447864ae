"""Dimer curves: the energy of two atoms alone against their distance, which shows a potential's
short-range repulsion (and, for DP-Tab, its blend into the table)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from tasks.validation.relax import CalculatorFactory

DEFAULT_DISTANCES_A = tuple(np.round(np.arange(0.5, 5.0001, 0.1), 10))


def dimer_energies_eV(first: str, second: str, distances_A: Sequence[float], calculator: CalculatorFactory,
                      box_A: float = 20.0) -> np.ndarray:
    """E(r) of the pair along x in a periodic box of ``box_A`` (the images stay beyond any cutoff),
    relative to nothing: subtract the two isolated atoms for a binding curve."""
    out = []
    for r in distances_A:
        centre = box_A / 2
        atoms = Atoms([first, second], positions=[[centre - r / 2, centre, centre], [centre + r / 2, centre, centre]],
                      cell=[box_A] * 3, pbc=True)
        atoms.calc = calculator()
        out.append(atoms.get_potential_energy())
    return np.array(out)
