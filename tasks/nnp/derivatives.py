"""Energies, forces and stress of any potential whose atomic energies depend on pair vectors.

Every potential here (symmetry functions, pair repulsion, their blend) sees positions and cell
only through the pair vectors v_p = r_j + S·cell − r_i, so one gradient dE/dv (P, M, 3) gives
  forces  F_i = −∂E/∂r_i = Σ_{p: i(p)=i} dE/dv_p − Σ_{p: j(p)=i} dE/dv_p
  virial  ∂E/∂ε_xy = Σ_p v_px dE/dv_py    (homogeneous strain of positions and cell)
and the stress is the symmetrised virial over the volume (ASE's sign), Voigt order xx yy zz yz xz xy.
M models (1 for a single model, N for a committee) are handled at once.
"""

from __future__ import annotations

from typing import Callable

import torch

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs, pair_vectors
from tasks.nnp.scatter import RowSum

# (batch, pairs) → (pair vectors (P, 3) → atomic energies (M, N))
AtomicEnergyFactory = Callable[[AtomsBatch, Pairs], Callable[[torch.Tensor], torch.Tensor]]
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _pair_sums(pairs: Pairs, n_atoms: int, n_systems: int) -> tuple[RowSum, RowSum]:
    """(pairs → atoms with +1 at i and −1 at j, pairs → systems), built once per pair list."""
    if "force_sums" not in pairs.derived:
        n_pairs = len(pairs.i)
        order = torch.arange(n_pairs, device=pairs.i.device)
        signs = torch.cat([torch.ones(n_pairs, device=pairs.i.device), -torch.ones(n_pairs, device=pairs.i.device)])
        pairs.derived["force_sums"] = (
            RowSum(torch.cat([pairs.i, pairs.j]), n_atoms, n_pairs, cols=torch.cat([order, order]), sign=signs,
                   sparse=True),
            RowSum(pairs.system, n_systems, n_pairs, sparse=True))
    return pairs.derived["force_sums"]


def outputs_from_pair_gradient(batch: AtomsBatch, pairs: Pairs, vectors: torch.Tensor, atomic: torch.Tensor,
                               de_dv: torch.Tensor | None, *, forces: bool, stress: bool) -> dict[str, torch.Tensor]:
    """energy (M, B); forces (M, N, 3) and stress (M, B, 6) if asked, from dE/dv (P, M, 3)."""
    n_models = atomic.shape[0]
    energy = torch.zeros((n_models, batch.n_systems), dtype=atomic.dtype, device=atomic.device)
    out = {"energy": energy.index_add(1, batch.system, atomic)}
    if not (forces or stress):
        return out
    to_atoms, to_systems = _pair_sums(pairs, batch.positions.shape[0], batch.n_systems)
    if forces:
        out["forces"] = to_atoms(de_dv).permute(1, 0, 2)
    if stress:
        virial = to_systems(vectors[:, None, :, None] * de_dv[:, :, None, :])  # (B, M, 3, 3)
        out["stress"] = voigt_stress(virial.permute(1, 0, 2, 3), batch.volumes())
    return out


def voigt_stress(virial: torch.Tensor, volumes: torch.Tensor) -> torch.Tensor:
    """Virial Σ_p v_p ⊗ dE/dv_p (M, B, 3, 3) → stress (M, B, 6): symmetrised, over the volume."""
    symmetric = 0.5 * (virial + virial.transpose(-1, -2))
    return torch.stack([symmetric[..., a, b] for a, b in VOIGT], dim=-1) / volumes[None, :, None]


def potential_outputs(factory: AtomicEnergyFactory, cutoff_A: float, batch: AtomsBatch, pairs: Pairs | None, *,
                      forces: bool, stress: bool, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """energy (M, B), forces (M, N, 3), stress (M, B, 6) by autograd to the pair vectors (one
    backward per model); pairs are built if not given."""
    pairs = pairs if pairs is not None else batch.pairs(cutoff_A)
    energy_fn = factory(batch, pairs)
    vectors = pair_vectors(batch.positions, batch.cells, pairs).detach()
    if not (forces or stress):
        with torch.no_grad():
            return outputs_from_pair_gradient(batch, pairs, vectors, energy_fn(vectors), None, forces=False,
                                              stress=False)
    with torch.enable_grad():
        v = vectors.detach().requires_grad_()  # a new leaf: the outputs below keep no graph
        atomic = energy_fn(v)
        grads = []
        for m in range(atomic.shape[0]):
            keep = create_graph or m < atomic.shape[0] - 1
            (g,) = torch.autograd.grad(atomic[m].sum(), v, create_graph=create_graph, retain_graph=keep,
                                       allow_unused=True)
            grads.append(g if g is not None else torch.zeros_like(v))
    if not create_graph:
        atomic = atomic.detach()
    return outputs_from_pair_gradient(batch, pairs, vectors, atomic, torch.stack(grads, dim=1), forces=forces, stress=stress)


def single_model(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """energy (B,), forces (N, 3), stress (B, 6) of a one-model result."""
    return {k: v[0] for k, v in out.items()}
