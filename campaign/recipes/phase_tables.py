"""The phase-diagram recipe's store tables and the rows its stages become.

Tables (xarray-readable like every table of the store):
  phase_cells, phase_cell_sites  every enumerated cell, compactly: its supercell matrix and size,
                         and one species index per site (ragged: ``site_start``, ``n_sites``);
                         ``task`` / ``index_in_task`` place it in its enumeration task, so chunks
                         of ranking have keys that do not depend on the order tasks finished in
  phase_ranked           one row per ranked cell: the potential's and the CE's energies per atom
  phase_computed(_atoms) every relaxed structure (by the labeler or the potential): energy, whether
                         it converged, the relaxed atoms
  phase_ideal(_atoms)    the ideal lattice cell (vacancies as X, Z = 0) of every labeler-relaxed
                         structure: what the cluster expansion is fitted on
  phase_ce_rounds        every fit of the cluster expansion: data, CV score, ECIs, the structures it
                         chose next and why
  phase_agreement        per launch and composition: Spearman ρ and RMSE of the potential's and
                         the CE's energies against the labeler's
  phase_hull             per launch, every labeler-computed structure: x, formation energy, energy
                         above the hull, on the hull or not
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from campaign.stage import WorkItem
from storage import CampaignStore
from storage.frames import LabeledFrame, frame_blocks
from storage.schema import LABELED
from storage.tables import columnar, structure_rows, structure_tables
from tasks.labeling import labeler_settings_json
from tasks.outcome import Outcome

PHASE_CELLS = columnar("phase_cells", "phase/cells", "cell", (
    ("task", "i4"),  # the enumeration group's index in the plan
    ("index_in_task", "i4"),
    ("ncells", "i2"),  # primitive cells in the cell
    ("hnf", "i2", ("matrix",), (9,)),
    ("vacancy_fraction", "f8"),
    ("n_sites", "i2"),  # sites with a choice of species (the metal sites); the others are implied
    ("site_start", "i8"),  # first row of the cell's sites in phase_cell_sites
), chunk_rows=65536)

PHASE_CELL_SITES = columnar("phase_cell_sites", "phase/cell_sites", "site", (("species", "u1"),),
                            chunk_rows=1 << 20)

PHASE_RANKED = columnar("phase_ranked", "phase/ranked", "ranked", (
    ("cell", "i8"),  # row in phase_cells
    ("vacancy_fraction", "f8"),
    ("n_atoms", "i2"),
    ("energy_eV_per_atom", "f8"),  # the potential's, unrelaxed
    ("deviation_eV_per_atom", "f8"),  # a committee's spread; NaN for one model
    ("ce_eV_per_atom", "f8"),
), chunk_rows=65536)

PHASE_COMPUTED = structure_tables(
    "phase_computed", "phase_computed_atoms", "phase/computed", "computed", "computed_atom",
    atoms_group="phase/computed_atoms",
    frame_columns=(("key", "str"), ("stage", "str"), ("method", "str"),  # method: labeler or potential
                   ("cell", "i8"),  # row in phase_cells; −1 for SQS cells and rounds' candidates
                   ("vacancy_fraction", "f8"), ("energy_eV", "f8"), ("energy_eV_per_atom", "f8"),
                   ("max_force_eV_per_A", "f8"), ("converged", "bool"), ("steps", "i4")))

PHASE_IDEAL = structure_tables("phase_ideal", "phase_ideal_atoms", "phase/ideal", "ideal", "ideal_atom",
                               atoms_group="phase/ideal_atoms", frame_columns=(("key", "str"),))

PHASE_CE_ROUNDS = columnar("phase_ce_rounds", "phase/ce_rounds", "fit", (
    ("launch", "i4"),
    ("round", "i4"),
    ("data", "str"),  # the key of what it was fitted on (a relaunch refitting the same adds no row)
    ("n_structures", "i4"),
    ("cv_rmse_eV_per_site", "f8"),  # of the energies above the line through the end compositions
    ("parameters", "str"),  # JSON list: the ECIs
    ("chosen", "str"),  # JSON list of {key, x, reason, score}
    ("seed", "i8"),
))

PHASE_AGREEMENT = columnar("phase_agreement", "phase/agreement", "agreement", (
    ("launch", "i4"),
    ("vacancy_fraction", "f8"),
    ("method", "str"),  # potential or ce
    ("n", "i4"),
    ("spearman_rho", "f8"),
    ("rmse_eV_per_atom", "f8"),
))

PHASE_HULL = columnar("phase_hull", "phase/hull", "point", (
    ("launch", "i4"),
    ("key", "str"),
    ("source", "str"),  # the stage that computed it, or "external: <file>"
    ("formula", "str"),
    ("vacancy_fraction", "f8"),
    ("energy_eV_per_atom", "f8"),
    ("formation_energy_eV_per_atom", "f8"),
    ("e_above_hull_eV_per_atom", "f8"),
    ("on_hull", "bool"),
))

TABLES = (PHASE_CELLS, PHASE_CELL_SITES, PHASE_RANKED, *PHASE_COMPUTED.tables, *PHASE_IDEAL.tables,
          PHASE_CE_ROUNDS, PHASE_AGREEMENT, PHASE_HULL)


def cell_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome]) -> dict:
    """Enumerated cells of finished enumeration groups (payload: EnumerationGroup; value:
    tasks.phase.cells.EnumeratedCells, whose occupations cover the sites with a choice only)."""
    from tasks.phase.cells import VACANCY

    site_start = store.length(PHASE_CELL_SITES)
    cells = {c.name: [] for c in PHASE_CELLS.columns}
    sites = []
    for item, outcome in zip(items, outcomes):
        found = outcome.value
        n = len(found)
        n_sites = found.ncells.astype(np.int64) * len(found.active_sites)
        occupation = [found.sites(k) for k in range(n)]
        vacancy = found.elements.index(VACANCY) if VACANCY in found.elements else -1
        cells["task"].append(np.full(n, item.payload.index))
        cells["index_in_task"].append(np.arange(n))
        cells["ncells"].append(found.ncells)
        cells["hnf"].append(found.hnf.reshape(n, 9))
        cells["vacancy_fraction"].append(np.array([np.mean(o == vacancy) for o in occupation]))
        cells["n_sites"].append(n_sites)
        cells["site_start"].append(site_start + np.concatenate([[0], np.cumsum(n_sites)[:-1]]).astype(np.int64))
        site_start += int(n_sites.sum())
        sites.extend(occupation)
    columns = {c.name: np.concatenate(cells[c.name]).astype(c.numpy_dtype).reshape(-1, *c.inner_shape)
               if cells[c.name] else np.zeros((0, *c.inner_shape), c.numpy_dtype) for c in PHASE_CELLS.columns}
    species = np.concatenate(sites).astype(np.uint8) if sites else np.zeros(0, np.uint8)
    return {PHASE_CELLS.name: columns, PHASE_CELL_SITES.name: {"species": species}}


def ranked_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome]) -> dict:
    """Ranked chunks (payload: tasks.phase.ranking.CellChunk with ``rows``, value: RankedChunk)."""
    parts = {c.name: [] for c in PHASE_RANKED.columns}
    for item, outcome in zip(items, outcomes):
        chunk, ranked = item.payload, outcome.value
        parts["cell"].append(chunk.rows)
        parts["vacancy_fraction"].append(chunk.vacancy_fraction)
        parts["n_atoms"].append(ranked.n_atoms)
        parts["energy_eV_per_atom"].append(ranked.energy_eV_per_atom)
        parts["deviation_eV_per_atom"].append(ranked.deviation_eV_per_atom)
        parts["ce_eV_per_atom"].append(ranked.ce_eV_per_atom)
    return {PHASE_RANKED.name: {c.name: np.concatenate(parts[c.name]).astype(c.numpy_dtype)
                                for c in PHASE_RANKED.columns}}


def computed_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome], *, stage: str,
                  method: str, labeler=None) -> dict:
    """Relaxed structures (payload: tasks.phase.lattice.PhaseCell; value: tasks.phase.relax.Relaxed);
    for the labeler also their ideal cells and the kept snapshots of their paths as labeled frames."""
    relaxed = [o.value for o in outcomes]
    cells = [item.payload for item in items]
    blocks = structure_rows(
        PHASE_COMPUTED, numbers=[r.numbers for r in relaxed], positions_A=[r.positions_A for r in relaxed],
        cell_A=[r.cell_A for r in relaxed], pbc=[np.ones(3, bool)] * len(relaxed),
        atom_start=store.length(PHASE_COMPUTED.atoms),
        frame_values={"key": [i.key for i in items], "stage": [stage] * len(items), "method": [method] * len(items),
                      "cell": [c.row for c in cells], "vacancy_fraction": [c.vacancy_fraction for c in cells],
                      "energy_eV": [r.energy_eV for r in relaxed],
                      "energy_eV_per_atom": [r.energy_eV_per_atom for r in relaxed],
                      "max_force_eV_per_A": [r.max_force_eV_per_A for r in relaxed],
                      "converged": [r.converged for r in relaxed], "steps": [r.steps for r in relaxed]})
    if labeler is None:
        return blocks
    ideal = [c.ideal for c in cells]
    blocks.update(structure_rows(
        PHASE_IDEAL, numbers=[a.numbers for a in ideal], positions_A=[a.positions for a in ideal],
        cell_A=[a.cell.array for a in ideal], pbc=[a.pbc for a in ideal], atom_start=store.length(PHASE_IDEAL.atoms),
        frame_values={"key": [i.key for i in items]}))
    settings = labeler_settings_json(labeler)
    frames = [LabeledFrame(key=f"{item.key}:{snap['step']}", source=f"{stage}-{cell.tag}-relax", labeler=labeler.kind,
                           labeler_settings=settings, numbers=r.numbers, positions_A=snap["positions_A"],
                           cell_A=snap["cell_A"], pbc=np.ones(3, bool), energy_eV=snap["energy_eV"],
                           forces_eV_per_A=snap["forces_eV_per_A"], stress_eV_per_A3=snap["stress_eV_per_A3"])
              for item, cell, r in zip(items, cells, relaxed) for snap in r.path]
    blocks.update(frame_blocks(frames, atom_start=store.length(LABELED.atoms)))
    return blocks
