"""The validate recipe's store tables, the rows a job becomes, and the comparison read back.

Tables (xarray-readable like every table of the store):
  validation_structures(_atoms)  per source: the relaxed reference cell and its energy
  validation_values              per source and property: value and unit (a0, d(Mo-S), C11, E_f(V_S), ω_Γ…)
  validation_curves              per source, curve and series (a phonon branch): one row per point
                                 (equation of state, energy–strain curves, phonon bands, dimer curves)
  validation_forces(_atoms)      the labeler's forces on each of phonopy's displaced cells (one task
                                 each), which its phonons task then assembles
  validation_sources             per launch, every item it planned and the source's name then: what
                                 the report reads (a renamed source, or a potential or setting
                                 changed since, leaves older rows out of the comparison)
  validation_comparison          per launch that finished, ``comparison``: every value with each
                                 potential's absolute and relative error against the labeler
                                 (NaN where there is none) and its Δ(EOS)

``comparison(store)`` adds, per potential, the absolute and relative error against the labeler and
the Δ between their equations of state (the Cr(1-x)S study's metric).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from campaign.stage import WorkItem
from storage import CampaignStore
from storage.tables import columnar, structure_rows, structure_tables
from tasks.outcome import Outcome
from tasks.validation.jobs import ValidationJob, ValidationResult

VALIDATION_STRUCTURES = structure_tables(
    "validation_structures", "validation_structure_atoms", "validation/structures", "structure", "structure_atom",
    atoms_group="validation/structure_atoms", frame_columns=(("key", "str"), ("source", "str"), ("energy_eV", "f8")))
VALIDATION_VALUES = columnar("validation_values", "validation/values", "value", (
    ("key", "str"), ("source", "str"), ("step", "str"), ("property", "str"), ("unit", "str"), ("value", "f8")))
VALIDATION_CURVES = columnar("validation_curves", "validation/curves", "point", (
    ("key", "str"), ("source", "str"), ("curve", "str"), ("series", "i4"), ("x", "f8"), ("y", "f8"),
    ("x_unit", "str"), ("y_unit", "str")), chunk_rows=16384)

VALIDATION_FORCES = structure_tables(
    "validation_forces", "validation_force_atoms", "validation/forces", "cell", "cell_atom",
    atoms_group="validation/force_atoms", frame_columns=(("key", "str"), ("source", "str")),
    atom_columns=(("forces_eV_per_A", "f8", ("xyz",), (3,)),))

VALIDATION_SOURCES = columnar("validation_sources", "validation/sources", "item", (
    ("launch", "i4"), ("key", "str"), ("source", "str")))

VALIDATION_COMPARISON = columnar("validation_comparison", "validation/comparison", "row", (
    ("launch", "i4"), ("source", "str"), ("step", "str"), ("property", "str"), ("unit", "str"), ("value", "f8"),
    ("error", "f8"), ("relative_error", "f8")))

TABLES = (*VALIDATION_STRUCTURES.tables, VALIDATION_VALUES, VALIDATION_CURVES, *VALIDATION_FORCES.tables,
          VALIDATION_SOURCES, VALIDATION_COMPARISON)


def source_rows(launch: int, items: Sequence[WorkItem]) -> dict:
    return {VALIDATION_SOURCES.name: {"launch": np.full(len(items), launch, dtype=np.int32),
                                      "key": np.array([i.key for i in items], dtype=object),
                                      "source": np.array([i.payload.source.name for i in items], dtype=object)}}


def latest_sources(store: CampaignStore) -> dict[str, str]:
    """item key → source name, for the items the latest launch planned."""
    if not store.length(VALIDATION_SOURCES):
        return {}
    table = store.read(VALIDATION_SOURCES)
    last = table["launch"] == table["launch"].max()
    return {str(k): str(s) for k, s in zip(table["key"][last], table["source"][last])}


def job_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome]) -> dict:
    values: dict[str, list] = defaultdict(list)
    curves: dict[str, list] = defaultdict(list)
    relaxed, displaced = [], []
    for item, outcome in zip(items, outcomes):
        job: ValidationJob = item.payload
        result: ValidationResult = outcome.value
        for v in result.values:
            for name, x in (("key", item.key), ("source", job.source.name), ("step", job.step),
                            ("property", v.name), ("unit", v.unit), ("value", v.value)):
                values[name].append(x)
        for c in result.curves:
            y = np.asarray(c.y, dtype=float).reshape(len(c.x), -1)
            for series in range(y.shape[1]):
                n = len(c.x)
                for name, x in (("key", [item.key] * n), ("source", [job.source.name] * n), ("curve", [c.name] * n),
                                ("series", [series] * n), ("x", c.x), ("y", y[:, series]), ("x_unit", [c.x_unit] * n),
                                ("y_unit", [c.y_unit] * n)):
                    curves[name].extend(x)
        if result.structure is not None:
            relaxed.append((item.key, job.source.name, result.structure))
        if result.forces is not None:
            displaced.append((item.key, job.source.name, job.structure, result.forces))
    blocks = {}
    if values:
        blocks[VALIDATION_VALUES.name] = _columns(VALIDATION_VALUES, values)
    if curves:
        blocks[VALIDATION_CURVES.name] = _columns(VALIDATION_CURVES, curves)
    if relaxed:
        blocks.update(structure_rows(
            VALIDATION_STRUCTURES, numbers=[a.numbers for _, _, a in relaxed],
            positions_A=[a.positions for _, _, a in relaxed], cell_A=[a.cell.array for _, _, a in relaxed],
            pbc=[a.pbc for _, _, a in relaxed], atom_start=store.length(VALIDATION_STRUCTURES.atoms),
            frame_values={"key": [k for k, _, _ in relaxed], "source": [s for _, s, _ in relaxed],
                          "energy_eV": [a.get_potential_energy() for _, _, a in relaxed]}))
    if displaced:
        blocks.update(structure_rows(
            VALIDATION_FORCES, numbers=[c.numbers for _, _, c, _ in displaced],
            positions_A=[c.positions_A for _, _, c, _ in displaced], cell_A=[c.cell_A for _, _, c, _ in displaced],
            pbc=[c.pbc for _, _, c, _ in displaced], atom_start=store.length(VALIDATION_FORCES.atoms),
            frame_values={"key": [k for k, _, _, _ in displaced], "source": [s for _, s, _, _ in displaced]},
            atom_values={"forces_eV_per_A": [f for _, _, _, f in displaced]}))
    return blocks


def _columns(table, values: dict) -> dict:
    return {c.name: np.array(values[c.name], dtype=c.numpy_dtype).reshape(-1, *c.inner_shape) for c in table.columns}


def relaxed_structures(store: CampaignStore) -> dict[str, object]:
    """structure-step key → the relaxed cell (ASE Atoms)."""
    from ase import Atoms

    if not store.length(VALIDATION_STRUCTURES.frames):
        return {}
    block = store.read_structures(VALIDATION_STRUCTURES)
    return {str(block.frames["key"][k]): Atoms(numbers=block.atom_values("numbers", k),
                                               positions=block.atom_values("positions_A", k),
                                               cell=block.frames["cell_A"][k], pbc=block.frames["pbc"][k])
            for k in range(len(block))}


def displaced_forces(store: CampaignStore) -> dict[str, np.ndarray]:
    """forces-task key → the forces (n_atoms, 3) on its displaced cell."""
    if not store.length(VALIDATION_FORCES.frames):
        return {}
    block = store.read_structures(VALIDATION_FORCES)
    return {str(block.frames["key"][k]): block.atom_values("forces_eV_per_A", k) for k in range(len(block))}


def curves(store: CampaignStore) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, str, str]]:
    """(source, curve) → x (points,), y (points, series), x unit, y unit, of the latest launch."""
    sources = latest_sources(store)
    if not store.length(VALIDATION_CURVES) or not sources:
        return {}
    table = store.read(VALIDATION_CURVES)
    mine = np.array([str(k) in sources for k in table["key"]], dtype=bool)
    table = {name: column[mine] for name, column in table.items()}
    out = {}
    keys = list(zip((sources[str(k)] for k in table["key"]), (str(c) for c in table["curve"])))
    for key in dict.fromkeys(keys):
        rows = np.flatnonzero([k == key for k in keys])
        series = table["series"][rows]
        x = table["x"][rows][series == 0]
        y = np.stack([table["y"][rows][series == s] for s in range(int(series.max()) + 1)], axis=1)
        out[key] = (x, y, str(table["x_unit"][rows[0]]), str(table["y_unit"][rows[0]]))
    return out


def comparison(store: CampaignStore, labeler: str, drawn: dict | None = None) -> list[dict]:
    """Every value with, for the potentials, the error against the ``labeler`` source (relative
    only where the labeler's value is at least 1e-3 in its unit: not for the acoustic modes at Γ);
    and per potential the Δ (meV/atom) between its equation of state and the labeler's."""
    rows = []
    sources = latest_sources(store)
    if store.length(VALIDATION_VALUES) and sources:
        table = store.read(VALIDATION_VALUES)
        mine = [k for k, key in enumerate(table["key"]) if str(key) in sources]
        names = [sources[str(table["key"][k])] for k in mine]
        reference = {str(table["property"][k]): float(table["value"][k]) for k, s in zip(mine, names) if s == labeler}
        for k, source in zip(mine, names):
            step, prop, unit, value = (table[c][k] for c in ("step", "property", "unit", "value"))
            ref = reference.get(str(prop))
            error = None if ref is None or str(source) == labeler else float(value) - ref
            rows.append({"source": str(source), "step": str(step), "property": str(prop), "unit": str(unit),
                         "value": float(value), "error": error,
                         "relative_error": None if error is None or abs(ref) < 1e-3 else error / abs(ref)})
    drawn = curves(store) if drawn is None else drawn  # ``curves(store)``, when the caller has it
    if (labeler, "eos") in drawn:
        from tasks.validation.eos import delta_eV_per_atom

        x_ref, y_ref, x_unit, _ = drawn[(labeler, "eos")]
        for (source, name), (x, y, _, _) in drawn.items():
            if name == "eos" and source != labeler:
                try:
                    delta = 1000 * delta_eV_per_atom(x, y[:, 0], x_ref, y_ref[:, 0])
                except ValueError:  # the curves share no volume: no Δ
                    continue
                rows.append({"source": source, "step": "eos", "property": "Δ(EOS)", "unit": "meV/atom",
                             "value": delta, "error": None, "relative_error": None})
    return rows


def comparison_rows(store: CampaignStore, labeler: str, launch: int) -> dict:
    rows = comparison(store, labeler)
    number = lambda name: np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=float)  # noqa: E731
    text = lambda name: np.array([r[name] for r in rows], dtype=object)  # noqa: E731
    return {VALIDATION_COMPARISON.name: {
        "launch": np.full(len(rows), launch, dtype=np.int32), "source": text("source"), "step": text("step"),
        "property": text("property"), "unit": text("unit"), "value": number("value"), "error": number("error"),
        "relative_error": number("relative_error")}}
