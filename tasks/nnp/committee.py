"""A committee is a wrapper around N potentials of any kind, never a flag inside one.

It returns the mean energy and forces, the energy deviation per atom and DP-GEN's force
deviation per frame: max over atoms i of sqrt(⟨‖F_i − ⟨F_i⟩‖²⟩) over the members. Members that
can be evaluated together (Behler–Parrinello networks on equal descriptor settings: one
descriptor evaluation and one batched backward pass) are; others are evaluated one by one.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch

from tasks.nnp.batch import AtomsBatch, per_system_max
from tasks.nnp.cpu_kernels import as_numpy, committee_force_statistics
from tasks.nnp.graph import Pairs
from tasks.potential import SavedAsPayload, from_payload

FORMAT = "campaign-committee-1"


def force_statistics(member_forces: torch.Tensor, system: torch.Tensor,
                     n_systems: int) -> tuple[torch.Tensor, torch.Tensor]:
    """member_forces (M, N, 3) → mean forces (N, 3) and the force deviation per frame (B,),
    max_i sqrt(mean_m ‖F_mi − ⟨F_i⟩‖²). On a CPU one compiled pass: the dozen torch reductions
    cost 70 µs, 3% of a committee's evaluation of 300 atoms, at every MD step."""
    if member_forces.device.type == "cpu":
        mean_forces = torch.empty(member_forces.shape[1:], dtype=member_forces.dtype)
        deviation = torch.zeros(n_systems, dtype=member_forces.dtype)
        committee_force_statistics(as_numpy(member_forces), as_numpy(system), mean_forces.numpy(), deviation.numpy())
        return mean_forces, deviation
    return torch_force_statistics(member_forces, system, n_systems)


def torch_force_statistics(member_forces: torch.Tensor, system: torch.Tensor,
                           n_systems: int) -> tuple[torch.Tensor, torch.Tensor]:
    """force_statistics in torch operations (CUDA)."""
    mean_forces = member_forces.mean(dim=0)
    deviation = member_forces - mean_forces
    spread = (deviation * deviation).sum(dim=0).sum(dim=-1).div_(member_forces.shape[0]).sqrt_()
    return mean_forces, per_system_max(spread, system, n_systems)


class Committee(torch.nn.Module, SavedAsPayload):
    """Any two or more potentials. Members that can be evaluated together (their first member's
    ``shares_evaluation_with``) are, in one pass; any others are evaluated one by one."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least two members")
        self.members = torch.nn.ModuleList(members)
        lead = members[0]
        self.evaluated_together = hasattr(lead, "evaluate_together") and all(
            lead.shares_evaluation_with(m) for m in members[1:])

    @property
    def cutoff_A(self) -> float:
        return max(m.cutoff_A for m in self.members)

    @property
    def elements(self) -> tuple[str, ...]:
        """The elements every member knows."""
        return tuple(e for e in self.members[0].elements if all(e in m.elements for m in self.members))

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def atomic_energy_fn(self):
        """(batch, pairs) → (pair vectors (P, 3) → atomic energies (M, N) of the M members), when
        every member gives atomic energies; else None."""
        if not all(getattr(m, "atomic_energy_fn", None) is not None for m in self.members):
            return None
        if self.evaluated_together and hasattr(self.members[0], "atomic_energy_fn_together"):
            return partial(self.members[0].atomic_energy_fn_together, list(self.members))

        def factory(batch: AtomsBatch, pairs: Pairs):
            fns = [m.atomic_energy_fn(batch, pairs) for m in self.members]
            return lambda vectors: torch.cat([fn(vectors) for fn in fns])

        return factory

    @property
    def atomic_energies(self):
        """(batch, pairs, only_atoms) → atomic energies (M, N) in one pass, for members evaluated
        together that offer it; else None (per_atom_energies then takes atomic_energy_fn)."""
        if self.evaluated_together and hasattr(self.members[0], "atomic_energies_together"):
            return partial(self.members[0].atomic_energies_together, list(self.members))
        return None

    def descriptor_networks(self):
        """(descriptor, every member's networks) where the members are evaluated on one descriptor
        and each gives its own (tasks.potential's capabilities); else None. The mean energy is then
        the members' mean network output."""
        if not self.evaluated_together or not all(callable(getattr(m, "descriptor_networks", None))
                                                  for m in self.members):
            return None
        given = [m.descriptor_networks() for m in self.members]
        if any(g is None for g in given):
            return None
        return given[0][0], [n for _, networks in given for n in networks]

    def member_outputs(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                       stress: bool = False) -> dict[str, torch.Tensor]:
        """energy (M, B), forces (M, N, 3), stress (M, B, 6) of every member."""
        if self.evaluated_together:
            return self.members[0].evaluate_together(list(self.members), batch, pairs, forces=forces, stress=stress)
        pairs = pairs if pairs is not None else batch.pairs(self.cutoff_A)
        outs = [m(batch, pairs, forces=forces, stress=stress) for m in self.members]
        return {k: torch.stack([o[k].detach() for o in outs]) for k in outs[0]
                if k in ("energy", "forces", "stress")}

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                stress: bool = False) -> dict[str, torch.Tensor]:
        """Mean energy, forces (and stress) and the deviations; the force deviation needs the
        members' forces, so they are computed whatever ``forces`` says."""
        return committee_results(self.member_outputs(batch, pairs, forces=True, stress=stress), batch, stress)

    # -- persistence --------------------------------------------------------------------------
    def to_payload(self) -> dict:
        return {"format": FORMAT, "members": [m.to_payload() for m in self.members]}

    @classmethod
    def from_payload(cls, payload: dict, dtype: torch.dtype = torch.float64,
                     device: str | torch.device = "cpu") -> "Committee":
        return cls([from_payload(m, dtype, device) for m in payload["members"]])


def committee_results(out: dict[str, torch.Tensor], batch: AtomsBatch, stress: bool) -> dict[str, torch.Tensor]:
    """Mean energy/forces/stress and the deviations, from the members' outputs (M, ...)."""
    energies, forces = out["energy"].detach(), out["forces"].detach()
    n_atoms = torch.as_tensor(batch.n_atoms, dtype=energies.dtype, device=energies.device)
    energy_variance, energy = torch.var_mean(energies, dim=0, correction=0)
    mean_forces, force_deviation = force_statistics(forces, batch.system, batch.n_systems)
    result = {
        "energy": energy,
        "forces": mean_forces,
        "member_energies": energies,
        "energy_deviation_per_atom": energy_variance.sqrt_() / n_atoms,
        "force_deviation": force_deviation,
    }
    if stress:
        result["stress"] = out["stress"].detach().mean(dim=0)
    return result
