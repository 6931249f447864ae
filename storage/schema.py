"""The store's layout: names, the schema version, and the tables every campaign has.

Recipes declare their own tables (storage.tables shapes); the store records the layout of every
table it holds in its root attributes, so any reader (status, export, xarray) can read it
without the recipe's code (version 1 stores did not: storage/v1.py).
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
