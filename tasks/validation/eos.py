"""Equations of state and energy–strain curves, and the Cr(1-x)S study's Δ between two of them.

Δ = ∫ |E_a(V) − E_b(V)| dV / (V_max − V_min) over the scanned volumes, each curve a sixth-order
polynomial fitted to its points (energies per atom): the study scans −10% to +20% on every lattice
vector and quotes Δ in meV/atom.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from tasks.validation.elastic import strained
from tasks.validation.relax import CalculatorFactory


def scaled_cells(atoms: Atoms, linear_strains: Sequence[float]) -> list[Atoms]:
    """Every lattice vector scaled by 1 + s, atoms following (the study's isotropic strains)."""
    return [strained(atoms, np.eye(3) * s) for s in linear_strains]


def uniaxial_cells(atoms: Atoms, axis: int, strains: Sequence[float]) -> list[Atoms]:
    """The Cartesian strain ε_aa = s along ``axis`` (an energy–strain curve): a lattice vector with
    a component across that axis (a hexagonal cell's b along x) stretches by less than s."""
    out = []
    for s in strains:
        eps = np.zeros((3, 3))
        eps[axis, axis] = s
        out.append(strained(atoms, eps))
    return out


def biaxial_cells(atoms: Atoms, strains: Sequence[float]) -> list[Atoms]:
    """x and y scaled together by 1 + s (a sheet's biaxial curve)."""
    return [strained(atoms, np.diag([s, s, 0.0])) for s in strains]


def energies_per_atom(cells: Sequence[Atoms], calculator: CalculatorFactory) -> np.ndarray:
    """Static energies (eV/atom) of each cell, a fresh calculator each."""
    out = []
    for atoms in cells:
        work = atoms.copy()
        work.calc = calculator(work)
        out.append(work.get_potential_energy() / len(work))
    return np.array(out)


def delta_eV_per_atom(volumes_a: Sequence[float], energies_a: Sequence[float], volumes_b: Sequence[float],
                      energies_b: Sequence[float], order: int = 6, points: int = 4001) -> float:
    """Mean absolute difference of two E(V) curves, each a polynomial of ``order`` fitted to its
    points, over the volumes both cover (composite Simpson on ``points`` volumes: the integrand is
    smooth except where the curves cross, which costs far less than the fits' own error)."""
    from scipy.integrate import simpson

    va, vb = np.asarray(volumes_a, dtype=float), np.asarray(volumes_b, dtype=float)
    low, high = max(va.min(), vb.min()), min(va.max(), vb.max())
    if not high > low:
        raise ValueError("the two curves share no volume range")
    fit_a = np.polynomial.Polynomial.fit(va, np.asarray(energies_a, dtype=float), order)
    fit_b = np.polynomial.Polynomial.fit(vb, np.asarray(energies_b, dtype=float), order)
    grid = np.linspace(low, high, points)
    return float(simpson(np.abs(fit_a(grid) - fit_b(grid)), x=grid) / (high - low))
