"""The store's layout: names, the schema version, and the tables every campaign has.

Recipes declare their own tables (storage.tables shapes); the store records the layout of every
table it holds in its root attributes, so any reader (status, export, xarray) can read it
without the recipe's code. Version 1 stores had one fixed list of tables and no recorded layout:
``V1_TABLES`` is that list, as it was, for reading and migrating them.
"""

from __future__ import annotations

from storage.tables import columnar, structure_tables

SCHEMA_VERSION = 2
ZARR_NAME = "campaign.zarr"
LOCK_NAME = "campaign.lock"

# Labeled structures: the output of every labeler call, whichever recipe asked for it.
LABELED = structure_tables(
    "frames", "atoms", "frames", "frame", "atom",
    frame_columns=(
        ("key", "str"),  # the work item's key: hash of task, version, inputs, labeler settings
        ("source", "str"),  # where the structure came from (spec tag, file, recipe stage)
        ("labeler", "str"),
        ("labeler_settings", "str"),  # JSON of every labeler setting
        ("energy_eV", "f8"),
        ("stress_eV_per_A3", "f8", ("voigt",), (6,)),  # xx yy zz yz xz xy; NaN when not computed
    ),
    atom_columns=(("forces_eV_per_A", "f8", ("xyz",), (3,)),))

LEDGER = columnar("ledger", "ledger", "entry", (
    ("key", "str"),
    ("stage", "str"),
    ("status", "str"),  # "done" or "failed"; the latest entry of a key wins
    ("duration_s", "f8"),
    ("error", "str"),
    ("error_kind", "str"),  # "setup", "calculation" or "infrastructure"
    ("traceback", "str"),
    ("task_key", "str"),  # the Dask key of the batch that ran it
    ("worker", "str"),  # host:pid
    ("resources", "str"),  # the Dask resources its task asked for, e.g. "GPU=1"; "" for none
    ("launch", "i4"),
    ("finished_unix", "f8"),
))

PLAN = columnar("plan", "plan", "item", (("key", "str"), ("stage", "str")))

CORE_TABLES = (*LABELED.tables, LEDGER, PLAN)

N_V1_DEVIATION_BINS = 26

# Version 1's tables, column for column (its active-learning tables now belong to that recipe).
V1_TABLES = (*CORE_TABLES, *(
    columnar("al_models", "active_learning/models", "model", (
        ("key", "str"), ("iteration", "i4"), ("member", "i4"), ("seed", "i8"), ("sha256", "str"), ("path", "str"),
        ("device", "str"), ("n_train", "i4"), ("n_validation", "i4"), ("epochs", "i4"),
        ("train_energy_rmse_meV_per_atom", "f8"), ("train_force_rmse_eV_per_A", "f8"),
        ("test_energy_rmse_meV_per_atom", "f8"), ("test_force_rmse_eV_per_A", "f8"), ("wall_s", "f8")), 1024),
    *structure_tables("al_explored", "al_explored_atoms", "active_learning/explored", "explored", "explored_atom",
                      atoms_group="active_learning/explored_atoms",
                      frame_columns=(("key", "str"), ("iteration", "i4"), ("condition", "str"),
                                     ("trajectory", "str"), ("step", "i4"), ("deviation_eV_per_A", "f8"))).tables,
    columnar("al_iterations", "active_learning/iterations", "iteration", (
        ("iteration", "i4"), ("n_explored", "i4"), ("n_accurate", "i4"), ("n_candidate", "i4"), ("n_failed", "i4"),
        ("accurate_fraction", "f8"), ("candidate_fraction", "f8"), ("failed_fraction", "f8"),
        ("deviation_histogram", "i8", ("deviation_bin",), (N_V1_DEVIATION_BINS,)), ("n_training_frames", "i4"),
        ("n_selected", "i4"), ("n_labeled_before_next", "i4"), ("model_sha256", "str"),
        ("test_energy_rmse_meV_per_atom", "f8"), ("test_force_rmse_eV_per_A", "f8"), ("train_s", "f8"),
        ("explore_s", "f8"), ("label_s", "f8"), ("converged", "bool"), ("finished_unix", "f8")), 256),
))
