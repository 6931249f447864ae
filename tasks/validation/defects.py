"""Point-defect formation energies, as the MoS2 study defines them:

    E_f = E_defect − E_perfect + Σ_removed μ_X − Σ_added μ_Y

with the chemical potentials μ of isolated atoms (the study's choice) or of elemental reference
crystals (relaxed with their cells); the defect cell is relaxed at the perfect cell's shape.
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


def relaxed_energy_eV(atoms: Atoms, calculator: CalculatorFactory, cell: str = "none", fmax_eV_per_A: float = 1e-3,
                      max_steps: int = 2000) -> float:
    return float(relaxed(atoms, calculator, cell, fmax_eV_per_A, max_steps).get_potential_energy())


def formation_energy_eV(defect_energy_eV: float, perfect_energy_eV: float, exchange: Mapping[str, int],
                        chemical_potentials_eV: Mapping[str, float]) -> float:
    """E_f from the relaxed defect cell's and the perfect cell's energies; ``exchange``: atoms of
    each element taken out (positive) or put in (negative)."""
    return float(defect_energy_eV - perfect_energy_eV + sum(n * chemical_potentials_eV[s] for s, n in exchange.items()))


def elemental_chemical_potentials_eV(references: Mapping[str, Atoms], calculator: CalculatorFactory,
                                     fmax_eV_per_A: float = 1e-3, max_steps: int = 2000) -> dict[str, float]:
    """μ of each element as the energy per atom of its reference (a crystal of that element alone),
    relaxed with its cell."""
    out = {}
    for element, atoms in references.items():
        if set(atoms.get_chemical_symbols()) != {element}:
            raise ValueError(f"the reference of {element} holds {atoms.get_chemical_formula()}")
        out[element] = relaxed_energy_eV(atoms, calculator, "full", fmax_eV_per_A, max_steps) / len(atoms)
    return out
