"""Symmetry functions with their analytic derivatives, evaluated once and contracted per model.

Autograd through the G4 broadcasts costs many passes over (triplets × 18) arrays and keeps every
intermediate alive; here the forward pass keeps only a few factors per pair and per triplet, and
``vector_grad`` turns dE/dG of any number M of models into dE/d(pair vector) in a few passes,
and the sums over triplets are sparse matrix products built once per neighbour list (scatter.py).
That is what lets a committee share one descriptor evaluation: the factors are computed once,
only the contraction with each member's dE/dG is repeated.

Pair vectors v (P, 3) are the only geometric input; forces and virial follow from dE/dv
(derivatives.py). Factorisation used for the angular terms, with Q_e(r) = exp(−η_e r²) f_c(r):

  G4_{e,λ,ζ} = Σ_t Q_e(r_a) Q_e(r_b) · 2^{1−ζ} (1 + λ cos θ_t)^ζ      (t = pair of pairs (a, b))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.nnp.scatter import RowSum


def cutoff_and_slope(r: torch.Tensor, r_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f_c = tanh³(1 − r/r_c) inside r_c, 0 beyond; and df_c/dr."""
    t = torch.tanh(torch.clamp(1.0 - r / r_c, min=0.0))
    t2 = t * t
    return t2 * t, -3.0 * t2 * (1.0 - t2) / r_c


@dataclass(frozen=True, eq=False)
class TripletIndex:
    """Which pairs enter the radial and angular sums at the current positions, and the sums."""

    radial: torch.Tensor  # (Pr,) indices into the pair list
    radial_channel: torch.Tensor  # (Pr,) center * n_elements + neighbour element
    angular: torch.Tensor  # (Pa,) indices into the pair list
    a: torch.Tensor  # (T,) indices into ``angular``
    b: torch.Tensor  # (T,)
    angular_channel: torch.Tensor  # (T,) center * n_pair_types + pair type of (a, b)
    sum_radial: RowSum  # radial pairs → (atom, element) channels
    sum_angular: RowSum  # triplets → (atom, pair type) channels
    sum_into_a: RowSum  # triplets → their first angular pair
    sum_into_b: RowSum  # triplets → their second angular pair
    radial_into_pairs: RowSum  # radial pairs → the whole pair list
    angular_into_pairs: RowSum

    @classmethod
    def build(cls, n_pairs: int, radial: torch.Tensor, radial_channel: torch.Tensor, n_radial_channels: int,
              angular: torch.Tensor, a: torch.Tensor, b: torch.Tensor, angular_channel: torch.Tensor,
              n_angular_channels: int) -> "TripletIndex":
        n_ang, n_tri = len(angular), len(a)
        # built for one evaluation: index_add, not sparse matrices (scatter.RowSum)
        return cls(radial, radial_channel, angular, a, b, angular_channel,
                   sum_radial=RowSum(radial_channel, n_radial_channels, len(radial)),
                   sum_angular=RowSum(angular_channel, n_angular_channels, n_tri),
                   sum_into_a=RowSum(a, n_ang, n_tri), sum_into_b=RowSum(b, n_ang, n_tri),
                   radial_into_pairs=RowSum(radial, n_pairs, len(radial)),
                   angular_into_pairs=RowSum(angular, n_pairs, n_ang))


@dataclass(frozen=True, eq=False)
class DescriptorTerms:
    """Everything the features and their derivatives need, for one set of pair vectors."""

    n_atoms: int
    index: TripletIndex
    # radial, per radial pair
    radial_unit: torch.Tensor  # (Pr, 3)
    radial_g: torch.Tensor  # (Pr, n_m)
    radial_dg: torch.Tensor  # (Pr, n_m) d/dr
    # angular, per angular pair
    angular_unit: torch.Tensor  # (Pa, 3)
    dq: torch.Tensor  # (Pa, n_eta) d/dr of Q_e(r) = exp(−η_e r²) f_c(r)
    # angular, per triplet
    qa: torch.Tensor  # (T, n_eta) q of the first pair
    qb: torch.Tensor  # (T, n_eta)
    # per triplet and feature k = (η, λ, ζ), contiguous: broadcasting a 6-wide inner dimension
    # against (T, 3) runs several times slower on CPU than multiplying two (T, 18) arrays
    power: torch.Tensor  # (T, n_eta·n_lz) 2^{1−ζ}(1 + λ cos)^ζ repeated over η
    g4: torch.Tensor  # (T, n_eta·n_lz) the triplet's G4 contributions Q_e(a) Q_e(b) · power
    dg4_dcos: torch.Tensor  # (T, n_eta·n_lz)
    dcos_da: torch.Tensor  # (T, 3) dcos/dv_a
    dcos_db: torch.Tensor  # (T, 3)
    n_radial_channels: int  # n_elements
    n_angular_channels: int  # n_pair_types

    @property
    def n_m(self) -> int:
        return self.radial_g.shape[1]

    @property
    def n_eta(self) -> int:
        return self.dq.shape[1]

    @property
    def n_lz(self) -> int:
        return self.power.shape[1] // self.n_eta

    def features(self) -> torch.Tensor:
        """(N, n_features): radial block (neighbour element × m), then angular (pair type × η × λ × ζ)."""
        ix, n = self.index, self.n_atoms
        radial = ix.sum_radial(self.radial_g)  # (N·n_elements, n_m)
        angular = ix.sum_angular(self.g4)
        return torch.cat([radial.reshape(n, -1), angular.reshape(n, -1)], dim=1)

    def vector_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """dE/dG (M, N, n_features) of M models → dE/dv (P, M, 3) over the whole pair list.

        Rows (pairs, triplets) come first and models last, so every gather and sum works on
        whole rows. Written in plain differentiable torch operations of ``grad``, so training
        can take the derivative of forces with respect to network weights (create_graph)."""
        ix = self.index
        m_models, n = grad.shape[0], self.n_atoms
        n_radial = self.n_radial_channels * self.n_m
        g_rad = grad[:, :, :n_radial].reshape(m_models, n, self.n_radial_channels, self.n_m)
        g_rad = g_rad.permute(1, 2, 0, 3).reshape(n * self.n_radial_channels, m_models, self.n_m)
        width = self.n_eta * self.n_lz
        g_ang = grad[:, :, n_radial:].reshape(m_models, n, self.n_angular_channels, width)
        g_ang = g_ang.permute(1, 2, 0, 3).reshape(n * self.n_angular_channels, m_models, width)

        de_dr = (g_rad.index_select(0, ix.radial_channel) * self.radial_dg[:, None, :]).sum(-1)  # (Pr, M)
        out = ix.radial_into_pairs(de_dr[..., None] * self.radial_unit[:, None, :])

        gt = g_ang.index_select(0, ix.angular_channel)  # (T, M, width)
        n_tri = gt.shape[0]
        v = (gt * self.power[:, None, :]).reshape(n_tri, m_models, self.n_eta, self.n_lz).sum(-1)  # Σ_λζ g P
        de_dcos = (gt * self.dg4_dcos[:, None, :]).sum(-1)  # (T, M)
        # dE/dr of each angular pair: Σ_t Σ_e V_e Q_e(other pair) dQ_e/dr(this pair)
        partner = ix.sum_into_a(v * self.qb[:, None, :]) + ix.sum_into_b(v * self.qa[:, None, :])  # (Pa, M, n_eta)
        de_dr_ang = (partner * self.dq[:, None, :]).sum(-1)  # (Pa, M)
        d_ang = (de_dr_ang[..., None] * self.angular_unit[:, None, :]
                 + ix.sum_into_a(de_dcos[..., None] * self.dcos_da[:, None, :])
                 + ix.sum_into_b(de_dcos[..., None] * self.dcos_db[:, None, :]))
        return out + ix.angular_into_pairs(d_ang)


def angular_powers(cos: torch.Tensor, lambdas: torch.Tensor, zetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2^{1−ζ}(1 + λ cos)^ζ and its cos-derivative, (T, n_λ·n_ζ) λ-major (ζ fastest).

    ζ is a small integer, so powers come from repeated multiplication of a few columns instead of
    pow() on every element (pow dominated the old profile)."""
    base = torch.clamp(1.0 + cos[:, None] * lambdas[None, :], min=0.0)  # (T, n_λ)
    zeta_list = [int(z) for z in zetas.tolist()]
    cache = {0: torch.ones_like(base), 1: base}

    def power(k: int) -> torch.Tensor:
        if k not in cache:
            half = power(k // 2)
            cache[k] = half * half if k % 2 == 0 else half * half * base
        return cache[k]

    values, slopes = [], []
    for z in zeta_list:
        scale = 2.0 ** (1 - z)
        values.append(scale * power(z))
        slopes.append((scale * z) * power(z - 1) * lambdas[None, :])
    width = len(lambdas) * len(zeta_list)
    value = torch.stack(values, dim=2).reshape(len(cos), width)  # (T, n_λ, n_ζ) → λ-major
    slope = torch.stack(slopes, dim=2).reshape(len(cos), width)
    return value, slope
