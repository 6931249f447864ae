"""Elastic constants from strain–stress fits: a sheet's in-plane C11, C12, C66 (N/m), Young's
modulus and Poisson's ratio, and a bulk crystal's Voigt matrix (GPa).

Each strained cell (ions relaxed at fixed cell, the constants then being the relaxed-ion ones
that Table II of the MoS2 study quotes) is an independent calculation, so a campaign can fan them
out; the constants are the slopes of stress against strain, fitted through every strain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import GPa

from tasks.validation.relax import CalculatorFactory, relaxed

EV_PER_A2_IN_N_PER_M = 16.021766339999999  # 1 eV/Å² = 16.02 J/m²
DEFAULT_STRAINS = (-0.01, -0.005, 0.005, 0.01)
# Voigt order of ASE's stress: xx, yy, zz, yz, xz, xy
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strain_matrix(component: int, strain: float) -> np.ndarray:
    """The symmetric strain tensor of one Voigt component (shear ones as engineering strain γ)."""
    a, b = _VOIGT[component]
    eps = np.zeros((3, 3))
    eps[a, b] += strain if a == b else strain / 2
    if a != b:
        eps[b, a] += strain / 2
    return eps


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """``atoms`` deformed by the strain tensor ``eps`` (cell rows r → r (1 + ε), atoms follow)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def stress_of(atoms: Atoms, calculator: CalculatorFactory, relax_ions: bool = True, fmax_eV_per_A: float = 1e-3,
              max_steps: int = 2000) -> np.ndarray:
    """Voigt stress (eV/Å³, ASE's sign: positive under tension), after relaxing the ions."""
    if relax_ions:
        return relaxed(atoms, calculator, "none", fmax_eV_per_A, max_steps).get_stress()
    work = atoms.copy()
    work.calc = calculator(work)
    return work.get_stress()


def _slope(strains: Sequence[float], values: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(strains, dtype=float), np.asarray(values, dtype=float), 1)[0])


@dataclass(frozen=True)
class SheetElastic:
    c11_N_per_m: float
    c12_N_per_m: float
    c66_N_per_m: float

    @property
    def young_N_per_m(self) -> float:
        return (self.c11_N_per_m ** 2 - self.c12_N_per_m ** 2) / self.c11_N_per_m

    @property
    def poisson(self) -> float:
        return self.c12_N_per_m / self.c11_N_per_m


def sheet_thickness_A(atoms: Atoms) -> float:
    """The cell's height normal to the sheet (V / in-plane area): stress × height = force per length."""
    return float(atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1])))


def sheet_elastic(atoms: Atoms, calculator: CalculatorFactory, strains: Sequence[float] = DEFAULT_STRAINS,
                  relax_ions: bool = True, fmax_eV_per_A: float = 1e-3, max_steps: int = 2000) -> SheetElastic:
    """C11 and C12 from uniaxial strain along x, C66 from in-plane shear, for a sheet in the xy plane."""
    height = sheet_thickness_A(atoms) * EV_PER_A2_IN_N_PER_M
    uniaxial = [stress_of(strained(atoms, strain_matrix(0, e)), calculator, relax_ions, fmax_eV_per_A, max_steps)
                for e in strains]
    shear = [stress_of(strained(atoms, strain_matrix(5, e)), calculator, relax_ions, fmax_eV_per_A, max_steps)
             for e in strains]
    return SheetElastic(c11_N_per_m=height * _slope(strains, [s[0] for s in uniaxial]),
                        c12_N_per_m=height * _slope(strains, [s[1] for s in uniaxial]),
                        c66_N_per_m=height * _slope(strains, [s[5] for s in shear]))


def bulk_elastic_GPa(atoms: Atoms, calculator: CalculatorFactory, strains: Sequence[float] = DEFAULT_STRAINS,
                     relax_ions: bool = True, fmax_eV_per_A: float = 1e-3, max_steps: int = 2000) -> np.ndarray:
    """The 6×6 Voigt matrix (GPa), C_ij = dσ_i/dε_j, symmetrised."""
    c = np.zeros((6, 6))
    for j in range(6):
        stresses = np.array([stress_of(strained(atoms, strain_matrix(j, e)), calculator, relax_ions, fmax_eV_per_A,
                                       max_steps) for e in strains])
        c[:, j] = [_slope(strains, stresses[:, i]) for i in range(6)]
    return (c + c.T) / 2 / GPa
