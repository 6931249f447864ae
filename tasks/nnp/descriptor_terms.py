"""Symmetry functions with their analytic derivatives, evaluated once and contracted per model.

Autograd through the G5 broadcasts costs many passes over (triplets × 18) arrays and keeps every
intermediate alive; here the forward pass keeps only a few factors per pair and per triplet, and
``vector_grad`` turns dE/dG of any number M of models into dE/d(pair vector) in a few passes.
That is what lets a committee share one descriptor evaluation: the factors are computed once,
only the contraction with each member's dE/dG is repeated.

These torch terms run on any device and are differentiable in dE/dG, which training needs; CPU
inference uses the compiled kernels instead (cpu_inference.py).

Pair vectors v (P, 3) are the only geometric input; forces and virial follow from dE/dv
(derivatives.py). Factorisation used for the angular terms, with Q_e(r) = exp(−η_e r²) f_c(r):

  G5_{e,λ,ζ} = Σ_t Q_e(r_a) Q_e(r_b) · 2^{1−ζ} (1 + λ cos θ_t)^ζ      (t = pair of pairs (a, b))
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
class RadialTerms:
    """G2 factors of the pairs inside their radial cutoffs."""

    unit: torch.Tensor  # (Pr, 3)
    g: torch.Tensor  # (Pr, n_m)
    dg: torch.Tensor  # (Pr, n_m) d/dr
    channel: torch.Tensor  # (Pr,) centre * n_elements + neighbour element
    to_channels: RowSum  # radial pairs → (atom, element) channels
    to_pairs: RowSum  # radial pairs → the whole pair list

    def features(self) -> torch.Tensor:
        return self.to_channels(self.g)  # (channels, n_m)

    def pair_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """dE/dG (channels, M, n_m) → dE/dv (P, M, 3)."""
        de_dr = (grad.index_select(0, self.channel) * self.dg[:, None, :]).sum(-1)  # (Pr, M)
        return self.to_pairs(de_dr[..., None] * self.unit[:, None, :])


@dataclass(frozen=True, eq=False)
class AngularTerms:
    """G5 factors per angular pair and per triplet as torch arrays: any device, and
    differentiable in dE/dG (training)."""

    a: torch.Tensor  # (T,) first angular pair of each triplet
    b: torch.Tensor  # (T,)
    channel: torch.Tensor  # (T,) centre * n_pair_types + pair type of (a, b)
    unit: torch.Tensor  # (Pa, 3)
    dq: torch.Tensor  # (Pa, n_eta) d/dr of Q_e(r) = exp(−η_e r²) f_c(r)
    qa: torch.Tensor  # (T, n_eta) q of the first pair
    qb: torch.Tensor  # (T, n_eta)
    # per triplet and feature k = (η, λ, ζ), contiguous: broadcasting a 6-wide inner dimension
    # against (T, 3) runs several times slower on CPU than multiplying two (T, 18) arrays
    power: torch.Tensor  # (T, n_eta·n_lz) 2^{1−ζ}(1 + λ cos)^ζ repeated over η
    g5: torch.Tensor  # (T, n_eta·n_lz) the triplet's G5 contributions Q_e(a) Q_e(b) · power
    dg5_dcos: torch.Tensor  # (T, n_eta·n_lz)
    dcos_da: torch.Tensor  # (T, 3) dcos/dv_a
    dcos_db: torch.Tensor  # (T, 3)
    to_channels: RowSum  # triplets → (atom, pair type) channels
    into_a: RowSum  # triplets → their first angular pair
    into_b: RowSum
    to_pairs: RowSum  # angular pairs → the whole pair list

    def features(self) -> torch.Tensor:
        return self.to_channels(self.g5)  # (channels, n_eta·n_lz)

    def pair_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """dE/dG (channels, M, n_eta·n_lz) → dE/dv (P, M, 3). Rows (pairs, triplets) come first
        and models last, so every gather and sum works on whole rows."""
        n_eta = self.dq.shape[1]
        gt = grad.index_select(0, self.channel)  # (T, M, width)
        n_tri, m_models = gt.shape[:2]
        n_lz = self.power.shape[1] // n_eta
        v = (gt * self.power[:, None, :]).reshape(n_tri, m_models, n_eta, n_lz).sum(-1)  # Σ_λζ g P
        de_dcos = (gt * self.dg5_dcos[:, None, :]).sum(-1)  # (T, M)
        # dE/dr of each angular pair: Σ_t Σ_e V_e Q_e(other pair) dQ_e/dr(this pair)
        partner = self.into_a(v * self.qb[:, None, :]) + self.into_b(v * self.qa[:, None, :])  # (Pa, M, n_eta)
        de_dr = (partner * self.dq[:, None, :]).sum(-1)  # (Pa, M)
        d_ang = (de_dr[..., None] * self.unit[:, None, :]
                 + self.into_a(de_dcos[..., None] * self.dcos_da[:, None, :])
                 + self.into_b(de_dcos[..., None] * self.dcos_db[:, None, :]))
        return self.to_pairs(d_ang)


@dataclass(frozen=True, eq=False)
class DescriptorTerms:
    """Everything the features and their derivatives need, for one set of pair vectors."""

    n_atoms: int
    radial: RadialTerms
    angular: AngularTerms
    n_radial_channels: int  # n_elements
    n_angular_channels: int  # n_pair_types

    def features(self) -> torch.Tensor:
        """(N, n_features): radial block (neighbour element × m), then angular (pair type × η × λ × ζ)."""
        n = self.n_atoms
        return torch.cat([self.radial.features().reshape(n, -1), self.angular.features().reshape(n, -1)], dim=1)

    def vector_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """dE/dG (M, N, n_features) of M models → dE/dv (P, M, 3) over the whole pair list.

        With torch angular terms this is written in plain differentiable torch operations of
        ``grad``, so training can take the derivative of forces with respect to network weights."""
        m_models, n = grad.shape[0], self.n_atoms
        n_m = self.radial.g.shape[1]
        n_radial = self.n_radial_channels * n_m
        g_rad = grad[:, :, :n_radial].reshape(m_models, n, self.n_radial_channels, n_m)
        g_rad = g_rad.permute(1, 2, 0, 3).reshape(n * self.n_radial_channels, m_models, n_m)
        g_ang = grad[:, :, n_radial:].reshape(m_models, n, self.n_angular_channels, -1)
        g_ang = g_ang.permute(1, 2, 0, 3).reshape(n * self.n_angular_channels, m_models, -1)
        return self.radial.pair_grad(g_rad) + self.angular.pair_grad(g_ang)


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
