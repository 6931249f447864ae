"""Table shapes the store offers; recipes declare their tables with them.

A table is a set of columns that share a leading dimension (one row per item). A ragged
structures table is two tables: per-structure rows (cell, pbc, n_atoms, atom_start, and whatever
the recipe adds) and per-atom rows (numbers, positions, and whatever the recipe adds), so
structures of any size cost no padding. Every column carries dimension names, so
``xarray.open_zarr(store/"campaign.zarr", group=...)`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy dtype string, or "str" for variable-length UTF-8
    dims: tuple[str, ...]  # the first one is the table's dimension
    inner_shape: tuple[int, ...] = ()

    @property
    def fill_value(self):
        if self.dtype == "str":
            return ""
        kind = np.dtype(self.dtype).kind
        return np.nan if kind == "f" else (False if kind == "b" else 0)

    @property
    def numpy_dtype(self):
        return object if self.dtype == "str" else np.dtype(self.dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims), "inner_shape": list(self.inner_shape)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Column":
        return cls(data["name"], data["dtype"], tuple(data["dims"]), tuple(data["inner_shape"]))


@dataclass(frozen=True)
class Table:
    name: str  # the key of its committed length in the root attributes
    group: str  # where its arrays live in the Zarr group
    dim: str
    chunk_rows: int
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def empty(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        columns = self.columns if names is None else [self.column(n) for n in names]
        return {c.name: np.empty((0, *c.inner_shape), dtype=c.numpy_dtype) for c in columns}

    def to_dict(self) -> dict:
        return {"group": self.group, "dim": self.dim, "chunk_rows": self.chunk_rows,
                "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> "Table":
        return cls(name, data["group"], data["dim"], int(data["chunk_rows"]),
                   tuple(Column.from_dict(c) for c in data["columns"]))


def columnar(name: str, group: str, dim: str, columns: Sequence[tuple], chunk_rows: int = 4096) -> Table:
    """A table from (name, dtype[, extra dims, inner shape]) tuples: ("energy_eV", "f8"),
    ("cell_A", "f8", ("cell_vector", "xyz"), (3, 3))."""
    built = []
    for spec in columns:
        column_name, dtype, extra_dims, shape = (*spec, (), ())[:4]
        built.append(Column(column_name, dtype, (dim, *extra_dims), tuple(shape)))
    return Table(name, group, dim, chunk_rows, tuple(built))


@dataclass(frozen=True)
class StructureTables:
    """A ragged structures table: ``frames`` has one row per structure (with ``n_atoms`` and
    ``atom_start``, the first row of the structure in ``atoms``), ``atoms`` one row per atom."""

    frames: Table
    atoms: Table

    @property
    def tables(self) -> tuple[Table, Table]:
        return self.frames, self.atoms


STRUCTURE_FRAME_COLUMNS = (("cell_A", "f8", ("cell_vector", "xyz"), (3, 3)), ("pbc", "bool", ("xyz",), (3,)),
                           ("n_atoms", "i4"), ("atom_start", "i8"))
STRUCTURE_ATOM_COLUMNS = (("numbers", "i2"), ("positions_A", "f8", ("xyz",), (3,)))


def structure_tables(frames_name: str, atoms_name: str, group: str, frame_dim: str, atom_dim: str, *,
                     frame_columns: Sequence[tuple] = (), atom_columns: Sequence[tuple] = (),
                     atoms_group: str | None = None, frame_chunk_rows: int = 4096,
                     atom_chunk_rows: int = 65536) -> StructureTables:
    """A ragged structures table with the recipe's own columns before the structural ones."""
    return StructureTables(
        columnar(frames_name, group, frame_dim, [*frame_columns, *STRUCTURE_FRAME_COLUMNS], frame_chunk_rows),
        columnar(atoms_name, atoms_group or group, atom_dim, [*STRUCTURE_ATOM_COLUMNS, *atom_columns],
                 atom_chunk_rows))


def structure_rows(shape: StructureTables, *, numbers: Sequence[np.ndarray], positions_A: Sequence[np.ndarray],
                   cell_A: Sequence[np.ndarray], pbc: Sequence[np.ndarray], atom_start: int,
                   frame_values: Mapping[str, Sequence] | None = None,
                   atom_values: Mapping[str, Sequence[np.ndarray]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Rows of both tables for these structures, their atoms appended at row ``atom_start``.
    ``frame_values`` holds one value per structure for each of the recipe's frame columns,
    ``atom_values`` one (n_atoms, ...) array per structure for each of its atom columns."""
    n_atoms = np.array([len(z) for z in numbers], dtype=np.int32)
    starts = atom_start + np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64) if len(n_atoms) \
        else np.zeros(0, np.int64)

    def column(table: Table, name: str, values) -> np.ndarray:
        c = table.column(name)
        return np.array(list(values), dtype=c.numpy_dtype).reshape(-1, *c.inner_shape)

    def per_atom(table: Table, name: str, blocks) -> np.ndarray:
        c = table.column(name)
        blocks = [np.asarray(b) for b in blocks]
        if not blocks:
            return np.zeros((0, *c.inner_shape), dtype=c.numpy_dtype)
        return np.concatenate(blocks).astype(c.numpy_dtype, copy=False).reshape(-1, *c.inner_shape)

    frames = {name: column(shape.frames, name, values) for name, values in (frame_values or {}).items()}
    frames.update(cell_A=column(shape.frames, "cell_A", cell_A), pbc=column(shape.frames, "pbc", pbc),
                  n_atoms=n_atoms, atom_start=starts)
    atoms = {name: per_atom(shape.atoms, name, blocks) for name, blocks in (atom_values or {}).items()}
    atoms.update(numbers=per_atom(shape.atoms, "numbers", numbers),
                 positions_A=per_atom(shape.atoms, "positions_A", positions_A))
    return {shape.frames.name: frames, shape.atoms.name: atoms}


@dataclass(frozen=True, eq=False)
class StructureBlock:
    """Rows of a ragged structures table as read: ``frames`` per structure, ``atoms`` per atom of
    those structures, with ``atom_slice(k)`` the rows of structure k in ``atoms``."""

    frames: dict[str, np.ndarray]
    atoms: dict[str, np.ndarray]
    first_atom: int

    def __len__(self) -> int:
        return len(self.frames["n_atoms"])

    def atom_slice(self, k: int) -> slice:
        start = int(self.frames["atom_start"][k]) - self.first_atom
        return slice(start, start + int(self.frames["n_atoms"][k]))

    def atom_values(self, name: str, k: int) -> np.ndarray:
        return self.atoms[name][self.atom_slice(k)]
