"""Point-defect formation energies, as the MoS2 study defines them:

    E_f = E_defect − E_perfect + Σ_removed μ_X − Σ_added μ_Y

with the chemical potentials μ from isolated atoms (the study) or from elemental references; the
defect cell is relaxed at the perfect cell's shape.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from tasks.validation.relax import CalculatorFactory, relaxed


def with_defect(perfect: Atoms, removed: Sequence[int] = (), substituted: Mapping[int, str] | None = None) -> Atoms:
    """``perfect`` with the atoms ``removed`` taken out and the atoms of ``substituted`` changed to
    the element given (an antisite)."""
    atoms = perfect.copy()
    for index, symbol in (substituted or {}).items():
        atoms[index].symbol = symbol
    keep = np.ones(len(atoms), dtype=bool)
    keep[list(removed)] = False
    return atoms[keep]


def exchanged(perfect: Atoms, removed: Sequence[int] = (),
              substituted: Mapping[int, str] | None = None) -> dict[str, int]:
    """Atoms of each element that leave the cell (positive) or enter it (negative)."""
    out: dict[str, int] = {}
    for index in removed:
        out[perfect[index].symbol] = out.get(perfect[index].symbol, 0) + 1
    for index, symbol in (substituted or {}).items():
        if index in removed:
            continue
        out[perfect[index].symbol] = out.get(perfect[index].symbol, 0) + 1
        out[symbol] = out.get(symbol, 0) - 1
    return {k: v for k, v in out.items() if v}


def isolated_atom_energy_eV(symbol: str, calculator: CalculatorFactory, box_A: float = 20.0) -> float:
    """One atom alone in a periodic box wide enough that its images do not interact."""
    atom = Atoms(symbol, positions=[[box_A / 2] * 3], cell=[box_A] * 3, pbc=True)
    atom.calc = calculator()
    return float(atom.get_potential_energy())


def formation_energy_eV(perfect_energy_eV: float, defect: Atoms, calculator: CalculatorFactory,
                        exchange: Mapping[str, int], chemical_potentials_eV: Mapping[str, float],
                        fmax_eV_per_A: float = 1e-3) -> float:
    """E_f of ``defect`` (relaxed here, cell fixed) against a perfect cell of the given energy."""
    energy = relaxed(defect, calculator, "none", fmax_eV_per_A).get_potential_energy()
    return float(energy - perfect_energy_eV + sum(n * chemical_potentials_eV[s] for s, n in exchange.items()))
