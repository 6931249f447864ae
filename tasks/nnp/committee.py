"""A committee is a wrapper around N single models, never a flag inside one.

It returns the mean energy and forces, the energy deviation per atom and DP-GEN's force
deviation per frame: max over atoms i of sqrt(⟨‖F_i − ⟨F_i⟩‖²⟩) over the members. Members whose
descriptor settings match share one descriptor evaluation and one batched backward pass.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tasks.nnp.batch import AtomsBatch, per_system_max
from tasks.nnp.derivatives import potential_outputs
from tasks.nnp.graph import Pairs
from tasks.nnp.model import BehlerParrinello, shared_descriptor_outputs


def force_deviation_per_frame(member_forces: torch.Tensor, system: torch.Tensor, n_systems: int) -> torch.Tensor:
    """member_forces (M, N, 3) → (B,): max_i sqrt(mean_m ‖F_mi − ⟨F_i⟩‖²)."""
    spread = (member_forces - member_forces.mean(dim=0, keepdim=True)).pow(2).sum(dim=-1).mean(dim=0).sqrt()
    return per_system_max(spread, system, n_systems)


class Committee(torch.nn.Module):
    def __init__(self, members: Sequence[BehlerParrinello]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least two members")
        self.members = torch.nn.ModuleList(members)
        first = members[0].settings.descriptor
        self.shared_descriptor = all(m.settings.descriptor == first for m in members)

    @property
    def cutoff_A(self) -> float:
        return max(m.cutoff_A for m in self.members)

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def atomic_energy_fn(self, batch: AtomsBatch, pairs: Pairs):
        """pair vectors (P, 3) → atomic energies (M, N) of the M members."""
        if not self.shared_descriptor:
            fns = [m.atomic_energy_fn(batch, pairs) for m in self.members]
            return lambda vectors: torch.cat([fn(vectors) for fn in fns])
        lead = self.members[0]
        species = lead.species(batch.numbers)

        def atomic_energies(vectors: torch.Tensor) -> torch.Tensor:
            features = lead.descriptor(vectors, species, pairs)
            return torch.stack([m.atomic(features, species) for m in self.members])

        return atomic_energies

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, stress: bool = False) -> dict[str, torch.Tensor]:
        if self.shared_descriptor:
            lead = self.members[0]
            out = shared_descriptor_outputs(lead.descriptor, [m.atomic for m in self.members],
                                            lead.species(batch.numbers), batch, pairs, forces=True, stress=stress)
        else:
            out = potential_outputs(self.atomic_energy_fn, self.cutoff_A, batch, pairs, forces=True, stress=stress)
        return committee_results(out, batch, stress)


def committee_results(out: dict[str, torch.Tensor], batch: AtomsBatch, stress: bool) -> dict[str, torch.Tensor]:
    """Mean energy/forces/stress and the deviations, from the members' outputs (M, ...)."""
    energies, forces = out["energy"].detach(), out["forces"].detach()
    n_atoms = torch.as_tensor(batch.n_atoms, dtype=energies.dtype, device=energies.device)
    result = {
        "energy": energies.mean(dim=0),
        "forces": forces.mean(dim=0),
        "member_energies": energies,
        "energy_deviation_per_atom": energies.std(dim=0, unbiased=False) / n_atoms,
        "force_deviation": force_deviation_per_frame(forces, batch.system, batch.n_systems),
    }
    if stress:
        result["stress"] = out["stress"].detach().mean(dim=0)
    return result
