"""The irradiation recipe's store tables, the rows its impacts become, and what is read back from
them: per-impact counts, yields with their intervals, status lines.

Tables (xarray-readable like every table of the store):
  irradiation_impacts    one row per impact: where it hit, what it sputtered by layer, vacancies,
                         the ion's fate, steps, simulated time, energy drift, health flags
  irradiation_sputtered  one row per sputtered atom: element, layer of origin, position, velocity,
                         time, whether it left in flight or was found detached at the end
  irradiation_end(_atoms) the end state of every impact (ragged structures; ``index``: each atom's
                         index in the pristine sheet, the sheet's size for the ion)
  irradiation_yields     per launch, per (ion, energy, species, layer): mean, interval, impacts, method
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from campaign.keys import derive_seed
from campaign.stage import WorkItem
from storage import CampaignStore
from storage.tables import columnar, structure_rows, structure_tables
from tasks.irradiation.damage import ORIGINS
from tasks.irradiation.impact import ImpactResult
from tasks.irradiation.statistics import yield_interval
from tasks.outcome import Outcome

LAYERS = ORIGINS[:3]  # top, metal, bottom

IRR_IMPACTS = columnar("irradiation_impacts", "irradiation/impacts", "impact", (
    ("key", "str"),
    ("ensemble", "str"),  # impacts sharing potential, target, settings and seed (recipes/irradiation.py)
    ("ion", "str"),
    ("energy_eV", "f8"),
    ("impact", "i8"),  # index within its (ion, energy)
    ("seed", "i8"),
    ("aim_x_A", "f8"),
    ("aim_y_A", "f8"),
    ("polar_deg", "f8"),
    ("azimuth_deg", "f8"),
    ("sputtered", "i4"),
    *((f"sputtered_{layer}", "i4") for layer in LAYERS),
    *((f"vacancies_{layer}", "i4") for layer in LAYERS),
    ("interstitials", "i4"),
    ("ion_fate", "str"),
    ("steps", "i8"),
    ("time_fs", "f8"),
    ("energy_drift_eV", "f8"),
    ("max_energy_drift_eV", "f8"),
    ("border_max_kinetic_eV", "f8"),
    ("flags", "str"),  # comma-separated: non-finite, energy-drift, border-hot
    ("sheet_elements", "str"),  # comma-separated elements of the pristine sheet
))

IRR_SPUTTERED = columnar("irradiation_sputtered", "irradiation/sputtered", "sputtered_atom", (
    ("key", "str"),  # the impact's key
    ("element", "str"),
    ("origin", "str"),  # top, metal, bottom
    ("index", "i8"),
    ("position_A", "f8", ("xyz",), (3,)),
    ("velocity_A_per_fs", "f8", ("xyz",), (3,)),
    ("time_fs", "f8"),
    ("in_flight", "bool"),
))

IRR_END = structure_tables("irradiation_end", "irradiation_end_atoms", "irradiation/end", "end_state",
                           "end_atom", atoms_group="irradiation/end_atoms", frame_columns=(("key", "str"),),
                           atom_columns=(("index", "i8"),))

IRR_YIELDS = columnar("irradiation_yields", "irradiation/yields", "yield", (
    ("launch", "i4"),
    ("ensemble", "str"),
    ("ion", "str"),
    ("energy_eV", "f8"),
    ("species", "str"),  # "all" or an element
    ("layer", "str"),  # "all", top, metal, bottom
    ("mean", "f8"),
    ("low", "f8"),
    ("high", "f8"),
    ("confidence", "f8"),
    ("impacts", "i8"),
    ("method", "str"),  # bca or poisson
))


def impact_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome], *,
                ensemble: str) -> dict:
    impacts: dict[str, list] = defaultdict(list)
    sputtered: dict[str, list] = defaultdict(list)
    results: list[ImpactResult] = [o.value for o in outcomes]
    for item, r in zip(items, results):
        job = r.job
        by_layer = r.sputtered_by_origin()
        values = {"key": item.key, "ensemble": ensemble, "ion": job.ion, "energy_eV": job.energy_eV,
                  "impact": job.index, "seed": job.seed, "aim_x_A": r.aim_A[0],
                  "aim_y_A": r.aim_A[1], "polar_deg": job.polar_deg, "azimuth_deg": job.azimuth_deg,
                  "sputtered": int(by_layer.sum()), "interstitials": r.interstitials, "ion_fate": r.ion_fate,
                  "steps": r.steps, "time_fs": r.time_fs, "energy_drift_eV": r.energy_drift_eV,
                  "max_energy_drift_eV": r.max_energy_drift_eV, "border_max_kinetic_eV": r.border_max_kinetic_eV,
                  "flags": ",".join(r.flags), "sheet_elements": ",".join(r.sheet_elements)}
        for k, layer in enumerate(LAYERS):
            values[f"sputtered_{layer}"] = int(by_layer[k])
            values[f"vacancies_{layer}"] = int(r.vacancies_by_origin[k])
        for name, value in values.items():
            impacts[name].append(value)
        for atom in r.sputtered:
            for name, value in (("key", item.key), ("element", chemical_symbols[atom.number]),
                                ("origin", ORIGINS[atom.origin]), ("index", atom.index),
                                ("position_A", atom.position_A), ("velocity_A_per_fs", atom.velocity_A_per_fs),
                                ("time_fs", atom.time_fs), ("in_flight", atom.in_flight)):
                sputtered[name].append(value)
    blocks = {IRR_IMPACTS.name: _columns(IRR_IMPACTS, impacts)}
    if sputtered:
        blocks[IRR_SPUTTERED.name] = _columns(IRR_SPUTTERED, sputtered)
    blocks.update(structure_rows(
        IRR_END, numbers=[r.end_numbers for r in results], positions_A=[r.end_positions_A for r in results],
        cell_A=[r.end_cell_A for r in results], pbc=[r.end_pbc for r in results],
        atom_start=store.length(IRR_END.atoms), frame_values={"key": [i.key for i in items]},
        atom_values={"index": [r.end_index for r in results]}))
    return blocks


def _columns(table, values: dict[str, list]) -> dict[str, np.ndarray]:
    out = {}
    for column in table.columns:
        data = values[column.name]
        out[column.name] = np.array(data, dtype=column.numpy_dtype).reshape(-1, *column.inner_shape)
    return out


# -- reading back ---------------------------------------------------------------------------------
def ensemble_impacts(store: CampaignStore, ensemble: str | None, finite_only: bool = True) -> dict[str, np.ndarray]:
    """The ensemble's impacts (the latest one written if None), by default those that ran to a
    finite end (the others have no counts to give)."""
    table = store.read(IRR_IMPACTS)
    if not len(table["key"]):
        return table
    ensemble = ensemble if ensemble is not None else str(table["ensemble"][-1])
    keep = table["ensemble"] == ensemble
    if finite_only:
        keep &= np.array(["non-finite" not in f for f in table["flags"]], bool)
    return {name: values[keep] for name, values in table.items()}


def point_counts(store: CampaignStore, ensemble: str) -> tuple[dict, dict]:
    """Per (ion, energy): the sputtered count of each usable impact, and the next free impact index."""
    table = store.read(IRR_IMPACTS, ["ensemble", "ion", "energy_eV", "impact", "sputtered", "flags"])
    counts, next_index = defaultdict(list), defaultdict(int)
    for e, ion, energy, index, n, flags in zip(*(table[c] for c in ("ensemble", "ion", "energy_eV", "impact",
                                                                     "sputtered", "flags"))):
        if e != ensemble:
            continue
        point = (str(ion), float(energy))
        next_index[point] = max(next_index[point], int(index) + 1)
        if "non-finite" not in flags:
            counts[point].append(int(n))
    return {p: np.array(c) for p, c in counts.items()}, next_index


def per_impact_counts(store: CampaignStore, ensemble: str | None = None) -> dict:
    """{(ion, energy): {(species, layer): counts per impact}} for species "all" and each element of
    the sheet, layer "all" and each layer."""
    impacts = ensemble_impacts(store, ensemble)
    atoms = store.read(IRR_SPUTTERED, ["key", "element", "origin"])
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, element, origin in zip(atoms["key"], atoms["element"], atoms["origin"]):
        by_key[str(key)].append((str(element), str(origin)))
    out: dict = defaultdict(lambda: defaultdict(list))
    for key, ion, energy, elements in zip(impacts["key"], impacts["ion"], impacts["energy_eV"],
                                          impacts["sheet_elements"]):
        point = out[(str(ion), float(energy))]
        found = by_key.get(str(key), [])
        for species in ("all", *str(elements).split(",")):
            for layer in ("all", *LAYERS):
                if species != "all" and layer != "all":
                    continue
                point[(species, layer)].append(sum(1 for e, o in found if species in ("all", e)
                                                   and layer in ("all", o)))
    return {p: {k: np.array(v) for k, v in d.items()} for p, d in out.items()}


def yield_rows(store: CampaignStore, ensemble: str | None, confidence: float, seed: int, launch: int,
               layers: Sequence[str] | None = None) -> dict:
    """One row per (ion, energy, species, layer) of the ensemble (only ``layers`` if given)."""
    rows: dict[str, list] = defaultdict(list)
    for (ion, energy), series in sorted(per_impact_counts(store, ensemble).items()):
        for (species, layer), counts in series.items():
            if layers is not None and layer not in layers:
                continue
            interval = yield_interval(counts, confidence, rng=derive_seed(seed, "yield", ion, repr(energy),
                                                                           species, layer, len(counts)))
            for name, value in (("launch", launch), ("ensemble", ensemble or ""), ("ion", ion),
                                ("energy_eV", energy), ("species", species), ("layer", layer),
                                ("mean", interval.mean), ("low", interval.low), ("high", interval.high),
                                ("confidence", confidence), ("impacts", interval.n_impacts),
                                ("method", interval.method.value)):
                rows[name].append(value)
    return _columns(IRR_YIELDS, rows)


def status_rows(store: CampaignStore) -> list[dict]:
    """Per (ion, energy) of the latest ensemble: impacts done, flagged (any health flag), stopped
    by non-finite forces ("no end": left out of the yields), and the mean yields so far."""
    impacts = ensemble_impacts(store, None, finite_only=False)
    out = []
    for (ion, energy), series in sorted(per_impact_counts(store).items()):
        mine = (impacts["ion"] == ion) & (impacts["energy_eV"] == energy)
        flags = [str(f) for f in impacts["flags"][mine]]
        row = {"ion": ion, "energy_eV": energy, "impacts": int(mine.sum()), "flagged": sum(1 for f in flags if f),
               "non_finite": sum(1 for f in flags if "non-finite" in f)}
        for (species, layer), counts in series.items():
            if layer == "all":
                row[f"yield_{species}"] = float(counts.mean())
        out.append(row)
    return out


def status_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    species = [k[len("yield_"):] for k in rows[0] if k.startswith("yield_")]
    lines = ["", f"{'ion':>4}{'E (eV)':>9}{'impacts':>9}{'flagged':>9}{'no end':>8}"
             + "".join(f"{'Y ' + s:>9}" for s in species)]
    for r in rows:
        lines.append(f"{r['ion']:>4}{r['energy_eV']:>9g}{r['impacts']:>9}{r['flagged']:>9}{r['non_finite']:>8}"
                     + "".join(f"{r.get('yield_' + s, float('nan')):>9.3f}" for s in species))
    return lines
