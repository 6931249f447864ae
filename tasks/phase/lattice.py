"""The lattice of the phase diagram: NiAs M(1−x)A, the metal sites holding the metal or a vacancy
('X', atomic number 0, as icet writes vacancies), the anion sites fixed. Cells are kept as ideal
lattice decorations (what the cluster expansion sees) and become real structures (vacancies
dropped) only to be relaxed or evaluated."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from tasks.phase.cells import VACANCY, without_vacancies
from tasks.structures import Structure


@dataclass(frozen=True)
class Lattice:
    metal: str = "Cr"
    anion: str = "S"
    a_A: float = 3.45
    c_A: float = 5.75

    def primitive(self) -> Atoms:
        return _primitive(self).copy()

    def chemical_symbols(self) -> list[list[str]]:
        """Per site of the primitive cell, the species it may hold (icet's form)."""
        return [[self.metal, VACANCY] if s == self.metal else [s] for s in _primitive(self).get_chemical_symbols()]

    def cell_atoms(self, hnf: np.ndarray, ncells: int, occupation: np.ndarray) -> Atoms:
        """An enumerated cell from its compact form (tasks.phase.cells), as icet builds it."""
        return _builder(self)(hnf, ncells, occupation)

    def cluster_space(self, cutoffs_A: Sequence[float]):
        return _cluster_space(self, tuple(float(c) for c in cutoffs_A))

    def predict(self, ce, ideal: Sequence[Atoms]) -> np.ndarray:
        """The cluster expansion ``ce`` (tasks.phase.ranking.ClusterExpansionModel): eV per site."""
        from tasks.phase.cluster_expansion import predict

        return np.asarray(predict(self.cluster_space(ce.cutoffs_A), np.asarray(ce.parameters), list(ideal)))

    def vacancy_fraction(self, ideal: Atoms) -> float:
        symbols = ideal.get_chemical_symbols()
        metal_sites = sum(s in (self.metal, VACANCY) for s in symbols)
        return symbols.count(VACANCY) / metal_sites


@dataclass(frozen=True, eq=False)
class PhaseCell:
    """A cell to relax: its ideal decoration, where it came from, its row in the enumerated cells
    (−1 for SQS cells and the cluster expansion's candidates)."""

    tag: str
    ideal: Atoms
    vacancy_fraction: float
    row: int = -1

    def structure(self) -> Structure:
        return Structure.from_atoms(without_vacancies(self.ideal), tag=self.tag)

    def canonical(self):
        return Structure.from_atoms(self.ideal).canonical()


@functools.lru_cache(maxsize=8)
def _primitive(lattice: Lattice) -> Atoms:
    from tasks.phase.cluster_expansion import nias_primitive

    return nias_primitive(lattice.a_A, lattice.c_A, f"{lattice.metal}{lattice.anion}")


@functools.lru_cache(maxsize=8)
def _builder(lattice: Lattice):
    from tasks.phase.cells import CellBuilder

    return CellBuilder(_primitive(lattice), lattice.chemical_symbols())


@functools.lru_cache(maxsize=8)
def _cluster_space(lattice: Lattice, cutoffs_A: tuple[float, ...]):
    from tasks.phase.cluster_expansion import cluster_space

    return cluster_space(_primitive(lattice), list(cutoffs_A), lattice.chemical_symbols())
