"""Irradiation-ready training data, after Table I of the MoS2 DP-Tab study: dimers across the
repulsion switch, short-range interstitials, random liquid-like packings, scaled sheets, and the
vacancies, antisites and nanopores of an MX2 monolayer. Pure numpy/ASE; every random choice
comes from the Generator passed in.

MX2 conventions (the 2D-materials literature's): M is the metal, X the chalcogen; the sheet lies
in the xy plane (as ``ase.build.mx2`` builds it), its X atoms in a top and a bottom plane, each
top X above a bottom X (an X2 column).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, get_args

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import find_mic, get_distances

from tasks.cell_validity import MIN_WIDTH_A, periodic_widths_A
from tasks.structures import Structure

DefectName = Literal["V_X", "V_M", "V_X2", "V_M2", "V_MX", "V_MX3", "M_X", "M_X2", "X_M", "X2_M"]
DEFECT_NAMES: tuple[str, ...] = get_args(DefectName)
# Random placement gives up after this many rejected positions for one atom: the constraints are
# then (nearly) impossible, and the message says which to relax.
MAX_TRIES = 10_000
# Neighbours this much farther than the nearest still count as "nearest" (a rattled lattice's
# six M neighbours differ by a few hundredths of an Å); the seeded choice picks among them.
NEAREST_TOLERANCE_A = 0.2
AVOGADRO_PER_MOL = 6.02214076e23  # exact since the 2019 SI


# -- dimers, interstitials, packings, scaled cells ------------------------------------------------
def dimer_grid_A(min_A: float, max_A: float, step_A: float) -> list[float]:
    """min_A, min_A + step_A, ... up to max_A inclusive (rounded to 1e-6 Å, so 1.2 + 3·0.1 is 1.5)."""
    n = int(math.floor((max_A - min_A) / step_A + 1e-9)) + 1
    return [round(min_A + k * step_A, 6) for k in range(n)]


def _nearest_A(points: np.ndarray, atoms: Atoms) -> np.ndarray:
    """Distance from each point to its nearest atom of ``atoms``, over periodic images."""
    _, d = get_distances(points, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return d.min(axis=1)


def interstitial(host: Atoms, element: str, min_distance_A: float, rng: np.random.Generator,
                 margin_A: float = 1.5) -> Atoms:
    """``host`` with one more ``element`` atom at a uniform random position whose nearest
    neighbour (periodic images included) is at least ``min_distance_A`` away: rejection sampling.
    Along periodic cell vectors the position is uniform over the cell; along a non-periodic one
    (a sheet's normal) uniform over the atoms' extent ± ``margin_A``, so the atom lands in or next
    to the sheet rather than in the vacuum (the study's "short-range interstitials")."""
    frac = host.cell.scaled_positions(host.positions)
    lo, hi = np.zeros(3), np.ones(3)
    for axis in np.flatnonzero(~host.pbc):
        pad = margin_A / np.linalg.norm(host.cell[axis])
        lo[axis], hi[axis] = frac[:, axis].min() - pad, frac[:, axis].max() + pad
    for _ in range(MAX_TRIES):
        point = host.cell.cartesian_positions(rng.uniform(lo, hi))
        if _nearest_A(point[None], host)[0] >= min_distance_A:
            out = host.copy()
            out.append(element)
            out.positions[-1] = point
            return out
    raise ValueError(f"no position in {host.get_chemical_formula()} is {min_distance_A} Å from every atom "
                     f"after {MAX_TRIES} tries; lower min_distance_A")


def formula_unit(atoms: Atoms) -> Counter:
    """The reduced composition, e.g. {Mo: 1, S: 2} for a 3×3 MoS2 sheet."""
    counts = Counter(atoms.get_chemical_symbols())
    divisor = math.gcd(*counts.values())
    return Counter({symbol: n // divisor for symbol, n in counts.items()})


def formula_mass_g_per_mol(unit: Counter) -> float:
    return float(sum(atomic_masses[atomic_numbers[s]] * n for s, n in unit.items()))


def cube_edge_A(unit: Counter, formula_units: int, density_g_per_cm3: float) -> float:
    """Edge of the cube holding ``formula_units`` of ``unit`` at the density (1 cm³ = 1e24 Å³)."""
    volume_A3 = formula_units * formula_mass_g_per_mol(unit) / (density_g_per_cm3 * AVOGADRO_PER_MOL) * 1e24
    return volume_A3 ** (1 / 3)


def formula_units_for_box(unit: Counter, density_g_per_cm3: float, min_edge_A: float = MIN_WIDTH_A) -> int:
    """The fewest formula units whose cube at this density is at least ``min_edge_A`` wide: the
    cell-validity rule's width (tasks/cell_validity.py), so a Γ-point labeler gets the cell right."""
    n = 1
    while cube_edge_A(unit, n, density_g_per_cm3) < min_edge_A:
        n += 1
    return n


def random_packing(unit: Counter, formula_units: int, density_g_per_cm3: float, min_distance_A: float,
                   rng: np.random.Generator) -> Atoms:
    """A liquid-like configuration (the study packs bulk MoS2 at 4.8 g/cm³ with PACKMOL): a periodic
    cube of ``formula_units`` of ``unit`` at the density, atoms placed one at a time (in a random
    order of species) at uniform random positions, each rejected while it is closer than
    ``min_distance_A`` to an atom already placed (minimum image)."""
    edge = cube_edge_A(unit, formula_units, density_g_per_cm3)
    symbols = [s for s, n in sorted(unit.items()) for _ in range(n * formula_units)]
    symbols = [symbols[i] for i in rng.permutation(len(symbols))]
    placed = np.zeros((0, 3))
    for k in range(len(symbols)):
        for _ in range(MAX_TRIES):
            point = rng.uniform(0.0, edge, size=3)
            delta = placed - point
            delta -= edge * np.round(delta / edge)  # a cube: the minimum image by rounding
            if len(placed) == 0 or np.sqrt((delta ** 2).sum(axis=1)).min() >= min_distance_A:
                placed = np.vstack([placed, point])
                break
        else:
            raise ValueError(f"placed {k} of {len(symbols)} atoms in a {edge:.2f} Å cube at "
                             f"{density_g_per_cm3} g/cm³, "
                             f"then none more {min_distance_A} Å from the others in {MAX_TRIES} tries; "
                             "lower min_distance_A or the density")
    return Atoms(symbols, positions=placed, cell=[edge] * 3, pbc=True)


def scaled(host: Atoms, scale: float, min_width_A: float = MIN_WIDTH_A) -> Atoms:
    """``host`` with every interatomic distance times ``scale``: the periodic cell vectors and the
    positions (about their centroid) scale together, a non-periodic cell vector (a sheet's vacuum
    axis) is kept. The MoS2 study's "distorted monolayer unit cells with compression ratio
    0.5–1.5" come from DP-GEN's init_bulk, which scales the whole cell; keeping the vacuum axis
    keeps the sheet a sheet, with its thickness scaled like its lattice. The host is first repeated
    along each periodic axis until the scaled cell is at least ``min_width_A`` wide there (the
    cell-validity rule, tasks/cell_validity.py)."""
    widths = periodic_widths_A(Structure.from_atoms(host))
    repeat = [1 if np.isnan(w) else max(1, math.ceil(min_width_A / (scale * w) - 1e-9)) for w in widths]
    out = host.repeat(repeat)
    centre = out.positions.mean(axis=0)
    cell = out.cell.array.copy()
    cell[out.pbc] *= scale
    out.set_cell(cell, scale_atoms=False)
    out.positions = centre + scale * (out.positions - centre)
    return out


# -- MX2 monolayer defects ------------------------------------------------------------------------
@dataclass(frozen=True)
class Monolayer:
    """Which atoms of an MX2 sheet play which part."""

    metal: str
    chalcogen: str
    metals: np.ndarray  # indices
    top: np.ndarray  # indices of X above the metal plane
    bottom: np.ndarray
    thickness_A: float  # mean top-X height minus mean bottom-X height

    @property
    def chalcogens(self) -> np.ndarray:
        return np.sort(np.concatenate([self.top, self.bottom]))

    def concrete(self, name: str) -> str:
        """A defect name in this sheet's elements: V_X2 on MoS2 is V_S2, X2_M is S2_Mo."""
        return "".join({"M": self.metal, "X": self.chalcogen}.get(c, c) for c in name)


def monolayer(atoms: Atoms) -> Monolayer:
    """The parts of an MX2 sheet: two elements, one metal per two chalcogens, one metal plane."""
    counts = sorted(Counter(atoms.get_chemical_symbols()).items(), key=lambda item: item[1])
    if len(counts) != 2 or counts[1][1] != 2 * counts[0][1]:
        raise ValueError(f"MX2 defects need an MX2 monolayer (one metal per two chalcogens), got "
                         f"{atoms.get_chemical_formula()}")
    (metal, _), (chalcogen, _) = counts
    symbols = np.array(atoms.get_chemical_symbols())
    z = atoms.positions[:, 2]
    metals = np.flatnonzero(symbols == metal)
    if np.ptp(z[metals]) > 1.0:  # a bulk stack or a tilted sheet would mislabel top and bottom
        raise ValueError(f"MX2 defects need one sheet in the xy plane; the {metal} atoms of "
                         f"{atoms.get_chemical_formula()} span {np.ptp(z[metals]):.2f} Å in z")
    chalcogens = np.flatnonzero(symbols == chalcogen)
    plane = z[metals].mean()
    top, bottom = chalcogens[z[chalcogens] > plane], chalcogens[z[chalcogens] <= plane]
    if len(top) != len(bottom):
        raise ValueError(f"an MX2 sheet has as many {chalcogen} above its {metal} plane as below; "
                         f"{atoms.get_chemical_formula()} has {len(top)} and {len(bottom)}")
    return Monolayer(metal, chalcogen, metals, top, bottom, float(z[top].mean() - z[bottom].mean()))


def _mic_vectors(atoms: Atoms, origin: np.ndarray, indices: np.ndarray, in_plane: bool = False) -> np.ndarray:
    vectors = atoms.positions[indices] - origin
    if in_plane:
        vectors[:, 2] = 0.0
    return find_mic(vectors, atoms.cell, atoms.pbc)[0]


def _nearest(atoms: Atoms, origin: np.ndarray, candidates: np.ndarray, count: int,
             in_plane: bool = False) -> np.ndarray:
    """The ``count`` candidates nearest ``origin`` (minimum image; ties by index)."""
    d = np.linalg.norm(_mic_vectors(atoms, origin, candidates, in_plane), axis=1)
    return candidates[np.argsort(d, kind="stable")[:count]]


def _one_of_nearest(atoms: Atoms, origin: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> int:
    """A seeded pick among the candidates within NEAREST_TOLERANCE_A of the nearest one."""
    d = np.linalg.norm(_mic_vectors(atoms, origin, candidates), axis=1)
    return int(rng.choice(candidates[d <= d.min() + NEAREST_TOLERANCE_A]))


def _column(atoms: Atoms, sheet: Monolayer, rng: np.random.Generator) -> tuple[int, int]:
    """A random top X and the bottom X below it (nearest in-plane)."""
    top = int(rng.choice(sheet.top))
    return top, int(_nearest(atoms, atoms.positions[top], sheet.bottom, 1, in_plane=True)[0])


def _without(atoms: Atoms, removed: Sequence[int], added: Sequence[tuple[str, np.ndarray]] = ()) -> Atoms:
    out = atoms.copy()
    del out[sorted(int(i) for i in removed)]
    for symbol, position in added:
        out.append(symbol)
        out.positions[-1] = position
    return out


def _substituted(atoms: Atoms, site: int, symbol: str) -> Atoms:
    out = atoms.copy()
    out.symbols[site] = symbol
    return out


def _v_mx(atoms: Atoms, s: Monolayer, rng: np.random.Generator) -> Atoms:
    m = int(rng.choice(s.metals))
    return _without(atoms, [m, _one_of_nearest(atoms, atoms.positions[m], s.chalcogens, rng)])


def _v_mx3(atoms: Atoms, s: Monolayer, rng: np.random.Generator) -> Atoms:
    m = int(rng.choice(s.metals))
    return _without(atoms, [m, *_nearest(atoms, atoms.positions[m], s.top, 3)])


def _v_m2(atoms: Atoms, s: Monolayer, rng: np.random.Generator) -> Atoms:
    m = int(rng.choice(s.metals))
    return _without(atoms, [m, _one_of_nearest(atoms, atoms.positions[m], s.metals[s.metals != m], rng)])


def _m_x2(atoms: Atoms, s: Monolayer, rng: np.random.Generator) -> Atoms:
    top, bottom = _column(atoms, s, rng)
    to_bottom = _mic_vectors(atoms, atoms.positions[top], np.array([bottom]))[0]
    return _without(atoms, [top, bottom], [(s.metal, atoms.positions[top] + to_bottom / 2)])


def _x2_m(atoms: Atoms, s: Monolayer, rng: np.random.Generator) -> Atoms:
    m = int(rng.choice(s.metals))
    half = np.array([0.0, 0.0, s.thickness_A / 2])
    return _without(atoms, [m], [(s.chalcogen, atoms.positions[m] + half), (s.chalcogen, atoms.positions[m] - half)])


_DEFECTS: dict[str, Callable[[Atoms, Monolayer, np.random.Generator], Atoms]] = {
    "V_X": lambda a, s, rng: _without(a, [rng.choice(s.chalcogens)]),
    "V_M": lambda a, s, rng: _without(a, [rng.choice(s.metals)]),
    "V_X2": lambda a, s, rng: _without(a, _column(a, s, rng)),
    "V_M2": _v_m2,
    "V_MX": _v_mx,
    "V_MX3": _v_mx3,
    "M_X": lambda a, s, rng: _substituted(a, int(rng.choice(s.chalcogens)), s.metal),
    "M_X2": _m_x2,
    "X_M": lambda a, s, rng: _substituted(a, int(rng.choice(s.metals)), s.chalcogen),
    "X2_M": _x2_m,
}


def point_defect(host: Atoms, name: str, rng: np.random.Generator) -> Atoms:
    """One defect of an MX2 sheet at a seeded random site:

    - V_X, V_M: one X, one M removed;
    - V_X2: the two X of one column (top and the bottom one below it) removed;
    - V_M2: an M and one of its nearest M neighbours removed;
    - V_MX: an M and one of its nearest X removed;
    - V_MX3: an M and its three nearest X of the top layer removed;
    - M_X, X_M: an M on an X site, an X on an M site;
    - M_X2: an X2 column replaced by one M at the column's centre (in the metal plane);
    - X2_M: an M replaced by two X at its position ± half the sheet's X–X thickness along z.
    """
    if name not in _DEFECTS:
        raise ValueError(f"unknown MX2 defect {name!r}; known: {', '.join(DEFECT_NAMES)}")
    return _DEFECTS[name](host, monolayer(host), rng)


def nanopore(host: Atoms, n_metal: int, n_chalcogen: int, rng: np.random.Generator) -> Atoms:
    """An M_nX_m pore: a centre drawn uniformly over the sheet's cell (fractional coordinates
    along the two in-plane cell vectors: the Generator's next two uniforms), then the ``n_metal`` M
    and the ``n_chalcogen`` X nearest to it in-plane removed (minimum image; a column's top and
    bottom X are equally near, ties go to the lower atom index)."""
    sheet = monolayer(host)
    if n_metal > len(sheet.metals) or n_chalcogen > len(sheet.chalcogens):
        raise ValueError(f"a {sheet.metal}{n_metal}{sheet.chalcogen}{n_chalcogen} pore does not fit in "
                         f"{host.get_chemical_formula()}")
    u, v = rng.uniform(size=2)
    centre = u * host.cell.array[0] + v * host.cell.array[1]  # its height plays no part in-plane
    removed = [*_nearest(host, centre, sheet.metals, n_metal, in_plane=True),
               *_nearest(host, centre, sheet.chalcogens, n_chalcogen, in_plane=True)]
    return _without(host, removed)
