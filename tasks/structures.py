"""A structure as plain arrays: cheap to pickle to workers and to hash into a task key."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms


@dataclass(frozen=True, eq=False)
class Structure:
    """One atomic configuration with the tag that says where it came from."""

    numbers: np.ndarray  # (n,) atomic numbers
    positions_A: np.ndarray  # (n, 3)
    cell_A: np.ndarray  # (3, 3), rows are lattice vectors
    pbc: np.ndarray  # (3,) bool
    tag: str = ""

    @classmethod
    def from_atoms(cls, atoms: Atoms, tag: str = "") -> "Structure":
        return cls(
            numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(),
            positions_A=np.asarray(atoms.positions, dtype=np.float64).copy(),
            cell_A=np.asarray(atoms.cell.array, dtype=np.float64).copy(),
            pbc=np.asarray(atoms.pbc, dtype=bool).copy(),
            tag=tag,
        )

    def to_atoms(self) -> Atoms:
        return Atoms(
            numbers=self.numbers.copy(),
            positions=self.positions_A.copy(),
            cell=self.cell_A.copy(),
            pbc=self.pbc.copy(),
        )

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    def canonical(self) -> dict:
        """A JSON-able description that is identical for identical structures.

        Positions are rounded to 1e-8 Å so that the same structure read back from a text
        file or regenerated from its seed hashes to the same key.
        """
        return {
            "numbers": self.numbers.tolist(),
            "positions_A": np.round(self.positions_A, 8).tolist(),
            "cell_A": np.round(self.cell_A, 8).tolist(),
            "pbc": self.pbc.tolist(),
        }
