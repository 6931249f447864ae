"""Simulated annealing of Cr(1−x)S-like decorations as keyed tasks: a group of chains advanced by
one segment of their schedule per task, from the checkpoints the previous segment left.

A segment's outcome carries each chain's checkpoint (ChainState.to_record), its trace and the
minima of the cycles that ended during it; the driver commits them, and the next segment starts
from those checkpoints, on this launch or a later one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import make_supercell

from tasks.mc.chains import Advanced, ChainState, advance, new_chain
from tasks.mc.energy import PotentialEnergy
from tasks.mc.schedule import GeometricCycles, MoveSettings
from tasks.mc.sites import SiteLattice
from tasks.outcome import Outcome, run_each
from tasks.phase.lattice import Lattice
from tasks.potential import PotentialFiles


@dataclass(frozen=True, eq=False)
class AnnealCell:
    """The supercell every chain decorates: sites, their species, and the metal layers."""

    lattice: Lattice
    supercell: tuple[tuple[int, int, int], ...]
    sites: SiteLattice
    numbers: np.ndarray  # (n_sites,) the full decoration (every metal site occupied)
    cell: np.ndarray  # (3, 3) ideal cell
    metal_layer: np.ndarray  # (n_sites,) index of the metal layer along c (−1 for anion sites)

    @property
    def metal_sites(self) -> np.ndarray:
        return np.flatnonzero(self.sites.mobile)

    @property
    def n_layers(self) -> int:
        return int(self.metal_layer.max()) + 1

    def structure(self, occupation: np.ndarray, cell: np.ndarray) -> Atoms:
        """The real structure of a decoration: vacancies dropped."""
        keep = occupation != 0
        return Atoms(numbers=occupation[keep], scaled_positions=self.sites.fractional[keep], cell=cell, pbc=True)

    def layer_occupation(self, occupation: np.ndarray) -> np.ndarray:
        """Fraction of each metal layer's sites (ordered along c) holding a metal atom."""
        metal = self.metal_sites
        sites = np.bincount(self.metal_layer[metal], minlength=self.n_layers)
        filled = np.bincount(self.metal_layer[metal], weights=(occupation[metal] != 0), minlength=self.n_layers)
        return filled / sites


def anneal_cell(lattice: Lattice, supercell: Sequence[Sequence[int]]) -> AnnealCell:
    primitive = lattice.primitive()
    metal = np.array([s[0] == lattice.metal and len(s) > 1 for s in lattice.chemical_symbols()])
    primitive.set_tags(metal.astype(int))
    atoms = make_supercell(primitive, np.asarray(supercell))
    mobile = atoms.get_tags() == 1
    numbers = atoms.numbers.copy()
    numbers[mobile] = Atoms(lattice.metal).numbers[0]
    fractional = atoms.get_scaled_positions(wrap=True)
    # metal layers: planes of equal height along c (the third cell vector), ordered upwards
    height = fractional[:, 2]
    layer = np.full(len(atoms), -1)
    planes = np.unique(np.round(height[mobile], 6) % 1.0)
    layer[mobile] = np.searchsorted(planes, np.round(height[mobile], 6) % 1.0)
    return AnnealCell(lattice, tuple(tuple(int(v) for v in row) for row in supercell),
                      SiteLattice(fractional, (True, True, True), mobile), numbers, atoms.cell.array.copy(), layer)


def vacancy_count(cell: AnnealCell, vacancy_fraction: float) -> int:
    """Vacancies of a composition: ValueError unless x × metal sites is a whole number."""
    return vacancies_on(len(cell.metal_sites), vacancy_fraction)


def vacancies_on(n_metal: int, vacancy_fraction: float) -> int:
    """Vacancies of a composition on ``n_metal`` metal sites: ValueError unless x × sites is whole."""
    count = vacancy_fraction * n_metal
    if abs(count - round(count)) > 1e-6:
        raise ValueError(f"x = {vacancy_fraction:g} is not reachable with {n_metal} metal sites "
                         f"(x × sites = {count:.3f}; nearest: {np.floor(count) / n_metal:.4f}, "
                         f"{np.ceil(count) / n_metal:.4f})")
    return int(round(count))


@dataclass(frozen=True, eq=False)
class ChainStart:
    """A chain to start: its composition, replica and seed (the seed also draws the start)."""

    name: str
    vacancy_fraction: float
    replica: int
    seed: int


@dataclass(frozen=True, eq=False)
class SegmentJob:
    """One task: a group of chains and the segment of the schedule they run now. ``records``: their
    checkpoints after the previous segment, None for the first one."""

    chains: tuple[ChainStart, ...]
    segment: int
    records: tuple[dict, ...] | None


@dataclass(frozen=True, eq=False)
class SegmentResult:
    records: list[dict]
    advanced: Advanced
    seconds: float


@dataclass(frozen=True)
class SegmentSettings:
    schedule: GeometricCycles
    moves: MoveSettings
    steps_per_segment: int
    record_every: int
    skin_A: float

    @property
    def n_segments(self) -> int:
        return -(-self.schedule.total_steps // self.steps_per_segment)


def start_occupation(cell: AnnealCell, start: ChainStart) -> np.ndarray:
    occupation = cell.numbers.copy()
    vacancies = np.random.default_rng([start.seed, 1]).choice(cell.metal_sites, vacancy_count(
        cell, start.vacancy_fraction), replace=False)
    occupation[vacancies] = 0
    return occupation


def anneal_segments(keys: list[str], jobs: list[SegmentJob], cell: AnnealCell, potential: PotentialFiles,
                    settings: SegmentSettings) -> list[Outcome]:
    model = PotentialEnergy(potential.load())
    return run_each(_segment, keys, jobs, cell, model, settings)


def _segment(job: SegmentJob, cell: AnnealCell, model: PotentialEnergy, settings: SegmentSettings) -> SegmentResult:
    begin = time.perf_counter()
    if job.records is None:
        chains = [new_chain(model, cell.sites, start_occupation(cell, c), cell.cell, c.seed) for c in job.chains]
    else:
        chains = [ChainState.from_record(r) for r in job.records]
    expected = job.segment * settings.steps_per_segment
    if any(c.step != expected for c in chains):
        raise ValueError(f"segment {job.segment} starts at step {expected}, the checkpoints are at "
                         f"{sorted({c.step for c in chains})}")
    advanced = advance(model, cell.sites, chains, settings.schedule, settings.moves, settings.steps_per_segment,
                       settings.record_every, settings.skin_A)
    return SegmentResult([c.to_record() for c in chains], advanced, time.perf_counter() - begin)
