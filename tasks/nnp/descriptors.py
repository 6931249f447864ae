"""Atom-centred symmetry functions (Behler–Parrinello), batched and differentiable in torch.

Radial   G2_i = Σ_j exp(−η r_ij²) f_c(r_ij)                      (r_s = 0)
Angular  G5_i = 2^{1−ζ} Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(−η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)
Cutoff   f_c(r) = tanh³(1 − r/r_c) for r < r_c, else 0
η from the Imbalzano rule η_m = (n^{m/n} / r_c)² (n = ``imbalzano_n``, 5 by default).

The angular form has no f_c(r_jk) factor for the third side: it is G5 (n2p2's type 9), not
Behler's G4 (type 3). Radial features are grouped by neighbour element, angular ones by the
unordered element pair of the two neighbours. Cutoffs are per element pair (radial and angular
separately): a radial pair's η_m uses its pair's cutoff, the angular η_e the global angular cutoff.

``SymmetryParameters`` holds every number of these formulas, derived once from the settings; the
torch terms (``SymmetryFunctions``) and the generated CPU kernels (cpu_inference.kernel_shape)
both read it, and tests/test_descriptor_terms.py checks both against the formulas written out.
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
    """η_m = (n^{m/n} / r_c)² in 1/Å² (Imbalzano et al. 2018): the one place this rule is written."""
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
    # n of the Imbalzano η rule, for radial and angular functions; model files without it used 5
    imbalzano_n: int = 5

    def __post_init__(self):
        ordered = tuple(sorted(self.elements, key=lambda s: atomic_numbers[s]))
        object.__setattr__(self, "elements", ordered)
        if self.imbalzano_n <= 0:
            raise ValueError(f"imbalzano_n={self.imbalzano_n} must be positive")
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


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class SymmetryParameters:
    """Every number of the G2 and G5 formulas, derived once from DescriptorSettings. The torch terms
    (SymmetryFunctions) and the generated CPU kernels (cpu_inference.kernel_shape) read these;
    neither derives a parameter itself."""

    n_elements: int
    element_pairs: tuple[tuple[int, int], ...]  # angular channel order: unordered neighbour element pairs
    pair_type: np.ndarray  # (E, E) int64: index in element_pairs of the pair {a, b}
    radial_cutoff_A: np.ndarray  # (E, E) per element pair
    angular_cutoff_A: np.ndarray  # (E, E)
    # η_m r_c²: the radial η_m of a pair is scale_m / r_c² with r_c its pair's radial cutoff
    radial_eta_scale: tuple[float, ...]
    angular_eta_per_A2: tuple[float, ...]  # η_e, from the global angular cutoff
    angular_exponent_max: float  # largest η_e r² inside the angular cutoffs
    lambdas: tuple[float, ...]
    zetas: tuple[int, ...]

    @classmethod
    def from_settings(cls, s: DescriptorSettings) -> "SymmetryParameters":
        pair_type = np.zeros((s.n_elements, s.n_elements), dtype=np.int64)
        for index, (a, b) in enumerate(s.element_pairs):
            pair_type[a, b] = pair_type[b, a] = index
        angular_etas = tuple(imbalzano_etas(s.angular_cutoff_A, s.angular_m, s.imbalzano_n))
        # the rule at r_c = 1 Å gives η_m r_c², which each pair divides by its own cutoff squared
        radial_eta_scale = tuple(imbalzano_etas(1.0, s.radial_m, s.imbalzano_n))
        return cls(n_elements=s.n_elements, element_pairs=tuple(s.element_pairs), pair_type=_frozen(pair_type),
                   radial_cutoff_A=_frozen(s.cutoff_table("radial")),
                   angular_cutoff_A=_frozen(s.cutoff_table("angular")),
                   radial_eta_scale=radial_eta_scale, angular_eta_per_A2=angular_etas,
                   angular_exponent_max=max(angular_etas) * s.angular_cutoff_A ** 2,
                   lambdas=tuple(float(x) for x in s.lambdas), zetas=tuple(int(z) for z in s.zetas))


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
    """G2 + G5 features of every atom of a batch, (N, n_features), from its pair vectors."""

    def __init__(self, settings: DescriptorSettings):
        super().__init__()
        self.settings = settings
        self.symmetry = p = SymmetryParameters.from_settings(settings)
        # torch copies of the parameters, so they follow the module's device; not saved: the model
        # file stores the settings they come from
        for name, value, dtype in (("radial_cutoff_A", p.radial_cutoff_A, torch.float64),
                                   ("angular_cutoff_A", p.angular_cutoff_A, torch.float64),
                                   ("radial_eta_scale", p.radial_eta_scale, torch.float64),
                                   ("angular_eta_per_A2", p.angular_eta_per_A2, torch.float64),
                                   ("pair_type", p.pair_type, torch.int64), ("zetas", p.zetas, torch.float64),
                                   ("lambdas", p.lambdas, torch.float64)):
            self.register_buffer(name, torch.tensor(np.asarray(value), dtype=dtype), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name, expected in self._saved_copies().items():
            key = prefix + name
            if key not in state_dict:
                continue
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            saved = state_dict[key].detach().cpu().to(expected.dtype)
            if saved.shape != expected.shape or not torch.allclose(saved, expected, rtol=1e-6, atol=0.0):
                error_msgs.append(f"{key} saved in the file, {saved.tolist()}, is not what its descriptor "
                                  f"settings give, {expected.tolist()}")

    def _saved_copies(self) -> dict[str, torch.Tensor]:
        """What model files written before the parameters came from the settings alone carry in their
        state: copies of derived numbers, which must agree with the settings saved beside them."""
        p = self.symmetry
        values = {"radial_rc": p.radial_cutoff_A, "angular_rc": p.angular_cutoff_A, "radial_m": self.settings.radial_m,
                  "angular_eta": p.angular_eta_per_A2, "pair_index": p.pair_type, "zetas": p.zetas,
                  "lambdas": p.lambdas}
        return {name: torch.tensor(np.asarray(value), dtype=torch.int64 if name == "pair_index" else torch.float64)
                for name, value in values.items()}

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
                               n_radial_channels=self.symmetry.n_elements,
                               n_angular_channels=len(self.symmetry.element_pairs))

    def _radial_terms(self, vectors: torch.Tensor, r_all: torch.Tensor, si: torch.Tensor, sj: torch.Tensor,
                      pairs: Pairs, n_atoms: int) -> RadialTerms:
        dtype, n_elements = vectors.dtype, self.symmetry.n_elements
        radial = torch.nonzero(r_all < self.radial_cutoff_A.to(dtype)[si, sj]).squeeze(1)
        r = r_all[radial]
        rc = self.radial_cutoff_A.to(dtype)[si[radial], sj[radial]]
        eta = self.radial_eta_scale.to(dtype)[None, :] / (rc * rc)[:, None]  # each pair's own cutoff
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
        dtype, n_types = vectors.dtype, len(self.symmetry.element_pairs)
        angular = torch.nonzero(r_all < self.angular_cutoff_A.to(dtype)[si, sj]).squeeze(1)
        ra = r_all[angular]
        fc, dfc = cutoff_and_slope(ra, self.angular_cutoff_A.to(dtype)[si[angular], sj[angular]])
        eta = self.angular_eta_per_A2.to(dtype)[None, :]
        gauss = torch.exp(-eta * (ra * ra)[:, None])
        q = gauss * fc[:, None]
        dq = gauss * (dfc[:, None] - 2.0 * eta * (ra * fc)[:, None])
        unit = vectors[angular] / ra[:, None]
        a, b = (torch.as_tensor(x, device=ra.device) for x in triplets(pairs.i[angular].cpu().numpy()))
        neighbour_type = sj[angular]
        channel = pairs.i[angular][a] * n_types + self.pair_type[neighbour_type[a], neighbour_type[b]]
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
            a=a, b=b, channel=channel, unit=unit, dq=dq, qa=qa, qb=qb, power=power, g5=w * power,
            dg5_dcos=w * dpower, dcos_da=(ub - cos[:, None] * ua) / ra.index_select(0, a)[:, None],
            dcos_db=(ua - cos[:, None] * ub) / ra.index_select(0, b)[:, None],
            to_channels=RowSum(channel, n_atoms * n_types, n_tri), into_a=RowSum(a, n_ang, n_tri),
            into_b=RowSum(b, n_ang, n_tri), to_pairs=RowSum(angular, len(r_all), n_ang))
