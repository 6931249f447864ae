"""Starting structures: prototypes of the two studies and seeded perturbed copies of them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk, mx2
from ase.spacegroup import crystal


def monolayer_mx2(formula: str = "MoS2", a_A: float = 3.18, thickness_A: float = 3.19,
                  supercell: Sequence[int] = (3, 3, 1), vacuum_A: float = 7.5) -> Atoms:
    """A 2H transition-metal dichalcogenide monolayer (periodic in-plane, vacuum along z).

    Use 3×3 or larger: tblite is Γ-point only, and smaller MoS2 cells gave energies off by
    0.6–3 eV/atom.
    """
    return mx2(formula=formula, kind="2H", a=a_A, thickness=thickness_A, size=tuple(supercell), vacuum=vacuum_A)


def nias_bulk(formula: str = "CrS", a_A: float = 3.45, c_A: float = 5.75,
              supercell: Sequence[int] = (2, 2, 1)) -> Atoms:
    """NiAs-type (P6_3/mmc) MX bulk: metal on 2a, chalcogen on 2c, as in Cr(1-x)S."""
    metal, chalcogen = _split_binary(formula)
    unit = crystal([metal, chalcogen], basis=[(0, 0, 0), (1 / 3, 2 / 3, 0.25)], spacegroup=194,
                   cellpar=[a_A, a_A, c_A, 90, 90, 120])
    return unit.repeat(tuple(supercell))


def bulk_crystal(formula: str, crystalstructure: str, a_A: float, c_A: float | None = None,
                 supercell: Sequence[int] = (1, 1, 1)) -> Atoms:
    """Any prototype ``ase.build.bulk`` knows (rocksalt, zincblende, wurtzite, fcc, bcc, hcp...)."""
    kwargs = {"c": c_A} if c_A is not None else {}
    return bulk(formula, crystalstructure=crystalstructure, a=a_A, **kwargs).repeat(tuple(supercell))


def _split_binary(formula: str) -> tuple[str, str]:
    symbols = Atoms(formula).get_chemical_symbols()
    unique = list(dict.fromkeys(symbols))
    if len(unique) != 2 or len(symbols) != 2:
        raise ValueError(f"NiAs prototype needs a 1:1 binary formula like 'CrS', got {formula!r}")
    return unique[0], unique[1]


def remove_fraction(atoms: Atoms, species: str, fraction: float, rng: np.random.Generator) -> Atoms:
    """Remove round(fraction × count) randomly chosen atoms of one species (vacancies)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"vacancy fraction must be in [0, 1), got {fraction}")
    sites = np.flatnonzero(np.asarray(atoms.get_chemical_symbols()) == species)
    n_remove = int(round(fraction * len(sites)))
    out = atoms.copy()
    if n_remove:
        del out[sorted(rng.choice(sites, size=n_remove, replace=False).tolist())]
    return out


def strain_and_rattle(atoms: Atoms, max_strain: float, rattle_A: float, rng: np.random.Generator) -> Atoms:
    """Random symmetric strain (each component uniform in ±max_strain, periodic directions only)
    applied to cell and positions, then Gaussian displacements of standard deviation rattle_A."""
    out = atoms.copy()
    strain = rng.uniform(-max_strain, max_strain, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    periodic = np.asarray(out.pbc, dtype=bool)
    # A monolayer's vacuum direction is not a lattice direction of the material: leave it alone.
    strain[~periodic, :] = 0.0
    strain[:, ~periodic] = 0.0
    out.set_cell(out.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    out.positions += rng.normal(0.0, rattle_A, size=out.positions.shape)
    return out


def perturbed_copies(base: Atoms, count: int, *, seed: int, max_strain: float = 0.0, rattle_A: float = 0.0,
                     vacancy_species: str | None = None,
                     vacancy_fractions: Sequence[float] = (0.0,)) -> list[Atoms]:
    """``count`` seeded copies of ``base``; copy i takes vacancy fraction i mod len(fractions)."""
    rng = np.random.default_rng(seed)
    copies = []
    for i in range(count):
        atoms = base
        fraction = vacancy_fractions[i % len(vacancy_fractions)]
        if vacancy_species is not None and fraction > 0:
            atoms = remove_fraction(atoms, vacancy_species, fraction, rng)
        copies.append(strain_and_rattle(atoms, max_strain, rattle_A, rng))
    return copies
