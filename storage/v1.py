"""Schema version 1: one fixed list of tables and no recorded layout. ``V1_TABLES`` is that list,
column for column as that release wrote it, for reading and migrating its stores; nothing
else uses it (the active-learning tables are now declared by their recipe)."""

from __future__ import annotations

from storage.schema import CORE_TABLES
from storage.tables import columnar, structure_tables

N_V1_DEVIATION_BINS = 26

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
