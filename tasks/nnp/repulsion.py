"""Short-range pair repulsion switched smoothly into a potential (the DP-Tab construction).

Per atom i:  E_i = w_i E_rep,i + (1 − w_i) E_NNP,i,   E_rep,i = ½ Σ_j V_ij(r_ij) s(r_ij)
w_i = s(σ_i), σ_i a smooth minimum of atom i's neighbour distances (as DeePMD's pair-table
blend), and the switch s(r) = 1 for r < R_c, −6u⁵ + 15u⁴ − 10u³ + 1 with u = (r − R_c)/(R_a − R_c)
for R_c ≤ r < R_a, 0 beyond. s is C² at both ends, so energy and forces are continuous.

V is the universal ZBL potential or a table from a dimer scan with the campaign's labeler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import committee_results
from tasks.nnp.derivatives import potential_outputs, single_model
from tasks.nnp.graph import Pairs

COULOMB_EV_A = 14.399645  # e²/(4πε0) in eV·Å
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def zbl_screening_length_A(z_i: float, z_j: float) -> float:
    return 0.46850 / (z_i ** 0.23 + z_j ** 0.23)


def zbl_energy_eV(r_A, z_i, z_j):
    """Universal ZBL pair energy; works on numpy arrays and torch tensors alike."""
    lib = torch if isinstance(r_A, torch.Tensor) else np
    a = 0.46850 / (z_i ** 0.23 + z_j ** 0.23)
    x = r_A / a
    phi = sum(c * lib.exp(-d * x) for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
    return COULOMB_EV_A * z_i * z_j * phi / r_A


def switch(r: torch.Tensor, r_inner_A: float, r_outer_A: float) -> torch.Tensor:
    u = torch.clamp((r - r_inner_A) / (r_outer_A - r_inner_A), 0.0, 1.0)
    return -6 * u ** 5 + 15 * u ** 4 - 10 * u ** 3 + 1


@dataclass(frozen=True)
class PairTable:
    """V(r) per element pair on a grid, evaluated by a natural cubic spline (C² inside the grid;
    linear extrapolation below the first point)."""

    elements: tuple[str, ...]
    r_A: np.ndarray  # (G,) increasing
    energy_eV: np.ndarray  # (n_pairs, G), pairs as itertools.combinations_with_replacement(elements)

    def pair_index(self, a: int, b: int) -> int:
        a, b = min(a, b), max(a, b)
        n = len(self.elements)
        return a * n - a * (a - 1) // 2 + (b - a)


def _natural_spline_second_derivatives(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.interpolate import CubicSpline

    return CubicSpline(x, y, bc_type="natural")(x, 2)


class PairRepulsion(torch.nn.Module):
    """V_ij(r) from ZBL (``table=None``) or from a PairTable, for any pair of known elements."""

    def __init__(self, elements: Sequence[str], table: PairTable | None = None):
        super().__init__()
        self.elements = tuple(elements)
        self.register_buffer("z", torch.tensor([float(atomic_numbers[e]) for e in self.elements], dtype=torch.float64))
        self.table = table
        if table is not None:
            if tuple(table.elements) != self.elements:
                raise ValueError(f"table is for {table.elements}, potential for {self.elements}")
            second = np.stack([_natural_spline_second_derivatives(table.r_A, y) for y in table.energy_eV])
            self.register_buffer("grid", torch.as_tensor(table.r_A, dtype=torch.float64))
            self.register_buffer("values", torch.as_tensor(table.energy_eV, dtype=torch.float64))
            self.register_buffer("second", torch.as_tensor(second, dtype=torch.float64))
            index = np.array([[table.pair_index(a, b) for b in range(len(self.elements))]
                              for a in range(len(self.elements))])
            self.register_buffer("table_index", torch.as_tensor(index))

    def forward(self, r: torch.Tensor, species_i: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            z = self.z.to(r.dtype)
            return zbl_energy_eV(r, z[species_i], z[species_j])
        grid, values, second = self.grid.to(r.dtype), self.values.to(r.dtype), self.second.to(r.dtype)
        row = self.table_index[species_i, species_j]
        k = torch.clamp(torch.searchsorted(grid, r.detach()) - 1, 0, len(grid) - 2)
        x0, x1 = grid[k], grid[k + 1]
        h = x1 - x0
        y0, y1 = values[row, k], values[row, k + 1]
        m0, m1 = second[row, k], second[row, k + 1]
        t = torch.clamp(r, min=grid[0])
        a, b = (x1 - t) / h, (t - x0) / h
        spline = a * y0 + b * y1 + ((a ** 3 - a) * m0 + (b ** 3 - b) * m1) * h ** 2 / 6
        slope0 = (y1 - y0) / h - h * (2 * m0 + m1) / 6  # derivative at the first grid point
        below = r < grid[0]
        return torch.where(below, values[row, 0] + slope0 * (r - grid[0]), spline)


class Blended(torch.nn.Module):
    """A model or committee with short-range repulsion switched in between r_inner_A and r_outer_A."""

    def __init__(self, inner: torch.nn.Module, repulsion: PairRepulsion, r_inner_A: float = 1.0,
                 r_outer_A: float = 1.6, softmin_alpha_A: float = 0.1):
        super().__init__()
        if not 0 < r_inner_A < r_outer_A:
            raise ValueError(f"need 0 < r_inner_A < r_outer_A, got {r_inner_A}, {r_outer_A}")
        self.inner, self.repulsion = inner, repulsion
        self.r_inner_A, self.r_outer_A, self.softmin_alpha_A = r_inner_A, r_outer_A, softmin_alpha_A
        lead = inner.members[0] if hasattr(inner, "members") else inner
        if tuple(repulsion.elements) != lead.settings.descriptor.elements:
            raise ValueError(f"repulsion elements {repulsion.elements} differ from the model's "
                             f"{lead.settings.descriptor.elements}")
        self._lead = lead

    @property
    def cutoff_A(self) -> float:
        return max(self.inner.cutoff_A, self.r_outer_A)

    @property
    def dtype(self) -> torch.dtype:
        return self._lead.dtype

    @property
    def device(self) -> torch.device:
        return self._lead.device

    @property
    def members(self):
        return getattr(self.inner, "members", None)

    def atomic_energy_fn(self, batch: AtomsBatch, pairs: Pairs):
        inner_fn = self.inner.atomic_energy_fn(batch, pairs)
        species = self._lead.species(batch.numbers)
        n_atoms = batch.positions.shape[0]

        def atomic_energies(vectors: torch.Tensor) -> torch.Tensor:
            r = torch.linalg.norm(vectors, dim=1)
            s = switch(r, self.r_inner_A, self.r_outer_A)
            pair_energy = 0.5 * self.repulsion(r, species[pairs.i], species[pairs.j]) * s
            e_rep = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, pairs.i, pair_energy)
            # smooth minimum of neighbour distances; far neighbours fade out with s so nothing jumps.
            # Shifting by each atom's nearest distance (a constant) keeps exp() from underflowing.
            nearest = torch.full((n_atoms,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(
                0, pairs.i, r.detach(), reduce="amin")
            weight = torch.exp(-(r - nearest[pairs.i]) / self.softmin_alpha_A) * s
            num = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, pairs.i, weight * r)
            den = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, pairs.i, weight)
            sigma = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                                torch.full_like(den, self.r_outer_A))
            w = switch(sigma, self.r_inner_A, self.r_outer_A)
            return w[None] * e_rep[None] + (1 - w[None]) * inner_fn(vectors)

        return atomic_energies

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                stress: bool = False) -> dict[str, torch.Tensor]:
        committee = self.members is not None
        out = potential_outputs(self.atomic_energy_fn, self.cutoff_A, batch, pairs, forces=forces or committee,
                                stress=stress)
        return committee_results(out, batch, stress) if committee else single_model(out)


def dimer_scan(element_a: str, element_b: str, distances_A: Sequence[float], labeler, box_A: float = 20.0) -> np.ndarray:
    """Binding curve E(r) − E(a) − E(b) of a dimer with the campaign's labeler (eV)."""
    from tasks.labeling import label_structure
    from tasks.structures import Structure

    def energy(atoms: Atoms) -> float:
        atoms.center()
        return label_structure(Structure.from_atoms(atoms), labeler).energy_eV

    cell = [box_A] * 3
    isolated = sum(energy(Atoms(e, cell=cell, pbc=False)) for e in (element_a, element_b))
    return np.array([energy(Atoms([element_a, element_b], positions=[[0, 0, 0], [0, 0, r]], cell=cell, pbc=False))
                     for r in distances_A]) - isolated


def table_from_dimer_scans(elements: Sequence[str], distances_A: Sequence[float], labeler) -> PairTable:
    elements = tuple(sorted(elements, key=lambda s: atomic_numbers[s]))
    rows = [dimer_scan(a, b, distances_A, labeler) for i, a in enumerate(elements) for b in elements[i:]]
    return PairTable(elements, np.asarray(distances_A, dtype=np.float64), np.stack(rows))
