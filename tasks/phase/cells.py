"""Enumerated cells as compact arrays, and the structures they stand for.

A cell is its supercell matrix (icet's HNF, 9 small integers) and the species on the sites that
can change; the fixed sites (S in Cr(1-x)S) are implied by ``chemical_symbols``. With one byte
per entry a 48-site NiAs cell takes 34 bytes. ``cell_atoms`` rebuilds the structure icet's
``enumerate_structures`` returns for it, with icet's own placement and Niggli reduction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.data import chemical_symbols as chemical_symbols_table
from icet.tools.geometry import call_spglib
from icet.tools.structure_enumeration import _labeling_to_ase_atoms
from icet.tools.structure_enumeration_support.normal_form_matrices import HermiteNormalForm
from spglib import niggli_reduce as spglib_niggli_reduce

VACANCY = "X"
PAD = 255  # occupation entries beyond a cell's sites (uint8 indices; at most 255 elements)


@dataclass(frozen=True, eq=False)
class EnumeratedCells:
    """Symmetry-distinct cells as arrays, a row per cell.

    ``occupation`` holds only the sites with a choice of species (``active_sites`` of the
    primitive cell, repeated cell by cell in icet's labeling order): the fixed sites are implied by
    ``chemical_symbols``. Entries index ``elements``; PAD fills rows of smaller cells.
    """

    elements: tuple[str, ...]
    active_sites: tuple[int, ...]
    ncells: np.ndarray  # (n,) uint8
    hnf: np.ndarray  # (n, 9) uint8, HNF entries lie in [0, ncells]
    occupation: np.ndarray  # (n, width) uint8

    def __len__(self) -> int:
        return len(self.ncells)

    def sites(self, k: int) -> np.ndarray:
        """Cell k's occupation without the padding."""
        return self.occupation[k, :int(self.ncells[k]) * len(self.active_sites)]

    @property
    def nbytes(self) -> int:
        return int(self.ncells.nbytes + self.hnf.nbytes + self.occupation.nbytes)

    @classmethod
    def concatenate(cls, parts: Sequence[EnumeratedCells], width: int | None = None) -> EnumeratedCells:
        """All rows of ``parts`` in order, padded to ``width`` (default: the widest part)."""
        if not parts:
            raise ValueError("concatenate needs at least one EnumeratedCells")
        heads = {(p.elements, p.active_sites) for p in parts}
        if len(heads) != 1:
            raise ValueError(f"cannot concatenate cells of different species layouts: {sorted(heads)}")
        widest = max(p.occupation.shape[1] for p in parts)
        width = widest if width is None else width
        if width < widest:
            raise ValueError(f"width {width} is narrower than the widest part ({widest})")
        occupation = np.full((sum(len(p) for p in parts), width), PAD, dtype=np.uint8)
        row = 0
        for p in parts:
            occupation[row:row + len(p), :p.occupation.shape[1]] = p.occupation
            row += len(p)
        return cls(parts[0].elements, parts[0].active_sites,
                   np.concatenate([p.ncells for p in parts]).astype(np.uint8),
                   np.concatenate([p.hnf for p in parts]).astype(np.uint8).reshape(-1, 9), occupation)


def cell_atoms(primitive: Atoms, chemical_symbols: Sequence, hnf: Sequence[int], ncells: int,
               occupation: Sequence[int], niggli_reduce: bool | None = None) -> Atoms:
    """The structure icet's ``enumerate_structures`` returns for this cell, vacancies ('X')
    included. ``niggli_reduce`` defaults as icet's does: on when periodic in all directions."""
    elements, iter_species = site_species(primitive, chemical_symbols)
    ncells = int(ncells)
    H = hnf_matrix(hnf, ncells)
    labeling = _full_labeling(np.asarray(occupation), iter_species, ncells)
    # Placing atoms needs no symmetry operations, so the HNF is built without any.
    return _labeling_to_ase_atoms(labeling, HermiteNormalForm(H, [], [], []), primitive.cell,
                                  _supercell(primitive, H, niggli_reduce), primitive.get_scaled_positions(),
                                  list(elements), primitive.pbc)


def _supercell(primitive: Atoms, H: np.ndarray, niggli_reduce: bool | None) -> np.ndarray:
    """The supercell's vectors as icet makes them: Niggli-reduced by default when periodic in all
    directions."""
    if niggli_reduce is None:
        niggli_reduce = bool(sum(primitive.pbc) == 3)
    new_cell = np.dot(H.T, primitive.cell)
    if niggli_reduce:
        try:  # icet keeps the unreduced cell when spglib cannot reduce it
            new_cell = call_spglib(spglib_niggli_reduce, new_cell)
        except ValueError:
            pass
    return new_cell


class CellBuilder:
    """``cell_atoms`` for many cells of one lattice. Where icet puts a cell's atoms, in which order,
    and its reduced cell depend on the supercell alone, not on the species; so icet's placement
    runs once per supercell (with every site labelled apart, to learn which labeling entry each
    atom takes) and each cell then only sets its atoms' numbers. The result is ``cell_atoms``'s."""

    def __init__(self, primitive: Atoms, chemical_symbols: Sequence, niggli_reduce: bool | None = None):
        self.primitive, self.chemical_symbols, self.niggli_reduce = primitive, chemical_symbols, niggli_reduce
        elements, self.iter_species = site_species(primitive, chemical_symbols)
        self.numbers = np.array([atomic_numbers[e] for e in elements])
        self._templates: dict[tuple, tuple[Atoms, np.ndarray]] = {}

    def __call__(self, hnf: Sequence[int], ncells: int, occupation: Sequence[int]) -> Atoms:
        ncells = int(ncells)
        key = (ncells, tuple(int(h) for h in np.asarray(hnf).ravel()))
        if key not in self._templates:
            self._templates[key] = self._template(*key)
        template, order = self._templates[key]
        labeling = np.asarray(_full_labeling(np.asarray(occupation), self.iter_species, ncells))
        atoms = template.copy()
        atoms.numbers = self.numbers[labeling[order]]
        return atoms

    def _template(self, ncells: int, hnf: tuple) -> tuple[Atoms, np.ndarray]:
        n = ncells * len(self.primitive)
        # element k + 1 stands for labeling entry k: the placed atoms' numbers give the order
        stand_ins = [chemical_symbols_table[k + 1] for k in range(n)]
        H = hnf_matrix(hnf, ncells)
        placed = _labeling_to_ase_atoms(tuple(range(n)), HermiteNormalForm(H, [], [], []), self.primitive.cell,
                                        _supercell(self.primitive, H, self.niggli_reduce),
                                        self.primitive.get_scaled_positions(), stand_ins, self.primitive.pbc)
        return placed, placed.numbers - 1


def without_vacancies(atoms: Atoms, vacancy: str = VACANCY) -> Atoms:
    """A copy with the vacancy sites removed: the structure a potential or DFT code sees."""
    out = atoms.copy()
    del out[[i for i, s in enumerate(out.get_chemical_symbols()) if s == vacancy]]
    return out


# --- icet's input formats, checked ---------------------------------------------------------------

def site_species(primitive: Atoms, chemical_symbols: Sequence) -> tuple[list[str], list[tuple[int, ...]]]:
    """icet's element list (order of first appearance) and the element indices allowed per site,
    from ``chemical_symbols`` as icet takes it: one list for all sites, or one list per site."""
    nsites = len(primitive)
    if len(chemical_symbols) == 0:
        raise ValueError("chemical_symbols is empty")
    if all(isinstance(s, str) for s in chemical_symbols):
        sites = [list(chemical_symbols)] * nsites  # icet: one list for every site
    elif len(chemical_symbols) != nsites:
        raise ValueError(f"chemical_symbols has {len(chemical_symbols)} site lists, the primitive "
                         f"cell has {nsites} sites")
    else:
        sites = [list(site) if not isinstance(site, str) else None for site in chemical_symbols]
        if any(site is None or not site or not all(isinstance(s, str) for s in site) for site in sites):
            raise ValueError(f"chemical_symbols must be a list of symbols or one non-empty list of "
                             f"symbols per site, got {chemical_symbols!r}")
    for i, site in enumerate(sites):
        if len(set(site)) != len(site):
            raise ValueError(f"site {i} lists a species twice: {site}")
    elements = list(dict.fromkeys(s for site in sites for s in site))
    if len(elements) >= PAD:
        raise ValueError(f"{len(elements)} species do not fit uint8 occupations")
    return elements, [tuple(elements.index(s) for s in site) for site in sites]


def active_sites(iter_species: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Sites of the primitive cell with a choice of species: the only ones a cell stores."""
    return tuple(i for i, site in enumerate(iter_species) if len(site) > 1)


def _full_labeling(occupation: np.ndarray, iter_species: list[tuple[int, ...]], ncells: int) -> tuple[int, ...]:
    """icet's labeling (every site) from the stored occupation of the active sites."""
    active = active_sites(iter_species)
    n_active = ncells * len(active)
    if occupation.ndim != 1 or len(occupation) < n_active or np.any(occupation[n_active:] != PAD):
        raise ValueError(f"occupation must list {n_active} active sites (then only padding {PAD}), "
                         f"got {occupation.tolist()}")
    labeling = np.array([site[0] for site in iter_species] * ncells, dtype=np.int64).reshape(ncells, -1)
    labeling[:, list(active)] = occupation[:n_active].reshape(ncells, len(active))
    for cell, row in enumerate(labeling):
        for site, label in zip(active, row[list(active)]):
            if label not in iter_species[site]:
                raise ValueError(f"occupation puts element {label} on site {site} of cell {cell}, "
                                 f"which allows only {iter_species[site]}")
    return tuple(int(x) for x in labeling.ravel())


def hnf_matrix(hnf: Sequence[int], ncells: int) -> np.ndarray:
    H = np.asarray(hnf, dtype=np.int64)
    if H.shape not in ((9,), (3, 3)):
        raise ValueError(f"an HNF is 9 integers (3x3 row-major), got shape {H.shape}")
    H = H.reshape(3, 3)
    lower = not np.triu(H, 1).any()
    reduced = all(0 <= H[i, j] < H[i, i] for i in range(3) for j in range(i))
    if not (lower and reduced and (np.diag(H) > 0).all() and round(np.linalg.det(H)) == ncells):
        raise ValueError(f"{H.tolist()} is not a Hermite normal form of determinant {ncells}")
    return H


def packed_cells(ncells: int, hnf: Sequence[int], labelings: Sequence[tuple[int, ...]], elements: Sequence[str],
                 iter_species: list[tuple[int, ...]]) -> EnumeratedCells:
    """Cells of one supercell from icet labelings (every site), keeping the active sites only."""
    active = active_sites(iter_species)
    n, nsites = len(labelings), len(iter_species)
    full = np.array(labelings, dtype=np.uint8).reshape(n, ncells, nsites)
    return EnumeratedCells(tuple(elements), active,
                           np.full(n, ncells, dtype=np.uint8),
                           np.tile(np.array(hnf, dtype=np.uint8), (n, 1)),
                           np.ascontiguousarray(full[:, :, list(active)].reshape(n, ncells * len(active))))
