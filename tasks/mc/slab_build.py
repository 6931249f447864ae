"""A metal–anion slab on the NiAs lattice for vacancy-diffusion Monte Carlo: its atoms, the metal
sites (the vacancy sites are positions, not atoms), their layers and the hops between them.

Layers are counted from the lowest z: metal layers 0 … L−1, anion layers 0 … L (an anion-terminated
slab has one more anion layer than metal layers; metal layer k lies between anion layers k and k+1).
The study's layers 1 … 15 are metal layers 0 … 14 here.

A hop exchanges a vacancy with a metal atom on a site within ``hop_distance_A`` of the vacancy's
site, the distance taken between the ideal sites of the built lattice (the study's 4.9 Å: the 6
in-plane nearest sites and 7 in each adjacent layer, the one straight above or below and its 6
neighbours). A hop's layer offset is the target's layer minus the vacancy's.

vdW-CrS2 sites: the metal sites a perfect van der Waals CrS2 stacking keeps, every other metal layer
full and the others empty. There are two such phases, the layers of even index (which hold both
surface layers of a slab with an odd number of layers, the study's) and those of odd index;
``vdw_fraction`` reports the better of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from vesin import NeighborList

from tasks.generate import nias_bulk

if TYPE_CHECKING:  # its module imports icet (seconds); the builder reads four fields
    from tasks.phase.lattice import Lattice

# Periodic along z too, as the study's cell: the vacuum keeps the slab from its images (the
# potential's cutoff must stay below it); neighbour searches are faster than with mixed periodicity.
SLAB_PBC = (True, True, True)
CAGE_SIZE = 6  # the anion octahedron around an NiAs metal site


@dataclass(frozen=True, eq=False)
class Slab:
    """The slab's fixed description and the configuration it was built in."""

    numbers: np.ndarray  # (n_atoms,) atomic numbers (vacancies are not atoms)
    positions: np.ndarray  # (n_atoms, 3) Å, the built configuration
    cell: np.ndarray  # (3, 3): in-plane vectors a, b (fixed) and c along z (slab thickness + vacuum)
    sites: np.ndarray  # (n_sites, 3) ideal metal-site positions of the built lattice, Å
    site_layer: np.ndarray  # (n_sites,) metal layer of each site, 0 = lowest z
    site_atom: np.ndarray  # (n_sites,) atom on each site in the built configuration, −1 = vacancy
    anion_layer: np.ndarray  # (n_atoms,) anion layer of each atom, −1 for metal atoms
    cage: np.ndarray  # (n_sites, 6) the anion atoms of each site's octahedron
    hop_segment: np.ndarray  # (n_sites + 1,): the hops from site s are hop_segment[s]:hop_segment[s + 1]
    hop_site: np.ndarray  # target site of each hop, sorted by (site, layer offset, target)
    hop_offset: np.ndarray  # layer offset of each hop (target layer − site layer)
    hop_distance_A: float

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def n_layers(self) -> int:
        return int(self.site_layer.max()) + 1

    @property
    def n_anion_layers(self) -> int:
        return int(self.anion_layer.max()) + 1

    @property
    def max_offset(self) -> int:
        """The largest number of layers one hop crosses (1 at the study's hop distance)."""
        return int(np.abs(self.hop_offset).max()) if len(self.hop_offset) else 0

    @property
    def area_A2(self) -> float:
        return float(np.linalg.norm(np.cross(self.cell[0], self.cell[1])))

    def hops(self, site: int, offset: int) -> np.ndarray:
        """The sites one hop away from ``site`` with layer offset ``offset``."""
        start, stop = self.hop_segment[site], self.hop_segment[site + 1]
        return self.hop_site[start:stop][self.hop_offset[start:stop] == offset]

    def anion_layer_z(self, positions: np.ndarray) -> np.ndarray:
        """(n_anion_layers,) mean z of each anion layer, Å."""
        anion = self.anion_layer >= 0
        return (np.bincount(self.anion_layer[anion], weights=positions[anion, 2])
                / np.bincount(self.anion_layer[anion]))

    def thickness_A(self, positions: np.ndarray) -> float:
        """The slab's thickness: mean z of its top anion layer minus that of its bottom one (a layer's
        mean, not its outermost atom, so one atom's relaxation barely moves it)."""
        z = self.anion_layer_z(positions)
        return float(z[-1] - z[0])

    def vdw_sites(self) -> np.ndarray:
        """(2, n_sites) bool: the sites of the two vdW stackings, metal layers of even index and of odd."""
        return np.stack([self.site_layer % 2 == 0, self.site_layer % 2 == 1])

    def atoms(self, positions: np.ndarray | None = None) -> Atoms:
        return Atoms(numbers=self.numbers, positions=self.positions if positions is None else positions,
                     cell=self.cell, pbc=SLAB_PBC)


def build_slab(lattice: Lattice, repeats: tuple[int, int], n_layers: int, vacancy_fraction: float, *,
               in_plane_strain: float = 0.0, vacuum_A: float = 30.0, seed: int = 0,
               hop_distance_A: float = 4.9) -> Slab:
    """An anion-terminated slab of ``n_layers`` metal layers cut from the NiAs lattice.

    In-plane it repeats the rectangular cell (a, a√3) ``repeats`` times (two metal sites per layer
    each), with a compressed by ``in_plane_strain`` (0.035: a × 0.965); c keeps the lattice's value.
    round(vacancy_fraction × sites) metal sites, drawn with ``seed``, are vacant. The slab's
    thickness (between its outer anion layers) is n_layers × c/2, and the cell's c vector is that
    plus ``vacuum_A``, the slab centred in it. The study's slab: repeats (16, 9), 15 layers,
    vacancy fraction 14/30 (CrS2: 2,304 Cr on 4,320 sites with 4,608 S), 30 Å vacuum.
    """
    if n_layers < 1 or min(repeats) < 1:
        raise ValueError(f"need at least one layer and one cell in-plane, got {n_layers}, {repeats}")
    if vacuum_A <= hop_distance_A:
        raise ValueError(f"vacuum_A ({vacuum_A}) must exceed hop_distance_A ({hop_distance_A})")
    if not 0.0 <= vacancy_fraction <= 1.0 or not -1.0 < in_plane_strain < 1.0:
        raise ValueError(f"vacancy_fraction must be in [0, 1] and in_plane_strain in (−1, 1), "
                         f"got {vacancy_fraction}, {in_plane_strain}")
    # the lattice's primitive cell, built without importing icet as Lattice.primitive does
    primitive = nias_bulk(f"{lattice.metal}{lattice.anion}", lattice.a_A, lattice.c_A, (1, 1, 1))
    rectangle = make_supercell(primitive, np.array([[1, 0, 0], [1, 2, 0], [0, 0, 1]]))
    bulk = rectangle.repeat((repeats[0], repeats[1], n_layers // 2 + 2))
    half_c = lattice.c_A / 2
    z = bulk.positions[:, 2]
    bottom = lattice.c_A / 4  # the first anion layer; metal layers at c/2, c, …, anions at c/4 + k c/2
    keep = (z > bottom - 0.25 * half_c) & (z < bottom + n_layers * half_c + 0.25 * half_c)
    cut = bulk[keep]
    scale = np.diag([1 - in_plane_strain, 1 - in_plane_strain, 1.0])
    thickness = n_layers * half_c
    cell = np.diag([*np.diag(bulk.cell.array @ scale)[:2], thickness + vacuum_A])
    positions = cut.positions @ scale + [0.0, 0.0, vacuum_A / 2 - bottom]
    metal = np.array(cut.get_chemical_symbols()) == lattice.metal
    sites = positions[metal]
    rng = np.random.default_rng(seed)
    vacant = np.zeros(len(sites), dtype=bool)
    vacant[rng.choice(len(sites), int(round(vacancy_fraction * len(sites))), replace=False)] = True
    atoms = Atoms(numbers=np.concatenate([cut.numbers[~metal], cut.numbers[metal][~vacant]]),
                  positions=np.concatenate([positions[~metal], sites[~vacant]]), cell=cell, pbc=SLAB_PBC)
    return slab_from_atoms(atoms, sites, hop_distance_A=hop_distance_A)


def slab_from_atoms(atoms: Atoms, sites: np.ndarray, *, hop_distance_A: float = 4.9, site_tolerance_A: float = 0.5,
                    layer_gap_A: float = 0.5) -> Slab:
    """A slab from its atoms (a rectangular cell, c along z) and its metal sites (Å, occupied or not): atoms within
    ``site_tolerance_A`` of a site sit on it, every other atom is an anion. Layers are runs of
    sites (anions) whose z differ by less than ``layer_gap_A``; a site's cage is its 6 nearest anions.

    The hop proposals are symmetric (no Hastings factor) when every site has as many hops of
    offset Δ as each of its targets has of −Δ; the builder checks that."""
    cell = np.array(atoms.cell.array, dtype=np.float64)
    if np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-9):
        raise ValueError("the slab's cell must be rectangular with c along z (a along x, b along y)")
    positions = np.array(atoms.positions, dtype=np.float64)
    sites = np.asarray(sites, dtype=np.float64)
    site_atom = np.full(len(sites), -1, dtype=np.int64)
    i, j, d = _pairs(np.concatenate([sites, positions]), cell, site_tolerance_A, "ijd")
    on_site = (i < len(sites)) & (j >= len(sites))
    site, atom = i[on_site], j[on_site] - len(sites)
    if len(np.unique(site)) != len(site) or len(np.unique(atom)) != len(atom):
        raise ValueError(f"a site holds two atoms or an atom sits on two sites within {site_tolerance_A} Å")
    site_atom[site] = atom
    is_anion = np.ones(len(atoms), dtype=bool)
    is_anion[atom] = False
    anion_layer = np.full(len(atoms), -1, dtype=np.int64)
    anion_layer[is_anion] = _layers(positions[is_anion, 2], layer_gap_A)
    site_layer = _layers(sites[:, 2], layer_gap_A)
    hop_segment, hop_site, hop_offset = _hops(sites, site_layer, cell, hop_distance_A)
    return Slab(numbers=np.array(atoms.numbers, dtype=np.int64), positions=positions, cell=cell, sites=sites,
                site_layer=site_layer, site_atom=site_atom, anion_layer=anion_layer,
                cage=_cages(sites, positions, np.flatnonzero(is_anion), cell), hop_segment=hop_segment,
                hop_site=hop_site, hop_offset=hop_offset, hop_distance_A=float(hop_distance_A))


def _pairs(points: np.ndarray, cell: np.ndarray, cutoff_A: float, quantities: str):
    calculator = NeighborList(cutoff=float(cutoff_A), full_list=True, sorted=True)
    found = calculator.compute(points=np.ascontiguousarray(points), box=cell, periodic=np.array(SLAB_PBC),
                               quantities=quantities)
    return tuple(np.asarray(q).astype(np.int64) if k in "ij" else np.asarray(q) for k, q in zip(quantities, found))


def _layers(z: np.ndarray, gap_A: float) -> np.ndarray:
    """Layer index of each z: sorted values split where consecutive ones differ by more than gap_A."""
    order = np.argsort(z, kind="stable")
    layer = np.empty(len(z), dtype=np.int64)
    layer[order] = np.concatenate([[0], np.cumsum(np.diff(z[order]) > gap_A)])
    return layer


def _hops(sites: np.ndarray, layer: np.ndarray, cell: np.ndarray,
          distance_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = _pairs(sites, cell, distance_A, "ij")
    offset = layer[j] - layer[i]
    order = np.lexsort((j, offset, i))
    i, j, offset = i[order], j[order], offset[order]
    width = 2 * int(np.abs(offset).max(initial=0)) + 1
    count = np.bincount(i * width + offset + width // 2, minlength=len(sites) * width)
    if np.any(count[i * width + offset + width // 2] != count[j * width - offset + width // 2]):
        raise ValueError("hop proposals would not be symmetric: a site has a different number of hops of "
                         "some layer offset than one of its targets has back")
    return np.searchsorted(i, np.arange(len(sites) + 1)).astype(np.int64), j, offset


def _cages(sites: np.ndarray, positions: np.ndarray, anions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """The CAGE_SIZE nearest anions of every site (the search radius grows until each site has them)."""
    radius = 3.0
    while True:
        i, j, d = _pairs(np.concatenate([sites, positions[anions]]), cell, radius, "ijd")
        keep = (i < len(sites)) & (j >= len(sites))
        i, j, d = i[keep], anions[j[keep] - len(sites)], d[keep]
        if np.all(np.bincount(i, minlength=len(sites)) >= CAGE_SIZE):
            order = np.lexsort((j, d, i))
            i, j = i[order], j[order]
            first = np.searchsorted(i, np.arange(len(sites)))
            return j[first[:, None] + np.arange(CAGE_SIZE)]
        radius *= 1.25
