"""Dimer curves: the energy of two atoms alone against their distance, which shows a potential's
short-range repulsion (and, for DP-Tab, its blend into the table). The cells are the active-learning
recipe's dimers (not periodic), so a potential is tested on what its labeler was asked."""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import Sequence

import numpy as np
from ase.calculators.calculator import CalculationFailed, CalculatorSetupError

from tasks.validation.relax import CalculatorFactory


def dimer_curves_eV(elements: Sequence[str], distances_A: Sequence[float], calculator: CalculatorFactory,
                    box_A: float = 14.0) -> dict[tuple[str, str], np.ndarray]:
    """E(r) of every pair of ``elements`` (alphabetical pairs), minus the two isolated atoms; NaN
    where the calculator fails."""
    from tasks.active.initial import dimers
    from tasks.validation.defects import isolated_atom_energy_eV

    symbols = sorted(set(elements))
    alone = {s: isolated_atom_energy_eV(s, calculator, box_A) for s in symbols}
    energies = []
    for atoms in dimers(symbols, distances_A, box_A):
        try:
            atoms.calc = calculator(atoms)
            energies.append(atoms.get_potential_energy())
        except (CalculationFailed, CalculatorSetupError):  # a point the labeler cannot do (an SCF that
            energies.append(np.nan)  # does not converge, a pair below its distance limit): a gap, not a lost curve
    pairs = list(combinations_with_replacement(symbols, 2))
    grid = np.array(energies).reshape(len(pairs), len(distances_A))
    return {(a, b): grid[k] - alone[a] - alone[b] for k, (a, b) in enumerate(pairs)}
