"""icet's structure enumeration, cut into independent tasks and stored as arrays.

icet's ``enumerate_structures`` loops over cell sizes, then over Smith normal forms (SNFs), then
over the symmetry-distinct supercell matrices (HNFs) of each SNF. Its work has two parts:

1. per SNF, every labeling of the supercell sites that survives the composition filter, reduced
   under translations (``_get_all_labelings``). For NiAs Cr/X at 12 primitive cells and 6
   vacancies it scans 134,596 labelings, and up to 58 HNFs of that size share one SNF: redone
   per HNF, this part would dominate the whole enumeration;
2. per HNF, the labelings of part 1 reduced under the rotations that keep that supercell
   (``_yield_unique_labelings``).

Hence two task kinds: ``snf_labelings`` (part 1, one per SNF and composition) and
``enumerate_task`` (part 2, one per HNF, fed the labelings of its SNF). Both call icet's own
functions; this module only cuts the loop and packs results. Run in icet's order (the order of
``enumeration_tasks``), the union of the tasks is exactly icet's sequence of structures.

Results are ``EnumeratedCells`` (tasks/phase/cells.py): a few dozen bytes per cell, from which
``cell_atoms`` rebuilds the structure icet would have returned.

icet's private functions are used on purpose: they are the algorithm, and the public entry point
cannot be split. pyproject pins icet below 5; the tests compare against the public function.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational

import numpy as np
from ase import Atoms
from icet.tools.structure_enumeration import _get_all_labelings, _get_symmetry_operations, _yield_unique_labelings
from icet.tools.structure_enumeration_support.labeling_generation import LabelingGenerator
from icet.tools.structure_enumeration_support.normal_form_matrices import (HermiteNormalForm, SmithNormalForm,
                                                                           get_unique_snfs, yield_reduced_hnfs)

from tasks.phase.cells import PAD, EnumeratedCells, hnf_matrix, packed_cells, site_species

DEFAULT_SYMPREC = 1e-5  # icet's default

SpeciesFractions = Mapping[str, Collection[Fraction | int | str]]


@dataclass(frozen=True)
class EnumerationTask:
    """One supercell to decorate: ``hnf`` is icet's HermiteNormalForm.H, row-major."""

    ncells: int
    hnf: tuple[int, ...]
    symprec: float = DEFAULT_SYMPREC

    @property
    def snf(self) -> tuple[int, int, int]:
        """Diagonal of the Smith normal form: the key of the labelings this task needs."""
        return _smith_diagonal(hnf_matrix(self.hnf, self.ncells))


@dataclass(frozen=True, eq=False)
class SnfLabelings:
    """icet's translation-reduced labelings of one SNF, in icet's order: row = one labeling,
    entries are indices into ``elements``, sites ordered as icet orders them (SNF group order)."""

    snf: tuple[int, int, int]
    elements: tuple[str, ...]
    labelings: np.ndarray  # (m, ncells * nsites) uint8

    def __len__(self) -> int:
        return len(self.labelings)


def enumeration_tasks(primitive: Atoms, sizes: Sequence[int],
                      symprec: float = DEFAULT_SYMPREC) -> list[EnumerationTask]:
    """icet's symmetry-distinct supercells of each size, in icet's order (size, SNF, HNF)."""
    symmetries = _symmetries(primitive, symprec)
    tasks = []
    for ncells in _checked_sizes(sizes):
        hnfs = list(yield_reduced_hnfs(ncells, symmetries, primitive.pbc))
        for snf in get_unique_snfs(hnfs):
            tasks += [EnumerationTask(ncells, tuple(int(h) for h in hnf.H.ravel()), symprec)
                      for hnf in snf.hnfs]
    return tasks


@dataclass(frozen=True)
class EnumerationGroup:
    """Supercells of one size and Smith normal form, at one vacancy fraction: the labelings of the
    SNF are listed once (``snf_labelings``, the costly part) and decorate every HNF."""

    index: int  # its place in the plan: rows keep it, so later keys do not depend on finishing order
    fraction: str  # exact, e.g. "1/4"
    tasks: tuple[EnumerationTask, ...]


def enumeration_groups(primitive: Atoms, chemical_symbols: Sequence, sizes: Sequence[int],
                       fractions: Sequence[Fraction | int | str], hnfs_per_task: int,
                       symprec: float = DEFAULT_SYMPREC) -> list[EnumerationGroup]:
    """The tasks of ``enumeration_tasks`` cut into groups: per (size, SNF), per fraction in the order
    given, runs of at most ``hnfs_per_task`` HNFs. A fraction is of the sites with a choice of
    species; sizes where it is not a whole number of those sites get no group for it."""
    if hnfs_per_task < 1:
        raise ValueError(f"hnfs_per_task must be at least 1, got {hnfs_per_task}")
    exact = [_exact_fraction(f) for f in fractions]
    per_cell = sum(len(s) > 1 for s in chemical_symbols)
    by_snf: dict[tuple, list[EnumerationTask]] = {}
    for task in enumeration_tasks(primitive, sizes, symprec):
        by_snf.setdefault((task.ncells, task.snf), []).append(task)
    groups: list[EnumerationGroup] = []
    for (ncells, _), members in by_snf.items():
        for fraction in exact:
            if (fraction * ncells * per_cell).denominator != 1:
                continue  # this size cannot hold the composition exactly
            for lo in range(0, len(members), hnfs_per_task):
                groups.append(EnumerationGroup(len(groups), str(fraction), tuple(members[lo:lo + hnfs_per_task])))
    return groups


def costliest_first(groups: Sequence[EnumerationGroup], chemical_symbols: Sequence) -> list[EnumerationGroup]:
    """``groups`` in the order a scheduler should start them: the costliest first, so that the last
    tasks to run are short ones and no worker idles at the end while another finishes a large
    group (plan order puts the largest cells last). The estimate is for ordering only: the
    decorations of the choice sites at the group's fraction (the labelings part scans about that
    many), times the cell size, times 1 + HNFs / 4 (measured on NiAs Cr/X at 8 primitive cells,
    the labelings cost about as much as reducing them for 4 HNFs). Indices keep the plan order."""
    per_cell = sum(len(s) > 1 for s in chemical_symbols)

    def cost(group: EnumerationGroup) -> float:
        ncells = group.tasks[0].ncells
        choice_sites = ncells * per_cell
        decorations = math.comb(choice_sites, int(Fraction(group.fraction) * choice_sites))
        return decorations * ncells * (1 + len(group.tasks) / 4)

    return sorted(groups, key=lambda g: (-cost(g), g.index))


def labeling_count(primitive: Atoms, chemical_symbols: Sequence, ncells: int,
                   concentration_restrictions: Mapping | None = None,
                   species_fractions: SpeciesFractions | None = None) -> int:
    """How many labelings ``snf_labelings`` scans for a cell of ``ncells`` primitive cells
    (its cost grows as this count times ``ncells``); counted, not generated."""
    generator, _ = _generator(primitive, chemical_symbols, ncells, concentration_restrictions,
                              species_fractions)
    if generator is None:
        return 0
    if not generator.concentrations:
        return math.prod(len(site) for site in generator.iter_species) ** ncells
    for group in generator.site_groups.values():
        group.compute_all_combinations(ncells)
    return sum(math.prod(_arrangements(combination) for combination in product)
               for product in generator.yield_products(ncells))


def snf_labelings(primitive: Atoms, chemical_symbols: Sequence, snf: Sequence[int],
                  concentration_restrictions: Mapping | None = None,
                  species_fractions: SpeciesFractions | None = None) -> SnfLabelings:
    """Part 1 of icet's enumeration for one SNF: the labelings every HNF of that SNF starts from.

    ``concentration_restrictions`` is icet's (ranges of the fraction of *all* atoms).
    ``species_fractions`` keeps exact compositions: ``{'X': ['1/8', '1/4']}`` keeps cells where
    'X' fills exactly 1/8 or 1/4 of the sites that allow 'X'; sizes where no fraction gives a
    whole number of atoms have no cells. Labelings of different compositions are never
    equivalent, so one call per fraction splits the work without changing the set of cells.
    """
    smith = _smith_form(snf)
    ncells = int(smith.ncells)
    generator, elements = _generator(primitive, chemical_symbols, ncells, concentration_restrictions,
                                     species_fractions)
    nsites = len(primitive)
    if generator is None:
        labelings = np.zeros((0, ncells * nsites), dtype=np.uint8)
    else:
        labelings = np.array(_get_all_labelings(smith, generator, nsites), dtype=np.uint8)
        labelings = labelings.reshape(-1, ncells * nsites)
    return SnfLabelings(tuple(int(s) for s in smith.S), tuple(elements), labelings)


def enumerate_task(task: EnumerationTask, primitive: Atoms, chemical_symbols: Sequence,
                   labelings: SnfLabelings) -> EnumeratedCells:
    """Part 2 for one HNF: the labelings of its SNF that are distinct under the rotations keeping
    this supercell; exactly the cells icet's ``enumerate_structures`` yields for this HNF. Its cost
    grows as ``len(labelings)`` times the rotations keeping the supercell times ``ncells``."""
    return enumerate_batch([task], primitive, chemical_symbols, {task.snf: labelings})


def enumerate_batch(tasks: Sequence[EnumerationTask], primitive: Atoms, chemical_symbols: Sequence,
                    labelings: Mapping[tuple[int, int, int], SnfLabelings]) -> EnumeratedCells:
    """Several ``enumerate_task`` in one call, rows in task order: small tasks batched into one unit
    of work share one symmetry analysis (tens of milliseconds, more than a small task itself)."""
    if not tasks:
        raise ValueError("enumerate_batch needs at least one task")
    elements, iter_species = site_species(primitive, chemical_symbols)
    symmetries = {}
    parts = []
    for task in tasks:
        shared = labelings.get(task.snf)
        if shared is None:
            raise ValueError(f"no labelings for SNF {task.snf} of task {task.hnf}; have {sorted(labelings)}")
        if shared.snf != task.snf:
            raise ValueError(f"labelings are for SNF {shared.snf}, task {task.hnf} has SNF {task.snf}")
        if shared.elements != tuple(elements):
            raise ValueError(f"labelings use elements {shared.elements}, chemical_symbols give {elements}")
        if task.symprec not in symmetries:
            symmetries[task.symprec] = _symmetries(primitive, task.symprec)
        unique = _unique_labelings(task, symmetries[task.symprec], shared, len(primitive))
        parts.append(packed_cells(task.ncells, task.hnf, unique, elements, iter_species))
    return EnumeratedCells.concatenate(parts)


def enumerate_cells(primitive: Atoms, sizes: Sequence[int], chemical_symbols: Sequence,
                    concentration_restrictions: Mapping | None = None,
                    species_fractions: SpeciesFractions | None = None,
                    symprec: float = DEFAULT_SYMPREC) -> EnumeratedCells:
    """All tasks in one process, in icet's order (the notebook path, and the tests' subject)."""
    tasks = enumeration_tasks(primitive, sizes, symprec)
    if not tasks:
        raise ValueError(f"no cells to enumerate for sizes {list(sizes)}")
    labelings = {}
    for snf in dict.fromkeys(task.snf for task in tasks):
        labelings[snf] = snf_labelings(primitive, chemical_symbols, snf, concentration_restrictions,
                                       species_fractions)
    return enumerate_batch(tasks, primitive, chemical_symbols, labelings)


def _unique_labelings(task: EnumerationTask, symmetries: dict, labelings: SnfLabelings,
                      nsites: int) -> list[tuple[int, ...]]:
    hnf = HermiteNormalForm(hnf_matrix(task.hnf, task.ncells), symmetries["rotations"],
                            symmetries["translations"], symmetries["basis_shifts"])
    # HNFs of one SNF share everything _yield_unique_labelings reads from the SNF (S, blocks,
    # group order), so this HNF's own SNF stands in for the one icet shares among them.
    hnf.snf.set_group_order()
    rows = [tuple(row) for row in labelings.labelings.tolist()]
    return list(_yield_unique_labelings(rows, hnf.snf, hnf, nsites))


# --- input checks and icet's objects -------------------------------------------------------------

def _checked_sizes(sizes: Sequence[int]) -> list[int]:
    out = []
    for n in sizes:
        if int(n) != n or n < 0 or n >= PAD:
            raise ValueError(f"cell sizes must be whole numbers in [0, {PAD}), got {n!r}")
        if n:  # icet skips size 0
            out.append(int(n))
    return out


def _smith_diagonal(H: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(s) for s in SmithNormalForm(H).S)


def _smith_form(snf: Sequence[int]) -> SmithNormalForm:
    """An icet SNF object with diagonal ``snf`` (all that _get_all_labelings reads from it)."""
    diagonal = tuple(int(s) for s in snf)
    if len(diagonal) != 3 or min(diagonal) < 1 or diagonal[1] % diagonal[0] or diagonal[2] % diagonal[1]:
        raise ValueError(f"{tuple(snf)} is not a Smith normal form diagonal (s0 | s1 | s2, all >= 1)")
    smith = SmithNormalForm(np.diag(diagonal))
    assert tuple(int(s) for s in smith.S) == diagonal, (smith.S, diagonal)
    smith.set_group_order()
    return smith


def _symmetries(primitive: Atoms, symprec: float) -> dict:
    return _get_symmetry_operations(primitive, symprec=symprec, position_tolerance=symprec)


def _arrangements(combination: tuple[int, ...]) -> int:
    """Distinct orderings of a multiset (a multinomial coefficient)."""
    out = math.factorial(len(combination))
    for species in set(combination):
        out //= math.factorial(combination.count(species))
    return out


# --- the composition filter ----------------------------------------------------------------------

class _ExactCountGenerator(LabelingGenerator):
    """icet's generator, keeping only compositions whose count of each filtered species is allowed.

    The test is on integers: icet's ranges compare floats, which cannot say "exactly 1/8 or 1/4".
    Filtering whole compositions (icet's "products") before their labelings are generated keeps
    the cost proportional to the labelings kept, and keeps icet's order among them.
    """

    def __init__(self, iter_species: list[tuple[int, ...]], concentrations: dict | None,
                 allowed_counts: dict[int, frozenset[int]]) -> None:
        # icet builds compositions only when given ranges; (0, 1) admits every composition.
        super().__init__(iter_species, concentrations or {s: (0.0, 1.0) for s in allowed_counts})
        self.allowed_counts = allowed_counts

    def yield_products(self, ncells: int):
        for product in super().yield_products(ncells):
            if all(sum(group.count(s) for group in product) in counts
                   for s, counts in self.allowed_counts.items()):
                yield product


def _generator(primitive: Atoms, chemical_symbols: Sequence, ncells: int,
               concentration_restrictions: Mapping | None,
               species_fractions: SpeciesFractions | None) -> tuple[LabelingGenerator | None, list[str]]:
    """icet's labeling generator for this size, or None when no composition can pass the filter."""
    elements, iter_species = site_species(primitive, chemical_symbols)
    concentrations = None
    if concentration_restrictions:
        concentrations = {}
        for species, bounds in concentration_restrictions.items():
            if species not in elements:
                raise ValueError(f"{species!r} is in concentration_restrictions but on no site "
                                 f"(species: {elements})")
            if len(bounds) != 2 or not bounds[0] <= bounds[1]:
                raise ValueError(f"concentration range of {species!r} must be (low, high), got {bounds!r}")
            concentrations[elements.index(species)] = tuple(bounds)
    if not species_fractions:
        return LabelingGenerator(iter_species, concentrations), elements
    allowed = {}
    for species, fractions in species_fractions.items():
        if species not in elements:
            raise ValueError(f"{species!r} is in species_fractions but on no site (species: {elements})")
        if not fractions:
            raise ValueError(f"species_fractions[{species!r}] is empty")
        index = elements.index(species)
        host_sites = ncells * sum(index in site for site in iter_species)
        counts = {f * host_sites for f in map(_exact_fraction, fractions)}
        allowed[index] = frozenset(int(c) for c in counts if c.denominator == 1)
    if not all(allowed.values()):
        return None, elements
    return _ExactCountGenerator(iter_species, concentrations, allowed), elements


def _exact_fraction(value: Fraction | int | str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (Rational, str)):
        raise ValueError(f"give fractions exactly, as Fraction(1, 8), '1/8' or an int; got {value!r}")
    try:
        fraction = Fraction(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a fraction like '1/8'") from None
    if not 0 <= fraction <= 1:
        raise ValueError(f"a fraction of sites lies in [0, 1], got {fraction}")
    return fraction
