"""Point-defect formation energies, as the MoS2 study defines them:

    E_f = E_defect − E_perfect + Σ_removed μ_X − Σ_added μ_Y

with the chemical potentials μ of isolated atoms (the study's choice); the defect cell is relaxed at
the perfect cell's shape.
"""

from __future__ import annotations

from typing import Mapping

from ase import Atoms

from tasks.validation.relax import CalculatorFactory, relaxed


def isolated_atom_energy_eV(symbol: str, calculator: CalculatorFactory, box_A: float = 14.0) -> float:
    """One atom alone, not periodic, as the active-learning recipe labels isolated atoms."""
    from tasks.active.initial import isolated_atoms

    [atom] = isolated_atoms([symbol], box_A)
    atom.calc = calculator(atom)
    return float(atom.get_potential_energy())


def formation_energy_eV(perfect_energy_eV: float, defect: Atoms, calculator: CalculatorFactory,
                        exchange: Mapping[str, int], chemical_potentials_eV: Mapping[str, float],
                        fmax_eV_per_A: float = 1e-3, max_steps: int = 2000) -> float:
    """E_f of ``defect`` (relaxed here, cell fixed) against a perfect cell of the given energy;
    ``exchange``: atoms of each element taken out (positive) or put in (negative)."""
    energy = relaxed(defect, calculator, "none", fmax_eV_per_A, max_steps).get_potential_energy()
    return float(energy - perfect_energy_eV + sum(n * chemical_potentials_eV[s] for s, n in exchange.items()))
