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
    ("resources", "str", (), ()),  # the Dask resources its task asked for, e.g. "GPU=1"; "" for none
    ("launch", "i4", (), ()),
    ("finished_unix", "f8", (), ()),
))

PLAN = Table("plan", "plan", "item", 4096, _cols(
    "item",
    ("key", "str", (), ()),
    ("stage", "str", (), ()),
))

# -- active learning (recipe kind active_learning); older stores gain these empty on open ----------
N_DEVIATION_BINS = 26  # 0.02 eV/Å bins from 0 to 0.5, then everything above

AL_MODELS = Table("al_models", "active_learning/models", "model", 1024, _cols(
    "model",
    ("key", "str", (), ()),  # the training work item's key
    ("iteration", "i4", (), ()),
    ("member", "i4", (), ()),
    ("seed", "i8", (), ()),
    ("sha256", "str", (), ()),
    ("path", "str", (), ()),  # relative to the store directory
    ("device", "str", (), ()),
    ("n_train", "i4", (), ()),
    ("n_validation", "i4", (), ()),
    ("epochs", "i4", (), ()),
    ("train_energy_rmse_meV_per_atom", "f8", (), ()),
    ("train_force_rmse_eV_per_A", "f8", (), ()),
    ("test_energy_rmse_meV_per_atom", "f8", (), ()),
    ("test_force_rmse_eV_per_A", "f8", (), ()),
    ("wall_s", "f8", (), ()),
))

AL_EXPLORED = Table("al_explored", "active_learning/explored", "explored", 4096, _cols(
    "explored",
    ("key", "str", (), ()),  # the exploration work item that made it
    ("iteration", "i4", (), ()),
    ("condition", "str", (), ()),
    ("trajectory", "str", (), ()),  # key + system: snapshots of one run share it
    ("step", "i4", (), ()),
    ("deviation_eV_per_A", "f8", (), ()),
    ("cell_A", "f8", ("cell_vector", "xyz"), (3, 3)),
    ("pbc", "bool", ("xyz",), (3,)),
    ("n_atoms", "i4", (), ()),
    ("atom_start", "i8", (), ()),
))

AL_EXPLORED_ATOMS = Table("al_explored_atoms", "active_learning/explored_atoms", "explored_atom", 65536, _cols(
    "explored_atom",
    ("numbers", "i2", (), ()),
    ("positions_A", "f8", ("xyz",), (3,)),
))

AL_ITERATIONS = Table("al_iterations", "active_learning/iterations", "iteration", 256, _cols(
    "iteration",
    ("iteration", "i4", (), ()),
    ("n_explored", "i4", (), ()),
    ("n_accurate", "i4", (), ()),
    ("n_candidate", "i4", (), ()),
    ("n_failed", "i4", (), ()),
    ("accurate_fraction", "f8", (), ()),
    ("candidate_fraction", "f8", (), ()),
    ("failed_fraction", "f8", (), ()),
    ("deviation_histogram", "i8", ("deviation_bin",), (N_DEVIATION_BINS,)),
    ("n_training_frames", "i4", (), ()),
    ("n_selected", "i4", (), ()),
    ("n_labeled_before_next", "i4", (), ()),  # selected labels in when the iteration ended (quorum)
    ("model_sha256", "str", (), ()),  # comma-separated, member order
    ("test_energy_rmse_meV_per_atom", "f8", (), ()),  # committee mean
    ("test_force_rmse_eV_per_A", "f8", (), ()),
    ("train_s", "f8", (), ()),
    ("explore_s", "f8", (), ()),
    ("label_s", "f8", (), ()),
    ("converged", "bool", (), ()),
    ("finished_unix", "f8", (), ()),
))

TABLES = {t.name: t for t in (FRAMES, ATOMS, LEDGER, PLAN, AL_MODELS, AL_EXPLORED, AL_EXPLORED_ATOMS, AL_ITERATIONS)}
