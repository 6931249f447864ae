"""The sheet an ion hits, where the ion is aimed, and where it starts.

A target is a periodic-in-plane sheet (z normal to it, no periodicity along z) that repeats a
primitive cell ``repeat`` times along its first two cell vectors. Aim points are drawn in the
primitive cell at the middle of the sheet, far from the border strip that absorbs the outgoing
wave; every lateral position relative to the atoms is then equally likely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from tasks.generate import monolayer_mx2

MIN_VACUUM_A = 25.0


@dataclass(frozen=True, eq=False)
class Target:
    atoms: Atoms  # pbc (True, True, False)
    repeat: tuple[int, int]  # primitive cells along the first two cell vectors

    def __post_init__(self) -> None:
        cell = self.atoms.cell.array
        if abs(cell[0, 2]) > 1e-8 or abs(cell[1, 2]) > 1e-8:
            raise ValueError("a target's first two cell vectors must lie in the sheet's plane (z = 0)")
        gap = cell[2, 2] - np.ptp(self.atoms.positions[:, 2])
        if gap < MIN_VACUUM_A:
            raise ValueError(f"the target has {gap:.1f} Å of vacuum along z; a cascade needs at least "
                             f"{MIN_VACUUM_A:g} Å")

    @property
    def primitive_A(self) -> np.ndarray:
        """(2, 3) in-plane vectors of the primitive cell."""
        return self.atoms.cell.array[:2] / np.asarray(self.repeat, dtype=float)[:, None]

    @property
    def aim_origin_A(self) -> np.ndarray:
        """Corner of the primitive cell at the middle of the sheet."""
        return (np.asarray(self.repeat) // 2) @ self.primitive_A

    def aim_point_A(self, fraction: np.ndarray) -> np.ndarray:
        """(x, y, 0) of fractional coordinates ``fraction`` (2,) in the middle primitive cell."""
        return self.aim_origin_A + np.asarray(fraction, dtype=float) @ self.primitive_A


def monolayer_target(formula: str = "MoS2", a_A: float = 3.18, thickness_A: float = 3.19, repeat: int = 6,
                     vacuum_A: float = 30.0) -> Target:
    """An n×n 2H monolayer with ``vacuum_A`` of empty space along z, not periodic along z."""
    atoms = monolayer_mx2(formula, a_A, thickness_A, (repeat, repeat, 1), vacuum_A / 2)
    atoms.pbc = (True, True, False)
    atoms.wrap()
    return Target(atoms, (repeat, repeat))


def file_target(atoms: Atoms, repeat: tuple[int, int]) -> Target:
    """A sheet read from a file; it must be periodic in-plane and is made non-periodic along z."""
    atoms = atoms.copy()
    if not (atoms.pbc[0] and atoms.pbc[1]):
        raise ValueError("a target sheet must be periodic along its first two cell vectors")
    atoms.pbc = (True, True, False)
    atoms.wrap()
    return Target(atoms, tuple(int(r) for r in repeat))


def aim_fractions(n_impacts: int, first: int, seeds: list[int], stratified: bool, strata_seed: int = 0) -> np.ndarray:
    """(n, 2) fractional aim points of impacts ``first`` … ``first + n − 1``: uniform in the
    primitive cell from each impact's seed, or, ``stratified``, one per cell of a k×k grid
    (k = ceil(sqrt(n_impacts))) jittered uniformly inside it, impact i taking the (i mod k²)-th cell
    of a permutation drawn from ``strata_seed``: when k² > n_impacts the cells left out are random,
    not always the same strip."""
    out = np.empty((len(seeds), 2))
    k = max(1, int(np.ceil(np.sqrt(n_impacts))))
    order = np.random.default_rng([strata_seed, 4]).permutation(k * k)
    for row, (i, seed) in enumerate(zip(range(first, first + len(seeds)), seeds)):
        u = np.random.default_rng([seed, 1]).random(2)
        if stratified:
            cell = order[i % (k * k)]
            u = (np.array([cell % k, cell // k]) + u) / k
        out[row] = u
    return out


def direction(polar_deg: float, azimuth_deg: float) -> np.ndarray:
    """Unit vector of travel: straight down (−z) at polar 0, tilted by polar towards azimuth."""
    theta, phi = np.radians(polar_deg), np.radians(azimuth_deg)
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), -np.cos(theta)])


def with_ion(target: Target, ion: str, aim_fraction: np.ndarray, height_A: float, polar_deg: float,
             azimuth_deg: float) -> Atoms:
    """The sheet plus the ion, placed on the line through the aim point (at the top plane) along
    the direction of travel, ``height_A`` above the top plane. The ion is the last atom."""
    atoms = target.atoms.copy()
    top = atoms.positions[:, 2].max()
    aim = target.aim_point_A(aim_fraction) + np.array([0.0, 0.0, top])
    d = direction(polar_deg, azimuth_deg)
    start = aim - d * (height_A / -d[2])
    atoms += Atoms(ion, positions=[start])
    return atoms


def ion_speed(ion: str, energy_eV: float) -> float:
    """Speed in ASE units (Å·sqrt(eV/amu)) of kinetic energy ``energy_eV``."""
    return float(np.sqrt(2 * energy_eV / atomic_masses[atomic_numbers[ion]]))
