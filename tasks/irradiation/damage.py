"""What an impact did to a 2D sheet: where atoms came from, which left, which sites are empty, and
where the ion ended up.

The sheet lies in the plane of the first two cell vectors, with z normal to it and not periodic
(or periodic with the sheet not straddling the z boundary, and positions unwrapped along z).
"""

from __future__ import annotations

import itertools
from enum import Enum, IntEnum

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


class Origin(IntEnum):
    """Where a sheet atom sat before the impact (or that it is the ion)."""

    TOP = 0  # top chalcogen layer (the side the ion comes from, larger z)
    METAL = 1  # metal layer; the middle layers of a generic sheet
    BOTTOM = 2  # bottom chalcogen layer
    ION = 3


ORIGINS = tuple(origin.name.lower() for origin in Origin)  # ("top", "metal", "bottom", "ion")

CHALCOGENS = frozenset({"O", "S", "Se", "Te"})


def _z_layers(z_A: np.ndarray, layer_gap_A: float) -> np.ndarray:
    """Layer index of each z, counted from the bottom: a new layer starts wherever consecutive
    sorted z values are more than ``layer_gap_A`` apart."""
    order = np.argsort(z_A)
    starts = np.concatenate([[0], np.diff(z_A[order]) > layer_gap_A]).astype(int)
    layer = np.empty(len(z_A), dtype=int)
    layer[order] = np.cumsum(starts)
    return layer


def origin_labels(atoms: Atoms, ion_index: int | None = None, layer_gap_A: float = 0.8) -> np.ndarray:
    """Origin (an ``Origin`` value, int8) of every atom of a pristine sheet, the ion included.

    Rule, for the atoms other than the ion:
    - one metal and one chalcogen species (MoS2, WSe2, ...): the metal atoms are METAL; a
      chalcogen above the metal plane (mean z of the metal atoms) is TOP, below it BOTTOM;
    - any other sheet: z is split into layers at gaps larger than ``layer_gap_A``; the highest
      layer is TOP, the lowest BOTTOM, every layer between them METAL, and a single layer is all
      METAL (graphene, hBN).
    """
    n = len(atoms)
    labels = np.empty(n, dtype=np.int8)
    sheet = np.ones(n, dtype=bool)
    if ion_index is not None:
        labels[ion_index] = Origin.ION
        sheet[ion_index] = False
    z_A = atoms.positions[sheet, 2]
    symbols = np.array(atoms.get_chemical_symbols())[sheet]
    species = set(symbols)
    chalcogens = species & CHALCOGENS
    if len(species) == 2 and len(chalcogens) == 1:
        is_metal = ~np.isin(symbols, list(chalcogens))
        metal_plane_A = z_A[is_metal].mean()
        sheet_labels = np.where(is_metal, Origin.METAL, np.where(z_A > metal_plane_A, Origin.TOP, Origin.BOTTOM))
    else:
        layer = _z_layers(z_A, layer_gap_A)
        top = layer.max() if len(layer) else 0
        sheet_labels = np.full(len(z_A), Origin.METAL)
        if top > 0:
            sheet_labels[layer == top] = Origin.TOP
            sheet_labels[layer == 0] = Origin.BOTTOM
    labels[sheet] = sheet_labels
    return labels


def count_by_origin(origins: np.ndarray) -> np.ndarray:
    """Number of atoms of each origin, in ``ORIGINS`` order (length 4), e.g. of the sputtered atoms:
    ``count_by_origin(labels[mask])``."""
    return np.bincount(np.asarray(origins, dtype=np.int64), minlength=len(ORIGINS))


def detached(atoms: Atoms, bond_cutoff_A: float) -> np.ndarray:
    """Boolean mask of the atoms outside the largest connected component of the bond graph (two
    atoms are bonded when closer than ``bond_cutoff_A``, with minimum images along periodic
    directions). At the end of an impact these are the sputtered atoms, and the ion when it is not
    bonded to the sheet (leave the ion's index out when counting sputtered atoms). Of two equally
    large components, the one holding the lower atom index is the sheet.
    """
    n = len(atoms)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # ASE's list rather than vesin's: vesin imports torch, which a numpy analysis need not load
    i, j = neighbor_list("ij", atoms, float(bond_cutoff_A))
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    return component != np.argmax(sizes)


def nearest_sites(pristine_positions_A: np.ndarray, cell_A: np.ndarray, pbc, final_positions_A: np.ndarray) -> np.ndarray:
    """Index of the nearest pristine site of every final atom, with minimum images along the
    periodic directions only (the cell must be full rank: give the vacuum direction its length)."""
    cell_A = np.asarray(cell_A, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    sites = np.asarray(pristine_positions_A, dtype=np.float64).reshape(-1, 3)
    atoms = np.asarray(final_positions_A, dtype=np.float64).reshape(-1, 3)
    if abs(np.linalg.det(cell_A)) < 1e-12:
        raise ValueError("the cell must be full rank (a sheet's cell needs its vacuum vector)")

    def wrapped(positions_A):
        fractional = positions_A @ np.linalg.inv(cell_A)
        fractional[:, pbc] %= 1.0
        return fractional @ cell_A

    # With sites and atoms wrapped into the cell, the nearest image of a site lies within one
    # cell of it along each periodic direction (for a reduced cell, as sheet cells are), so a
    # tree over the sites and their neighbouring images finds every nearest site exactly.
    ranges = [(-1, 0, 1) if periodic else (0,) for periodic in pbc]
    shifts = np.array(list(itertools.product(*ranges)), dtype=np.float64) @ cell_A
    images = (wrapped(sites)[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    _, nearest = cKDTree(images).query(wrapped(atoms))
    return np.asarray(nearest, dtype=np.int64) % len(sites)


def wigner_seitz(pristine_positions_A: np.ndarray, cell_A: np.ndarray, pbc, final_positions_A: np.ndarray) -> np.ndarray:
    """Occupation count of every pristine site (int64, one per pristine atom): the number of final
    atoms whose nearest site it is. A vacancy is a site with 0, an interstitial an atom beyond the
    first on a site (``interstitials``). Pass only the atoms still in the sheet (not ``detached``,
    the ion included if it stayed): a sputtered atom far above would otherwise fill a site.
    """
    sites = np.asarray(pristine_positions_A).reshape(-1, 3)
    assigned = nearest_sites(sites, cell_A, pbc, final_positions_A)
    return np.bincount(assigned, minlength=len(sites))


def interstitials(occupancy: np.ndarray) -> int:
    """Atoms beyond one per site (adatoms and interstitials, the ion among them when it stays)."""
    return int(np.maximum(np.asarray(occupancy) - 1, 0).sum())


def vacancies_by_origin(occupancy: np.ndarray, site_origins: np.ndarray) -> np.ndarray:
    """Number of empty sites per origin layer of the pristine sheet, in ``ORIGINS`` order (length
    4; the ion, not being a site, counts 0)."""
    return count_by_origin(np.asarray(site_origins)[np.asarray(occupancy) == 0])


def sheet_planes_A(positions_A: np.ndarray, origins: np.ndarray) -> tuple[float, float]:
    """(top, bottom): mean z of the TOP and of the BOTTOM atoms of a pristine sheet; a sheet of one
    layer (all METAL) has both planes at its mean z."""
    z_A = np.asarray(positions_A)[:, 2]
    origins = np.asarray(origins)
    middle = z_A[origins == Origin.METAL]

    def plane(layer: Origin) -> float:
        chosen = z_A[origins == layer]
        return float((chosen if len(chosen) else middle).mean())

    return plane(Origin.TOP), plane(Origin.BOTTOM)


class IonFate(str, Enum):
    REFLECTED = "reflected"  # left the sheet on the side it came from
    TRANSMITTED = "transmitted"  # left the sheet through it
    ADSORBED = "adsorbed"  # bonded to the sheet, outside it: an adatom on either face
    EMBEDDED = "embedded"  # bonded to the sheet, within it: on a vacancy or an interstitial site


def ion_fate(ion_z_A: float, ion_detached: bool, top_z_A: float, bottom_z_A: float,
             tolerance_A: float = 0.5) -> IonFate:
    """Where the ion ended up, from its final z (unwrapped along z) and whether it is detached
    (``detached(...)[ion_index]``, or True for an ion that flew off and was taken out of the run).

    A detached ion above the sheet's middle plane ((top + bottom) / 2) is REFLECTED, below it
    TRANSMITTED; the middle plane, not the faces, decides so that a free ion caught inside a pore
    at the end is still classified. A bonded ion within [bottom − tolerance, top + tolerance] is
    EMBEDDED, outside it ADSORBED: a chalcogen adatom sits about a bond length (2 Å) beyond the
    face, a substituted chalcogen within a few tenths of an Å of its plane.
    """
    if ion_detached:
        return IonFate.REFLECTED if ion_z_A > (top_z_A + bottom_z_A) / 2.0 else IonFate.TRANSMITTED
    if bottom_z_A - tolerance_A <= ion_z_A <= top_z_A + tolerance_A:
        return IonFate.EMBEDDED
    return IonFate.ADSORBED
