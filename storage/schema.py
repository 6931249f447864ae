"""What the store holds: tables of columns that share a leading dimension.

Per-frame data is one row per frame; per-atom data (positions, forces) is stored flat with the
frame's ``atom_start`` and ``n_atoms``, so ragged frames cost no padding. Every column carries
dimension names, so ``xarray.open_zarr(store/"campaign.zarr", group="frames")`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1
ZARR_NAME = "campaign.zarr"
LOCK_NAME = "campaign.lock"


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


@dataclass(frozen=True)
class Table:
    name: str  # the key of its committed length in the root attributes
    group: str
    dim: str
    chunk_rows: int
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _cols(dim: str, *specs: tuple) -> tuple[Column, ...]:
    return tuple(Column(name, dtype, (dim, *extra_dims), tuple(shape)) for name, dtype, extra_dims, shape in specs)


FRAMES = Table("frames", "frames", "frame", 4096, _cols(
    "frame",
    ("key", "str", (), ()),  # the work item's key: hash of task, version, inputs, labeler settings
    ("source", "str", (), ()),  # where the structure came from (spec tag, file, recipe stage)
    ("labeler", "str", (), ()),
    ("labeler_settings", "str", (), ()),  # JSON of every labeler setting
    ("energy_eV", "f8", (), ()),
    ("stress_eV_per_A3", "f8", ("voigt",), (6,)),  # xx yy zz yz xz xy; NaN when not computed
    ("cell_A", "f8", ("cell_vector", "xyz"), (3, 3)),
    ("pbc", "bool", ("xyz",), (3,)),
    ("n_atoms", "i4", (), ()),
    ("atom_start", "i8", (), ()),  # first row of this frame in the per-atom table
))

ATOMS = Table("atoms", "frames", "atom", 65536, _cols(
    "atom",
    ("numbers", "i2", (), ()),
    ("positions_A", "f8", ("xyz",), (3,)),
    ("forces_eV_per_A", "f8", ("xyz",), (3,)),
))

LEDGER = Table("ledger", "ledger", "entry", 4096, _cols(
    "entry",
    ("key", "str", (), ()),
    ("stage", "str", (), ()),
    ("status", "str", (), ()),  # "done" or "failed"; the latest entry of a key wins
    ("duration_s", "f8", (), ()),
    ("error", "str", (), ()),
    ("error_kind", "str", (), ()),  # "setup", "calculation" or "infrastructure"
    ("traceback", "str", (), ()),
    ("task_key", "str", (), ()),  # the Dask key of the batch that ran it
    ("worker", "str", (), ()),  # host:pid
    ("launch", "i4", (), ()),
    ("finished_unix", "f8", (), ()),
))

PLAN = Table("plan", "plan", "item", 4096, _cols(
    "item",
    ("key", "str", (), ()),
    ("stage", "str", (), ()),
))

TABLES = {t.name: t for t in (FRAMES, ATOMS, LEDGER, PLAN)}
