"""Atom-centred symmetry functions (Behler–Parrinello), batched and differentiable in torch.

Radial   G2_i = Σ_j exp(−η r_ij²) f_c(r_ij)                      (r_s = 0)
Angular  G4_i = 2^{1−ζ} Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(−η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)
Cutoff   f_c(r) = tanh³(1 − r/r_c) for r < r_c, else 0
η from the Imbalzano rule η_m = (n^{m/n} / r_c)², n = 5.

Radial features are grouped by neighbour element, angular ones by the unordered element pair
of the two neighbours. Cutoffs are per element pair (radial and angular separately).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from ase.data import atomic_numbers

from tasks.nnp.graph import Pairs, pair_vectors, triplets


def imbalzano_etas(cutoff_A: float, m_values, n: int = 5) -> list[float]:
    return [(n ** (m / n) / cutoff_A) ** 2 for m in m_values]


@dataclass(frozen=True)
class DescriptorSettings:
    elements: tuple[str, ...]
    radial_cutoff_A: float = 6.0
    angular_cutoff_A: float = 4.5
    # per element pair overrides, e.g. {"Mo-S": 5.0}; symmetric, must not exceed the global cutoffs
    radial_pair_cutoffs_A: dict[str, float] = field(default_factory=dict)
    angular_pair_cutoffs_A: dict[str, float] = field(default_factory=dict)
    radial_m: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    angular_m: tuple[int, ...] = (0, 2, 4)
    zetas: tuple[int, ...] = (1, 4, 24)
    lambdas: tuple[int, ...] = (1, -1)

    def __post_init__(self):
        ordered = tuple(sorted(self.elements, key=lambda s: atomic_numbers[s]))
        object.__setattr__(self, "elements", ordered)
        for name, table, limit in (("radial", self.radial_pair_cutoffs_A, self.radial_cutoff_A),
                                   ("angular", self.angular_pair_cutoffs_A, self.angular_cutoff_A)):
            for pair, value in table.items():
                a, _, b = pair.partition("-")
                if a not in ordered or b not in ordered:
                    raise ValueError(f"{name} pair cutoff {pair!r} names an element not in {ordered}")
                if not 0 < value <= limit:
                    raise ValueError(f"{name} pair cutoff {pair}={value} must be in (0, {limit}]")

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    @property
    def element_pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations_with_replacement(range(self.n_elements), 2))

    @property
    def n_radial(self) -> int:
        return self.n_elements * len(self.radial_m)

    @property
    def n_features(self) -> int:
        angular = len(self.element_pairs) * len(self.angular_m) * len(self.lambdas) * len(self.zetas)
        return self.n_radial + angular

    def cutoff_table(self, kind: str) -> np.ndarray:
        default = self.radial_cutoff_A if kind == "radial" else self.angular_cutoff_A
        overrides = self.radial_pair_cutoffs_A if kind == "radial" else self.angular_pair_cutoffs_A
        table = np.full((self.n_elements, self.n_elements), default)
        for pair, value in overrides.items():
            a, _, b = pair.partition("-")
            ia, ib = self.elements.index(a), self.elements.index(b)
            table[ia, ib] = table[ib, ia] = value
        return table

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cutoff_function(r: torch.Tensor, r_c: torch.Tensor) -> torch.Tensor:
    inside = r < r_c
    return torch.where(inside, torch.tanh(torch.clamp(1.0 - r / r_c, min=0.0)) ** 3, torch.zeros_like(r))


class SymmetryFunctions(torch.nn.Module):
    """G2 + G4 features for every atom of a batch: (N, n_features)."""

    def __init__(self, settings: DescriptorSettings):
        super().__init__()
        self.settings = settings
        s = settings
        self.register_buffer("radial_rc", torch.as_tensor(s.cutoff_table("radial")))
        self.register_buffer("angular_rc", torch.as_tensor(s.cutoff_table("angular")))
        self.register_buffer("radial_m", torch.as_tensor(s.radial_m, dtype=torch.float64))
        self.register_buffer("angular_eta", torch.as_tensor(imbalzano_etas(s.angular_cutoff_A, s.angular_m)))
        pair_index = np.zeros((s.n_elements, s.n_elements), dtype=np.int64)
        for idx, (a, b) in enumerate(s.element_pairs):
            pair_index[a, b] = pair_index[b, a] = idx
        self.register_buffer("pair_index", torch.as_tensor(pair_index))
        self.register_buffer("zetas", torch.as_tensor(s.zetas, dtype=torch.float64))
        self.register_buffer("lambdas", torch.as_tensor(s.lambdas, dtype=torch.float64))

    @property
    def max_cutoff_A(self) -> float:
        return max(self.settings.radial_cutoff_A, self.settings.angular_cutoff_A)

    def forward(self, positions: torch.Tensor, cells: torch.Tensor, species: torch.Tensor, pairs: Pairs) -> torch.Tensor:
        s = self.settings
        n_atoms = positions.shape[0]
        dtype = positions.dtype
        vectors = pair_vectors(positions, cells, pairs)
        r = torch.linalg.norm(vectors, dim=1)
        si, sj = species[pairs.i], species[pairs.j]

        # radial: channel = neighbour element × η
        rc = self.radial_rc.to(dtype)[si, sj]
        eta = (5.0 ** (self.radial_m.to(dtype)[None, :] / 5.0) / rc[:, None]) ** 2  # per pair cutoff
        g2 = torch.exp(-eta * r[:, None] ** 2) * cutoff_function(r, rc)[:, None]
        radial = torch.zeros(n_atoms * s.n_elements, len(s.radial_m), dtype=dtype, device=positions.device)
        radial = radial.index_add(0, pairs.i * s.n_elements + sj, g2).reshape(n_atoms, s.n_radial)

        # angular: pairs inside the angular cutoff, combined two by two around their center
        rc_ang = self.angular_rc.to(dtype)[si, sj]
        keep = torch.nonzero(r < rc_ang).squeeze(1)
        center = pairs.i[keep]
        a, b = (torch.as_tensor(x, device=positions.device) for x in triplets(center.cpu().numpy()))
        ia, ib = keep[a], keep[b]
        ra, rb = r[ia], r[ib]
        cos = (vectors[ia] * vectors[ib]).sum(dim=1) / (ra * rb)
        radial_part = cutoff_function(ra, rc_ang[ia]) * cutoff_function(rb, rc_ang[ib])
        gauss = torch.exp(-self.angular_eta.to(dtype)[None, :] * (ra ** 2 + rb ** 2)[:, None])  # (T, n_eta)
        base = torch.clamp(1.0 + self.lambdas.to(dtype)[None, :] * cos[:, None], min=0.0)  # (T, n_lambda)
        zetas = self.zetas.to(dtype)
        power = base[:, :, None] ** zetas[None, None, :] * (2.0 ** (1.0 - zetas))[None, None, :]  # (T, nl, nz)
        g4 = (gauss[:, :, None, None] * power[:, None, :, :]) * radial_part[:, None, None, None]
        n_pair_types = len(s.element_pairs)
        channel = pairs.i[ia] * n_pair_types + self.pair_index[sj[ia], sj[ib]]
        width = g4.shape[1] * g4.shape[2] * g4.shape[3]
        angular = torch.zeros(n_atoms * n_pair_types, width, dtype=dtype, device=positions.device)
        angular = angular.index_add(0, channel, g4.reshape(-1, width)).reshape(n_atoms, n_pair_types * width)
        return torch.cat([radial, angular], dim=1)
