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

from tasks.nnp.descriptor_terms import AngularTerms, DescriptorTerms, RadialTerms, angular_powers, cutoff_and_slope
from tasks.nnp.scatter import RowSum
from tasks.nnp.graph import Pairs, triplets


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


class _Features(torch.autograd.Function):
    """Features of pair vectors with the analytic backward of DescriptorTerms.vector_grad."""

    @staticmethod
    def forward(ctx, vectors: torch.Tensor, terms: DescriptorTerms) -> torch.Tensor:
        ctx.terms = terms
        return terms.features()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Differentiable in grad (training needs d forces / d weights); second derivatives with
        # respect to positions are not provided: the factors are constants here.
        return ctx.terms.vector_grad(grad[None])[:, 0], None


class SymmetryFunctions(torch.nn.Module):
    """G2 + G4 features of every atom of a batch, (N, n_features), from its pair vectors."""

    def __init__(self, settings: DescriptorSettings):
        super().__init__()
        self.settings = settings
        s = settings
        self.register_buffer("radial_rc", torch.as_tensor(s.cutoff_table("radial")))
        self.register_buffer("angular_rc", torch.as_tensor(s.cutoff_table("angular")))
        self.register_buffer("radial_m", torch.as_tensor(s.radial_m, dtype=torch.float64))
        self.register_buffer("angular_eta", torch.as_tensor(imbalzano_etas(s.angular_cutoff_A, s.angular_m),
                                                             dtype=torch.float64))
        pair_index = np.zeros((s.n_elements, s.n_elements), dtype=np.int64)
        for idx, (a, b) in enumerate(s.element_pairs):
            pair_index[a, b] = pair_index[b, a] = idx
        self.register_buffer("pair_index", torch.as_tensor(pair_index))
        self.register_buffer("zetas", torch.as_tensor(s.zetas, dtype=torch.float64))
        self.register_buffer("lambdas", torch.as_tensor(s.lambdas, dtype=torch.float64))

    @property
    def max_cutoff_A(self) -> float:
        return max(self.settings.radial_cutoff_A, self.settings.angular_cutoff_A)

    def forward(self, vectors: torch.Tensor, species: torch.Tensor, pairs: Pairs) -> torch.Tensor:
        return _Features.apply(vectors, self.terms(vectors.detach(), species, pairs))

    def terms(self, vectors: torch.Tensor, species: torch.Tensor, pairs: Pairs) -> DescriptorTerms:
        """The factors of features and derivatives at these pair vectors. Pairs outside their
        cutoffs are dropped at every call: a pair list carries a skin, and keeping its extra pairs
        would multiply the triplets (2.5x for Cr(1-x)S at 4.0 + 0.5 Å), which costs far more than
        finding them again."""
        r_all = torch.linalg.norm(vectors, dim=1)
        si, sj = species[pairs.i], species[pairs.j]
        n = len(species)
        return DescriptorTerms(n_atoms=n, radial=self._radial_terms(vectors, r_all, si, sj, pairs, n),
                               angular=self._angular_terms(vectors, r_all, si, sj, pairs, n),
                               n_radial_channels=self.settings.n_elements,
                               n_angular_channels=len(self.settings.element_pairs))

    def _radial_terms(self, vectors: torch.Tensor, r_all: torch.Tensor, si: torch.Tensor, sj: torch.Tensor,
                      pairs: Pairs, n_atoms: int) -> RadialTerms:
        dtype, n_elements = vectors.dtype, self.settings.n_elements
        radial = torch.nonzero(r_all < self.radial_rc.to(dtype)[si, sj]).squeeze(1)
        r = r_all[radial]
        rc = self.radial_rc.to(dtype)[si[radial], sj[radial]]
        eta = (5.0 ** (self.radial_m.to(dtype)[None, :] / 5.0) / rc[:, None]) ** 2  # per pair cutoff
        gauss = torch.exp(-eta * (r * r)[:, None])
        fc, dfc = cutoff_and_slope(r, rc)
        channel = pairs.i[radial] * n_elements + sj[radial]
        return RadialTerms(
            unit=vectors[radial] / r[:, None], g=gauss * fc[:, None],
            dg=gauss * (dfc[:, None] - 2.0 * eta * (r * fc)[:, None]), channel=channel,
            to_channels=RowSum(channel, n_atoms * n_elements, len(radial)),
            to_pairs=RowSum(radial, len(r_all), len(radial)))

    def _angular_terms(self, vectors: torch.Tensor, r_all: torch.Tensor, si: torch.Tensor, sj: torch.Tensor,
                       pairs: Pairs, n_atoms: int) -> AngularTerms:
        dtype, n_types = vectors.dtype, len(self.settings.element_pairs)
        angular = torch.nonzero(r_all < self.angular_rc.to(dtype)[si, sj]).squeeze(1)
        ra = r_all[angular]
        fc, dfc = cutoff_and_slope(ra, self.angular_rc.to(dtype)[si[angular], sj[angular]])
        eta = self.angular_eta.to(dtype)[None, :]
        gauss = torch.exp(-eta * (ra * ra)[:, None])
        q = gauss * fc[:, None]
        dq = gauss * (dfc[:, None] - 2.0 * eta * (ra * fc)[:, None])
        unit = vectors[angular] / ra[:, None]
        a, b = (torch.as_tensor(x, device=ra.device) for x in triplets(pairs.i[angular].cpu().numpy()))
        neighbour_type = sj[angular]
        channel = pairs.i[angular][a] * n_types + self.pair_index[neighbour_type[a], neighbour_type[b]]
        ua, ub = unit.index_select(0, a), unit.index_select(0, b)
        cos = (ua * ub).sum(dim=1)
        power, dpower = angular_powers(cos, self.lambdas.to(dtype), self.zetas.to(dtype))
        n_eta, n_lz = q.shape[1], power.shape[1]
        qa, qb = q.index_select(0, a), q.index_select(0, b)
        w = (qa * qb).repeat_interleave(n_lz, dim=1)  # (T, n_eta·n_lz), η slowest
        power, dpower = power.repeat(1, n_eta), dpower.repeat(1, n_eta)
        n_ang, n_tri = len(angular), len(a)
        # built for one evaluation: index_add, not sparse matrices (scatter.RowSum)
        return AngularTerms(
            a=a, b=b, channel=channel, unit=unit, dq=dq, qa=qa, qb=qb, power=power, g4=w * power,
            dg4_dcos=w * dpower, dcos_da=(ub - cos[:, None] * ua) / ra.index_select(0, a)[:, None],
            dcos_db=(ua - cos[:, None] * ub) / ra.index_select(0, b)[:, None],
            to_channels=RowSum(channel, n_atoms * n_types, n_tri), into_a=RowSum(a, n_ang, n_tri),
            into_b=RowSum(b, n_ang, n_tri), to_pairs=RowSum(angular, len(r_all), n_ang))
