"""Short-range pair repulsion switched smoothly into a potential (DP-Tab, Eq. 1–2 of the MoS2 study).

Per atom i:  E_i = w_i E_table,i + (1 − w_i) E_NN,i,   E_table,i = E_iso(Z_i) + ½ Σ_j V_ij(r_ij)
with the weight applied once: w_i = s(σ_i), σ_i a smooth minimum of atom i's neighbour distances
(as DeePMD's pair-table blend; σ = r for a dimer), and the switch s(r) = 1 for r < R_c,
−6u⁵ + 15u⁴ − 10u³ + 1 with u = (r − R_c)/(R_a − R_c) for R_c ≤ r < R_a, 0 beyond. s is C² at both
ends, so energy and forces are continuous. A dimer's binding curve is w(r) V(r) + (1 − w(r)) E_NN(r):
the table below R_c, the network beyond R_a (Blended.blend says why E_iso and a far fade are there).

V is the universal ZBL potential or a table from a dimer scan with the campaign's labeler.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers
from pydantic import Field, model_validator

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import committee_results
from tasks.nnp.derivatives import potential_outputs, single_model
from tasks.nnp.graph import Pairs, index_maps, pair_vectors, subset_pairs
from tasks.nnp.model import shared_descriptor_outputs
from tasks.potential import SavedAsPayload, from_payload
from tasks.settings import StrictModel

FORMAT = "campaign-blended-1"

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


class RepulsionSettings(StrictModel):
    """Which repulsion to blend in and where: ZBL, or a table from the campaign's dimer scans."""

    kind: Literal["zbl", "dimer_table"]
    r_inner_A: float = Field(1.0, gt=0, description="R_c: the table alone below")
    r_outer_A: float = Field(1.2, gt=0, description="R_a: the network alone beyond")

    @model_validator(mode="after")
    def _ordered(self) -> "RepulsionSettings":
        if not 0 < self.r_inner_A < self.r_outer_A:
            raise ValueError(f"need 0 < r_inner_A < r_outer_A, got {self.r_inner_A}, {self.r_outer_A}")
        return self


@dataclass(frozen=True, eq=False)
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

    def to_dict(self) -> dict:
        """JSON-able (plain lists of floats, exact)."""
        return {"elements": list(self.elements), "r_A": np.asarray(self.r_A, dtype=np.float64).tolist(),
                "energy_eV": np.asarray(self.energy_eV, dtype=np.float64).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "PairTable":
        return cls(tuple(data["elements"]), np.asarray(data["r_A"], dtype=np.float64),
                   np.asarray(data["energy_eV"], dtype=np.float64))


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

    def to_dict(self) -> dict:
        return {"elements": list(self.elements), "table": None if self.table is None else self.table.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "PairRepulsion":
        return cls(tuple(data["elements"]), None if data["table"] is None else PairTable.from_dict(data["table"]))

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


class Blended(torch.nn.Module, SavedAsPayload):
    """Any potential with atomic energies (``atomic_energy_fn``: a model, a committee) with a pair
    repulsion switched in between r_inner_A and r_outer_A (Eq. 1 of the MoS2 study)."""

    def __init__(self, inner: torch.nn.Module, repulsion: PairRepulsion, r_inner_A: float = 1.0,
                 r_outer_A: float = 1.2, softmin_alpha_A: float = 0.1, table_cutoff_A: float | None = None):
        super().__init__()
        if not 0 < r_inner_A < r_outer_A:
            raise ValueError(f"need 0 < r_inner_A < r_outer_A, got {r_inner_A}, {r_outer_A}")
        if getattr(inner, "atomic_energy_fn", None) is None:
            raise TypeError(f"a repulsion blend needs energies per atom as a function of pair vectors "
                            f"(atomic_energy_fn); {type(inner).__name__} does not give them")
        if set(repulsion.elements) != set(inner.elements):
            raise ValueError(f"repulsion elements {repulsion.elements} differ from the potential's {inner.elements}")
        self.table_cutoff_A = table_cutoff_A if table_cutoff_A is not None else 2 * r_outer_A - r_inner_A
        if not self.table_cutoff_A > r_outer_A:
            raise ValueError(f"table_cutoff_A {self.table_cutoff_A} must lie beyond r_outer_A {r_outer_A}")
        if repulsion.table is not None and repulsion.table.r_A[-1] < self.table_cutoff_A:
            raise ValueError(f"the pair table ends at {repulsion.table.r_A[-1]} Å, before the table cutoff "
                             f"{self.table_cutoff_A} Å: scan the dimers further out")
        self.inner, self.repulsion = inner, repulsion
        self.r_inner_A, self.r_outer_A, self.softmin_alpha_A = r_inner_A, r_outer_A, softmin_alpha_A
        z = [atomic_numbers[e] for e in repulsion.elements]
        lookup = torch.full((max(z) + 1,), -1, dtype=torch.long)
        lookup[z] = torch.arange(len(z))
        self.register_buffer("species_of_z", lookup.to(repulsion.z.device))

    @property
    def cutoff_A(self) -> float:
        return max(self.inner.cutoff_A, self.table_cutoff_A)

    @property
    def elements(self) -> tuple[str, ...]:
        return self.inner.elements

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def members(self):
        return getattr(self.inner, "members", None)

    @property
    def fingerprints(self):
        return getattr(self.inner, "fingerprints", None)

    def isolated_energies(self, inner_factory) -> torch.Tensor:
        """(M, n_elements): the inner potential's energy of each element's isolated atom."""
        atoms = [Atoms(e, positions=[[5.0, 5.0, 5.0]], cell=[10.0] * 3, pbc=False) for e in self.repulsion.elements]
        batch = AtomsBatch.from_atoms(atoms, dtype=self.dtype, device=self.device)
        pairs = batch.pairs(self.inner.cutoff_A)
        return inner_factory(batch, pairs)(pair_vectors(batch.positions, batch.cells, pairs))

    def blend(self, inner_factory):
        """(batch, pairs) → (pair vectors → atomic energies (M, N)) of the blend over ``inner_factory``.

        E_i = w_i T_i + (1 − w_i) E_NN,i. The table term T_i = E_iso(Z_i) + ½ Σ_j V(r_ij) f(r_ij)
        counts V from the inner potential's isolated-atom energy, because V is a binding curve
        (dimer minus separated atoms) while E_NN,i is a total energy: without it the switch would
        mix the two and add a force dw/dr · (sum of isolated-atom energies). The weight w_i = s(σ_i)
        is applied once, with σ_i a smooth minimum of atom i's neighbour distances below R_a (σ = r
        for a dimer, so E_dimer = w(r) (V(r) + E_iso) + (1 − w(r)) E_NN). f fades V out between R_a
        and table_cutoff_A: an atom with one close neighbour (w_i > 0) sums V over all others, and
        without f its energy would jump whenever another atom entered its neighbour list; f = 1
        up to R_a, so a dimer sees V unchanged wherever w > 0.
        """

        def factory(batch: AtomsBatch, pairs: Pairs):
            inner_fn = inner_factory(batch, pairs)
            species = self.species_of_z[batch.numbers]
            if bool((species < 0).any()):
                raise ValueError(f"repulsion knows {self.repulsion.elements}, not atomic numbers "
                                 f"{sorted(set(batch.numbers[species < 0].tolist()))}")
            isolated = self.isolated_energies(inner_factory)[:, species]  # (M, N)
            n_atoms = batch.positions.shape[0]

            def atomic_energies(vectors: torch.Tensor) -> torch.Tensor:
                w, table = self.weight_and_table(torch.linalg.norm(vectors, dim=1), pairs, species, isolated, n_atoms)
                return w * table + (1 - w) * inner_fn(vectors)

            return atomic_energies

        return factory

    def weight_and_table(self, r: torch.Tensor, pairs: Pairs, species: torch.Tensor, isolated: torch.Tensor,
                         n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
        """w (1, N) and the table term T (M, N) of every atom from its pair distances ``r``; pairs
        beyond table_cutoff_A may be left out (they change neither)."""
        fade = switch(r, self.r_outer_A, self.table_cutoff_A)
        pair_energy = 0.5 * self.repulsion(r, species[pairs.i], species[pairs.j]) * fade
        zeros = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        table = isolated + zeros.index_add(0, pairs.i, pair_energy)[None]
        # smooth minimum of neighbour distances; neighbours fade out with s towards R_a, so
        # nothing jumps. Shifting by each atom's nearest distance (a constant factor in
        # numerator and denominator) keeps exp() from underflowing.
        s = switch(r, self.r_inner_A, self.r_outer_A)
        nearest = torch.full((n_atoms,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(
            0, pairs.i, r.detach(), reduce="amin")
        weight = torch.exp(-(r - nearest[pairs.i]) / self.softmin_alpha_A) * s
        num = zeros.index_add(0, pairs.i, weight * r)
        den = zeros.index_add(0, pairs.i, weight)
        sigma = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                            torch.full_like(den, self.r_outer_A))
        return switch(sigma, self.r_inner_A, self.r_outer_A)[None], table

    @property
    def atomic_energy_fn(self):
        return self.blend(self.inner.atomic_energy_fn)

    def _cached_isolated_energies(self) -> torch.Tensor:
        """isolated_energies of the inner network, computed again only when its weights change
        (an optimiser step bumps their version counters, .to() moves them): MD calls for them every step."""
        version = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self.inner.parameters())
        cached = getattr(self, "_isolated_cache", None)
        if cached is None or cached[0] != version:
            with torch.no_grad():
                cached = (version, self.isolated_energies(self.inner.atomic_energy_fn).detach())
            self._isolated_cache = cached
        return cached[1]

    def _split_blend(self, batch: AtomsBatch, pairs: Pairs, forces: bool, stress: bool) -> dict[str, torch.Tensor]:
        """The blend of a Behler–Parrinello network with its fast evaluation doing the network's part.
        E = Σ_i E_NN,i + Σ_i w_i (T_i − E_NN,i): the first sum's forces, weighted per atom by (1 − w_i)
        (the network's kernels take such weights), plus autograd through w and T alone, over the
        few pairs inside table_cutoff_A with E_NN,i held fixed. The two parts add to the gradient of
        the blend; only atoms with a close neighbour cost more than the network alone."""
        inner = self.inner
        species = self.species_of_z[batch.numbers]
        n_atoms = batch.positions.shape[0]
        with torch.no_grad():
            r = torch.linalg.norm(pair_vectors(batch.positions, batch.cells, pairs), dim=1)
            near = r < self.table_cutoff_A
            close = Pairs(pairs.i[near], pairs.j[near], pairs.shift[near], pairs.system[near])
            isolated = self._cached_isolated_energies()[:, species]
            w, _ = self.weight_and_table(r[near], close, species, isolated, n_atoms)
        network = shared_descriptor_outputs(inner.descriptor, [inner.atomic], inner.species(batch.numbers), batch,
                                            pairs, forces=forces, stress=stress, atom_weights=1 - w[0], atomic=True)
        e_network = network["atomic_energies"][0].detach()

        def correction(batch_: AtomsBatch, pairs_: Pairs):
            def energies(vectors: torch.Tensor) -> torch.Tensor:
                weight, table = self.weight_and_table(torch.linalg.norm(vectors, dim=1), close, species, isolated,
                                                      n_atoms)
                return weight * (table - e_network[None])
            return energies

        extra = potential_outputs(correction, self.table_cutoff_A, batch, close, forces=forces, stress=stress)
        return {name: network[name][0] + extra[name][0] for name in ("energy", "forces", "stress") if name in extra}

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                stress: bool = False, create_graph: bool = False) -> dict[str, torch.Tensor]:
        """As the inner potential's outputs (a committee's deviations for a blended committee);
        create_graph keeps forces differentiable with respect to the weights (training)."""
        committee = self.members is not None
        if not create_graph and not committee:
            return self._by_contact(batch, pairs if pairs is not None else batch.pairs(self.cutoff_A), forces, stress)
        out = potential_outputs(self.atomic_energy_fn, self.cutoff_A, batch, pairs, forces=forces or committee,
                                stress=stress, create_graph=create_graph)
        return committee_results(out, batch, stress) if committee else single_model(out)

    def _blended_outputs(self, batch: AtomsBatch, pairs: Pairs, forces: bool, stress: bool) -> dict:
        if hasattr(self.inner, "descriptor") and hasattr(self.inner, "atomic"):
            return self._split_blend(batch, pairs, forces, stress)
        return single_model(potential_outputs(self.atomic_energy_fn, self.cutoff_A, batch, pairs, forces=forces,
                                              stress=stress))

    def _by_contact(self, batch: AtomsBatch, pairs: Pairs, forces: bool, stress: bool) -> dict[str, torch.Tensor]:
        """A system with no pair closer than R_a has w_i = 0 on every atom, and its energy, forces
        and stress are the inner potential's exactly (the switch is flat there): such systems take
        the inner potential's own, faster evaluation, the others the blend. In a cascade most
        systems, most of the time, have no close contact."""
        r = torch.linalg.norm(pair_vectors(batch.positions, batch.cells, pairs), dim=1).detach()
        contact = torch.zeros(batch.n_systems, dtype=torch.bool, device=r.device)
        contact[pairs.system[r < self.r_outer_A]] = True
        if not bool(contact.any()):
            return self.inner(batch, pairs, forces=forces, stress=stress)
        if bool(contact.all()):
            return self._blended_outputs(batch, pairs, forces, stress)
        parts = []
        for systems, evaluate in ((contact, self._blended_outputs), (~contact, self._inner_outputs)):
            atoms = systems[batch.system]
            atom_map, system_map = index_maps(atoms, systems)
            parts.append((atoms, systems, evaluate(batch.subset(atoms, systems, system_map),
                                                   subset_pairs(pairs, atom_map, system_map), forces, stress)))
        out = {}
        for name, reference in parts[0][2].items():
            per_atom = name == "forces"
            merged = torch.empty((len(batch.system) if per_atom else batch.n_systems, *reference.shape[1:]),
                                 dtype=reference.dtype, device=reference.device)
            for atoms, systems, values in parts:
                merged[atoms if per_atom else systems] = values[name].detach()
            out[name] = merged
        return out

    def _inner_outputs(self, batch: AtomsBatch, pairs: Pairs, forces: bool, stress: bool) -> dict:
        return self.inner(batch, pairs, forces=forces, stress=stress)

    # -- members of a committee evaluated together (tasks/potential.py) --------------------------
    def shares_evaluation_with(self, other) -> bool:
        return (isinstance(other, Blended) and self._blend_settings() == other._blend_settings()
                and hasattr(self.inner, "atomic_energy_fn_together") and self.inner.shares_evaluation_with(other.inner))

    def evaluate_together(self, members, batch: AtomsBatch, pairs: Pairs | None, *, forces: bool,
                          stress: bool) -> dict[str, torch.Tensor]:
        """One inner evaluation for all members (their networks on one descriptor), one blend."""
        return potential_outputs(self.atomic_energy_fn_together(members), self.cutoff_A, batch, pairs,
                                 forces=forces, stress=stress)

    def atomic_energy_fn_together(self, members, batch: AtomsBatch | None = None, pairs: Pairs | None = None):
        factory = self.blend(partial(self.inner.atomic_energy_fn_together, [m.inner for m in members]))
        return factory if batch is None else factory(batch, pairs)

    # -- persistence --------------------------------------------------------------------------
    def _blend_settings(self) -> dict:
        return {"repulsion": self.repulsion.to_dict(), "r_inner_A": self.r_inner_A, "r_outer_A": self.r_outer_A,
                "softmin_alpha_A": self.softmin_alpha_A, "table_cutoff_A": self.table_cutoff_A}

    def to_payload(self) -> dict:
        return {"format": FORMAT, "inner": self.inner.to_payload(), **self._blend_settings()}

    @classmethod
    def from_payload(cls, payload: dict, dtype: torch.dtype = torch.float64,
                     device: str | torch.device = "cpu") -> "Blended":
        inner = from_payload(payload["inner"], dtype, device)
        repulsion = PairRepulsion.from_dict(payload["repulsion"]).to(device)
        return cls(inner, repulsion, payload["r_inner_A"], payload["r_outer_A"], payload["softmin_alpha_A"],
                   payload["table_cutoff_A"])


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


def dimer_scan_batch(keys: list[str], pairs: list[tuple[str, str]], distances_A: Sequence[float],
                     labeler) -> list:
    """Dimer binding curves of several element pairs in one task (a campaign's table stage)."""
    from tasks.outcome import run_each

    return run_each(lambda pair: dimer_scan(pair[0], pair[1], distances_A, labeler), keys, pairs)
