"""Formation energies and the lower convex hull of a binary system (Cr–S), against two references.

Each structure's composition is written as a·A + b·B, where A and B are the two reference cells named
by the user (elemental Cr and S, or CrS and CrS2 computed by the same labeler). Then

    E_f = (E − a·E_A − b·E_B) / N_atoms          fraction = b·N_B / N_atoms

so the hull coordinate is the fraction of the atoms that come from B, and both references sit at
E_f = 0 on the ends of [0, 1]. Per-atom units keep the hull a plain convex hull in the plane
(pymatgen's CompoundPhaseDiagram with normalised terminal compositions draws the same one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

# Counts are integers and energies are O(1–10³) eV, so these only absorb rounding, never chemistry.
AMOUNT_TOL = 1e-9  # per atom of the structure: an amount above −AMOUNT_TOL·N counts as 0 (and is clipped)
FRACTION_TOL = 1e-9
ENERGY_TOL_eV_PER_ATOM = 1e-9  # a point this close to the hull lies on it


@dataclass(frozen=True)
class HullReference:
    """One end of the hull: a structure's element counts (in the system's element order, e.g.
    (n_Cr, n_S)) and its total energy, from the same labeler as the structures."""

    name: str
    counts: tuple[int, int]
    energy_eV: float

    @property
    def n_atoms(self) -> int:
        return int(sum(self.counts))


@dataclass(frozen=True)
class FormationEnergies:
    """Per structure: amounts of the references (a of A, b of B), hull fraction and E_f."""

    amount_A: np.ndarray
    amount_B: np.ndarray
    fraction: np.ndarray
    formation_energy_eV_per_atom: np.ndarray


@dataclass(frozen=True)
class Hull:
    """The lower convex hull of (fraction, E_f) points.

    ``vertices``: indices of the input points at the hull's corners, sorted by fraction (one index per
    corner: the lowest-numbered of duplicates; an end point the input lacks is not listed).
    ``on_hull``: e_above_hull within ENERGY_TOL_eV_PER_ATOM, so it also holds for duplicates of
    corners and points lying on a hull segment, which are not corners.
    ``hull_fraction`` / ``hull_formation_energy_eV_per_atom``: the hull as a polyline from fraction 0
    to 1 (corners, end points included), for plots and for ``e_above_hull_of``.
    """

    fraction: np.ndarray
    formation_energy_eV_per_atom: np.ndarray
    e_above_hull_eV_per_atom: np.ndarray
    on_hull: np.ndarray
    vertices: np.ndarray
    hull_fraction: np.ndarray
    hull_formation_energy_eV_per_atom: np.ndarray

    def e_above_hull_of(self, fraction, formation_energy_eV_per_atom) -> np.ndarray:
        """Energy above this hull of points that did not build it. Negative means below the hull:
        such a structure would be a new corner (not clipped, since that is the news)."""
        fraction = _fractions(fraction)
        energy = np.atleast_1d(np.asarray(formation_energy_eV_per_atom, dtype=float))
        if energy.shape != fraction.shape or not np.all(np.isfinite(energy)):
            raise ValueError("need one finite formation energy per fraction")
        return energy - np.interp(fraction, self.hull_fraction, self.hull_formation_energy_eV_per_atom)


def vacancy_fraction_x(n_Cr, n_S) -> np.ndarray:
    """x of Cr(1−x)S, the fraction of empty metal sites on the NiAs lattice: 1 − n_Cr / n_S
    (CrS 0, Cr3S4 1/4, Cr2S3 1/3, Cr5S8 3/8, CrS2 1/2)."""
    n_Cr = np.asarray(n_Cr, dtype=float)
    n_S = np.asarray(n_S, dtype=float)
    if np.any(n_S <= 0) or np.any(n_Cr < 0):
        raise ValueError("Cr(1-x)S needs n_S > 0 and n_Cr >= 0")
    return 1.0 - n_Cr / n_S


def formation_energies(counts, energy_eV, reference_A: HullReference, reference_B: HullReference
                       ) -> FormationEnergies:
    """E_f per atom and hull fraction of structures with element ``counts`` (n_structures × 2, same
    element order as the references) and total energies ``energy_eV``.

    Raises ValueError for references with the same composition ratio (they span one line, not the
    plane) and for compositions outside the references' span (a negative amount of either: with CrS
    and CrS2 as references, a Cr-richer structure than CrS is off the hull's axis).
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    energy_eV = np.atleast_1d(np.asarray(energy_eV, dtype=float))
    if counts.ndim != 2 or counts.shape[1] != 2:
        raise ValueError(f"counts must be n_structures × 2 (one column per element), got shape {counts.shape}")
    if energy_eV.shape != (counts.shape[0],):
        raise ValueError(f"need one energy per structure: {counts.shape[0]} structures, energies {energy_eV.shape}")
    if np.any(counts < 0) or np.any(counts.sum(axis=1) <= 0):
        raise ValueError("element counts must be non-negative, and every structure needs an atom")
    if not np.all(np.isfinite(energy_eV)):
        raise ValueError("energies must be finite")
    basis = _reference_basis(reference_A, reference_B)

    amounts = np.linalg.solve(basis, counts.T).T  # row i: (a, b) with a·counts_A + b·counts_B = counts_i
    outside = np.any(amounts < -AMOUNT_TOL * np.maximum(1.0, counts.sum(axis=1, keepdims=True)), axis=1)
    if np.any(outside):
        bad = np.flatnonzero(outside)
        raise ValueError(f"structures {bad[:10].tolist()} (counts {counts[bad[:3]].astype(int).tolist()}...) lie "
                         f"outside the span of {reference_A.name} and {reference_B.name}: they need a negative "
                         f"amount of a reference")
    amounts = np.maximum(amounts, 0.0)
    n_atoms = counts.sum(axis=1)
    reference_energy_eV = amounts[:, 0] * reference_A.energy_eV + amounts[:, 1] * reference_B.energy_eV
    return FormationEnergies(
        amount_A=amounts[:, 0], amount_B=amounts[:, 1],
        fraction=np.clip(amounts[:, 1] * reference_B.n_atoms / n_atoms, 0.0, 1.0),
        formation_energy_eV_per_atom=(energy_eV - reference_energy_eV) / n_atoms)


def _reference_basis(reference_A: HullReference, reference_B: HullReference) -> np.ndarray:
    """Columns: the two references' counts. Refuses references that cannot span the plane."""
    for ref in (reference_A, reference_B):
        if len(ref.counts) != 2 or min(ref.counts) < 0 or ref.n_atoms <= 0:
            raise ValueError(f"reference {ref.name}: counts must be two non-negative numbers, not all 0, "
                             f"got {ref.counts}")
        if not np.isfinite(ref.energy_eV):
            raise ValueError(f"reference {ref.name}: energy must be finite")
    basis = np.array([reference_A.counts, reference_B.counts], dtype=float).T
    # Compare the determinant with the product of the column lengths (the sine of the angle between
    # them), so CrS vs Cr2S2 is caught whatever the cell sizes.
    scale = np.linalg.norm(basis[:, 0]) * np.linalg.norm(basis[:, 1])
    if abs(np.linalg.det(basis)) <= 1e-12 * scale:
        raise ValueError(f"references {reference_A.name} {reference_A.counts} and {reference_B.name} "
                         f"{reference_B.counts} have the same composition: they cannot be the two ends of a hull")
    return basis


def _fractions(fraction) -> np.ndarray:
    fraction = np.atleast_1d(np.asarray(fraction, dtype=float))
    if fraction.ndim != 1 or not np.all(np.isfinite(fraction)):
        raise ValueError("fractions must be a finite 1-D array")
    if np.any(fraction < -FRACTION_TOL) or np.any(fraction > 1.0 + FRACTION_TOL):
        raise ValueError("fractions must lie in [0, 1]")
    return np.clip(fraction, 0.0, 1.0)


def lower_hull(fraction, formation_energy_eV_per_atom) -> Hull:
    """The lower convex hull of (fraction, E_f) points, the references' end points (0, 0) and (1, 0)
    always among them, and every point's energy above it (≥ 0, exactly 0 on the corners).

    Any number of points works, none included: the end points and one construction point high above
    them make the set two-dimensional, so scipy's Qhull never meets a flat or too-small input.
    A structure at an end with E_f < 0 (a lower polymorph of a reference) replaces that end point.
    """
    fraction = _fractions(fraction)
    energy = np.atleast_1d(np.asarray(formation_energy_eV_per_atom, dtype=float))
    if energy.shape != fraction.shape or not np.all(np.isfinite(energy)):
        raise ValueError(f"need one finite formation energy per fraction: {fraction.shape} vs {energy.shape}")

    # The apex only closes the hull from above; it is never on a lower facet because it is higher
    # than every other point by more than their whole energy range.
    low, high = min(energy.min(initial=0.0), 0.0), max(energy.max(initial=0.0), 0.0)
    apex = (0.5, high + (high - low) + 1.0)
    points = np.vstack([np.column_stack([fraction, energy]), [[0.0, 0.0], [1.0, 0.0], apex]])
    qhull = ConvexHull(points)
    # Outward normals point down on the lower hull; vertical facets (several points at one end) have
    # a zero energy component and are left out.
    lower = qhull.simplices[qhull.equations[:, 1] < -1e-12]
    corners = np.unique(lower.ravel())
    corners = corners[np.argsort(points[corners, 0], kind="stable")]
    hull_fraction, hull_energy = points[corners, 0], points[corners, 1]

    e_above = energy - np.interp(fraction, hull_fraction, hull_energy)
    vertices = []
    for x, e in zip(hull_fraction, hull_energy):
        # Qhull may have taken an end point or either of two duplicates as the corner: list the
        # first input point that sits there, so the answer does not depend on Qhull's choice.
        at = np.flatnonzero((np.abs(fraction - x) <= FRACTION_TOL) & (np.abs(energy - e) <= ENERGY_TOL_eV_PER_ATOM))
        if at.size:
            vertices.append(at[0])
    vertices = np.asarray(vertices, dtype=int)
    e_above = np.maximum(e_above, 0.0)  # rounding only: nothing lies below the hull of its own points
    e_above[vertices] = 0.0
    return Hull(fraction=fraction, formation_energy_eV_per_atom=energy, e_above_hull_eV_per_atom=e_above,
                on_hull=e_above <= ENERGY_TOL_eV_PER_ATOM, vertices=vertices,
                hull_fraction=hull_fraction, hull_formation_energy_eV_per_atom=hull_energy)
