"""Forces and stress of any batched energy function, by autograd through a strain.

energy_fn(positions, cells) returns energies of shape (M, B): M models (1 for a single model,
N for a committee) on B systems. Forces are −∂E/∂r; the stress is (1/V) ∂E/∂ε (ASE's sign) for
a homogeneous strain ε applied to positions and cell, in Voigt order xx yy zz yz xz xy.
"""

from __future__ import annotations

from typing import Callable

import torch

from tasks.nnp.batch import AtomsBatch, system_energy_fn
from tasks.nnp.graph import Pairs

EnergyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def energies_forces_stress(energy_fn: EnergyFn, batch: AtomsBatch, *, forces: bool = True, stress: bool = False,
                           create_graph: bool = False) -> dict[str, torch.Tensor]:
    """energy (M, B); forces (M, N, 3) if asked; stress (M, B, 6) if asked."""
    positions = batch.positions.detach().requires_grad_(forces or stress)
    strain = torch.zeros((batch.n_systems, 3, 3), dtype=batch.dtype, device=batch.device, requires_grad=stress)
    if stress:
        deformed_positions = positions + torch.einsum("nx,nxy->ny", positions, strain[batch.system])
        deformed_cells = batch.cells + torch.bmm(batch.cells, strain)
    else:
        deformed_positions, deformed_cells = positions, batch.cells
    energy = energy_fn(deformed_positions, deformed_cells)
    out = {"energy": energy}
    if not (forces or stress):
        return out
    inputs = [positions] + ([strain] if stress else [])
    n_models = energy.shape[0]
    if n_models == 1:
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
        grads = [g[None] for g in grads]
    else:
        # One batched vector-Jacobian product for all members instead of one backward each.
        selector = torch.eye(n_models, dtype=energy.dtype, device=energy.device)[:, :, None].expand(-1, -1, energy.shape[1])
        grads = torch.autograd.grad(energy, inputs, grad_outputs=selector, create_graph=create_graph,
                                    is_grads_batched=True)
    if forces:
        out["forces"] = -grads[0]
    if stress:
        virial = grads[-1]
        virial = 0.5 * (virial + virial.transpose(-1, -2))
        volume = batch.volumes()
        out["stress"] = torch.stack([virial[..., a, b] for a, b in VOIGT], dim=-1) / volume[None, :, None]
    return out


def potential_outputs(atomic_energy_fn, cutoff_A: float, batch: AtomsBatch, pairs: Pairs | None, *,
                      forces: bool, stress: bool, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """energy (M, B), forces (M, N, 3), stress (M, B, 6) of ``atomic_energy_fn(batch, pairs)``,
    which maps (positions, cells) to atomic energies (M, N); pairs are built if not given."""
    pairs = pairs if pairs is not None else batch.pairs(cutoff_A)
    return energies_forces_stress(system_energy_fn(atomic_energy_fn(batch, pairs), batch), batch, forces=forces,
                                  stress=stress, create_graph=create_graph)


def single_potential_results(atomic_energy_fn, cutoff_A: float, batch: AtomsBatch, pairs: Pairs | None, *,
                             forces: bool, stress: bool, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """energy (B,), forces (N, 3), stress (B, 6) of a one-model atomic-energy function."""
    out = potential_outputs(atomic_energy_fn, cutoff_A, batch, pairs, forces=forces, stress=stress,
                            create_graph=create_graph)
    return {k: v[0] for k, v in out.items()}
