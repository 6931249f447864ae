"""Relaxation and bond lengths of the reference structures the properties start from."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

# the calculator for these atoms: a potential's, or the labeler's (which prepares the atoms: initial
# magnetic moments, a workdir of their own, the distance check)
CalculatorFactory = Callable[[Atoms], Calculator]
CellFreedom = Literal["none", "in_plane", "full"]

# Voigt (xx, yy, zz, yz, xz, xy): a sheet's cell relaxes in its plane only, its vacuum stays
_CELL_MASKS = {"in_plane": [True, True, False, False, False, True], "full": [True] * 6}


def relaxed(atoms: Atoms, calculator: CalculatorFactory, cell: CellFreedom = "none", fmax_eV_per_A: float = 1e-3,
            max_steps: int = 2000) -> Atoms:
    """A relaxed copy (positions, and the cell as ``cell`` allows) with its energy, forces and
    stress attached as a single-point result. RuntimeError if FIRE does not reach ``fmax``."""
    from ase.calculators.singlepoint import SinglePointCalculator

    work = atoms.copy()
    work.calc = calculator(work)
    target = work if cell == "none" else FrechetCellFilter(work, mask=_CELL_MASKS[cell])
    if not FIRE(target, logfile=None).run(fmax=fmax_eV_per_A, steps=max_steps):
        raise RuntimeError(f"relaxation of {work.get_chemical_formula()} did not reach fmax {fmax_eV_per_A} eV/Å "
                           f"in {max_steps} steps")
    results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
    if work.pbc.all():
        results["stress"] = work.get_stress()
    out = work.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out


def shortest_distances(atoms: Atoms) -> dict[tuple[str, str], float]:
    """The shortest distance (Å) between atoms of each pair of elements (alphabetical), periodic
    images included: MoS2's d(Mo–S) and d(S–S) (the sheet's S–S height) in Table II's sense."""
    symbols = np.array(atoms.get_chemical_symbols())
    distances = _image_distances(atoms)
    out = {}
    for a in sorted(set(symbols)):
        for b in sorted(set(symbols)):
            if a <= b:
                out[(a, b)] = float(distances[np.ix_(symbols == a, symbols == b)].min())
    return out


def _image_distances(atoms: Atoms) -> np.ndarray:
    """(n, n) shortest nonzero distances over the periodic images within one cell in each periodic
    direction (enough for a cell wider than twice the distances wanted); an atom's own images count."""
    positions = atoms.positions
    ranges = [range(-1, 2) if p else range(1) for p in atoms.pbc]
    shifts = np.array([[i, j, k] for i in ranges[0] for j in ranges[1] for k in ranges[2]]) @ atoms.cell.array
    vectors = positions[None, :, None, :] + shifts[None, None] - positions[:, None, None, :]
    lengths = np.sqrt((vectors ** 2).sum(axis=-1))
    return np.where(lengths > 1e-8, lengths, np.inf).min(axis=-1)
