"""Many systems of different sizes and cells in one set of tensors (per-atom, per-system)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from tasks.nnp.graph import Pairs, neighbour_pairs


@dataclass(frozen=True)
class AtomsBatch:
    positions: torch.Tensor  # (N, 3)
    cells: torch.Tensor  # (B, 3, 3)
    numbers: torch.Tensor  # (N,) long
    system: torch.Tensor  # (N,) long: which system each atom belongs to
    n_atoms: np.ndarray  # (B,)
    pbc: np.ndarray  # (B, 3) bool

    @classmethod
    def from_atoms(cls, systems: Sequence[Atoms], dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> "AtomsBatch":
        return cls.from_arrays(np.concatenate([a.positions for a in systems]),
                               np.stack([a.cell.array for a in systems]), np.concatenate([a.numbers for a in systems]),
                               [len(a) for a in systems], [a.pbc for a in systems], dtype, device)

    @classmethod
    def from_arrays(cls, positions: np.ndarray, cells: np.ndarray, numbers: np.ndarray, n_atoms, pbc,
                    dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> "AtomsBatch":
        """Systems whose atoms are consecutive (``n_atoms`` each), from numpy arrays."""
        n_atoms = np.asarray(n_atoms, dtype=np.int64)
        return cls(
            positions=torch.as_tensor(positions, dtype=dtype, device=device),
            cells=torch.as_tensor(cells, dtype=dtype, device=device),
            numbers=torch.as_tensor(numbers, dtype=torch.long, device=device),
            system=torch.as_tensor(np.repeat(np.arange(len(n_atoms)), n_atoms), dtype=torch.long, device=device),
            n_atoms=n_atoms,
            pbc=np.array(pbc, dtype=bool).reshape(len(n_atoms), 3),
        )

    @property
    def n_systems(self) -> int:
        return len(self.n_atoms)

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def pairs(self, cutoff_A: float, systems: np.ndarray | None = None) -> Pairs:
        """Neighbour pairs of every system, or of ``systems`` only."""
        return neighbour_pairs(self.positions.detach().cpu().numpy(), self.cells.detach().cpu().numpy(), self.pbc,
                               self.n_atoms, cutoff_A, self.dtype, self.device, systems)

    def with_positions(self, positions: torch.Tensor) -> "AtomsBatch":
        return replace(self, positions=positions)

    def subset(self, atoms: torch.Tensor, systems: torch.Tensor, system_map: torch.Tensor) -> "AtomsBatch":
        """The kept ``atoms`` (N,) bool of the kept ``systems`` (B,) bool; ``system_map`` renumbers
        the kept systems (see graph.subset_pairs)."""
        system = system_map[self.system[atoms]]
        keep_systems = systems.cpu().numpy()
        n_atoms = np.bincount(system.cpu().numpy(), minlength=int(keep_systems.sum())).astype(np.int64)
        return AtomsBatch(positions=self.positions[atoms], cells=self.cells[systems], numbers=self.numbers[atoms],
                          system=system, n_atoms=n_atoms, pbc=self.pbc[keep_systems])

    def volumes(self) -> torch.Tensor:
        return torch.linalg.det(self.cells).abs()

    def to_atoms(self) -> list[Atoms]:
        out, start = [], 0
        positions = self.positions.detach().cpu().numpy()
        numbers = self.numbers.cpu().numpy()
        cells = self.cells.detach().cpu().numpy()
        for b, n in enumerate(self.n_atoms):
            out.append(Atoms(numbers=numbers[start:start + n], positions=positions[start:start + n],
                             cell=cells[b], pbc=self.pbc[b]))
            start += n
        return out


def per_system_sum(values: torch.Tensor, system: torch.Tensor, n_systems: int) -> torch.Tensor:
    """Sum per-atom values (N, ...) into per-system values (B, ...)."""
    out = torch.zeros((n_systems, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add(0, system, values)


def per_system_max(values: torch.Tensor, system: torch.Tensor, n_systems: int) -> torch.Tensor:
    """Largest per-atom value (N,) of each system (B,); 0 for a system whose values are all below 0."""
    out = torch.zeros(n_systems, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, system, values, reduce="amax", include_self=True)


def concat_batches(parts: Sequence[tuple[AtomsBatch, Pairs]]) -> tuple[AtomsBatch, Pairs]:
    """Join single-system batches and their neighbour pairs into one (indices shifted)."""
    atom_offsets = np.concatenate([[0], np.cumsum([p[0].positions.shape[0] for p in parts])[:-1]])
    system_offsets = np.concatenate([[0], np.cumsum([p[0].n_systems for p in parts])[:-1]])
    batch = AtomsBatch(
        positions=torch.cat([b.positions for b, _ in parts]),
        cells=torch.cat([b.cells for b, _ in parts]),
        numbers=torch.cat([b.numbers for b, _ in parts]),
        system=torch.cat([b.system + int(o) for (b, _), o in zip(parts, system_offsets)]),
        n_atoms=np.concatenate([b.n_atoms for b, _ in parts]),
        pbc=np.concatenate([b.pbc for b, _ in parts]),
    )
    pairs = Pairs(
        i=torch.cat([p.i + int(o) for (_, p), o in zip(parts, atom_offsets)]),
        j=torch.cat([p.j + int(o) for (_, p), o in zip(parts, atom_offsets)]),
        shift=torch.cat([p.shift for _, p in parts]),
        system=torch.cat([p.system + int(o) for (_, p), o in zip(parts, system_offsets)]),
    )
    return batch, pairs
