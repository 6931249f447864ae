"""The slab_mc recipe's store tables, the rows a segment becomes, and what is read back.

Tables (xarray-readable like every table of the store; group ``slab_mc``):
  checkpoints(_atoms)     per chain and segment: everything to continue the chain exactly (step,
                          RNG state, counters, accepted jumps by origin layer and layer offset as
                          JSON), the atoms' positions and energies; its site and vacancy rows start
                          at ``site_start`` and ``vacancy_start`` of the two tables below
  checkpoint_sites        per checkpoint and metal site: the atom on it (−1: vacant)
  checkpoint_vacancies    per checkpoint and vacancy: its site now and at step 0, and its layer
                          now minus its layer at step 0
  trace                   per chain every ``record_every`` steps and at step 0: temperature,
                          energy, thickness, volume, proposed / accepted / blocked moves, share of
                          the metal on vdW-CrS2 sites, accepted hops within a layer and across
                          1, 2, ≥ 3 layers (counters cumulative)
  trace_layers            per trace row and metal layer (0: lowest z): sites, metal atoms,
                          thickness, accepted hops from the layer within it, up and down
  snapshots(_atoms)       per chain every ``snapshot_every`` steps and at step 0: the atoms, with
                          the site each metal atom is on (−1: anions)
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

import numpy as np

from campaign.recipes.anneal_tables import keyed_structures
from campaign.report import rows_by_chain
from campaign.stage import WorkItem
from storage import CampaignStore
from storage.tables import Table, columnar, structure_rows, structure_tables
from tasks.mc.slab_analysis import jump_counts, plateau_step, vertical_displacements
from tasks.mc.slab_build import SLAB_PBC, Slab
from tasks.mc.slab_task import SlabSegmentJob, SlabSegmentResult, layer_vdw_fraction
from tasks.outcome import Outcome

CHAIN_COLUMNS = (("key", "str"), ("chain", "str"), ("replica", "i4"), ("seed", "i8"))
CROSSED = 3  # vertical hops are counted by layers crossed: 1, 2, and 3 or more

SLAB_CHECKPOINTS = structure_tables(
    "slab_mc_checkpoints", "slab_mc_checkpoint_atoms", "slab_mc/checkpoints", "checkpoint", "checkpoint_atom",
    atoms_group="slab_mc/checkpoint_atoms",
    frame_columns=(*CHAIN_COLUMNS, ("segment", "i4"), ("step", "i8"), ("energy_eV", "f8"), ("rng_state", "str"),
                   ("proposed", "i8", ("move",), (2,)), ("accepted", "i8", ("move",), (2,)), ("blocked", "i8"),
                   ("jumps", "str"), ("site_start", "i8"), ("n_sites", "i4"), ("vacancy_start", "i8"),
                   ("n_vacancies", "i4")),
    atom_columns=(("atomic_energy_eV", "f8"),))

SLAB_CHECKPOINT_SITES = columnar("slab_mc_checkpoint_sites", "slab_mc/checkpoint_sites", "checkpoint_site",
                                 (("site_atom", "i4"),), chunk_rows=65536)

SLAB_CHECKPOINT_VACANCIES = columnar("slab_mc_checkpoint_vacancies", "slab_mc/checkpoint_vacancies",
                                     "checkpoint_vacancy", (("vacancy_site", "i4"), ("vacancy_start_site", "i4"),
                                                            ("vertical_displacement", "i4")), chunk_rows=65536)

SLAB_TRACE = columnar("slab_mc_trace", "slab_mc/trace", "record", (
    ("key", "str"), ("chain", "str"), ("replica", "i4"), ("segment", "i4"), ("step", "i8"), ("temperature_K", "f8"),
    ("energy_eV", "f8"), ("energy_eV_per_atom", "f8"), ("thickness_A", "f8"), ("volume_A3", "f8"),
    ("proposed", "i8", ("move",), (2,)), ("accepted", "i8", ("move",), (2,)), ("blocked", "i8"),
    ("vdw_fraction", "f8"), ("horizontal_jumps", "i8"), ("vertical_jumps", "i8", ("layers_crossed",), (CROSSED,))),
    chunk_rows=16384)

SLAB_TRACE_LAYERS = columnar("slab_mc_trace_layers", "slab_mc/trace_layers", "record_layer", (
    ("key", "str"), ("chain", "str"), ("step", "i8"), ("layer", "i4"), ("sites", "i4"), ("metal_atoms", "i4"),
    ("thickness_A", "f8"), ("in_plane_jumps", "i8"), ("up_jumps", "i8"), ("down_jumps", "i8")), chunk_rows=65536)

SLAB_SNAPSHOTS = structure_tables(
    "slab_mc_snapshots", "slab_mc_snapshot_atoms", "slab_mc/snapshots", "snapshot", "snapshot_atom",
    atoms_group="slab_mc/snapshot_atoms",
    frame_columns=(*CHAIN_COLUMNS, ("segment", "i4"), ("step", "i8"), ("vdw_fraction", "f8")),
    atom_columns=(("site", "i4"),))

TABLES = (*SLAB_CHECKPOINTS.tables, SLAB_CHECKPOINT_SITES, SLAB_CHECKPOINT_VACANCIES, SLAB_TRACE, SLAB_TRACE_LAYERS,
          *SLAB_SNAPSHOTS.tables)


def segment_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome], *,
                 slab: Slab) -> dict:
    """Rows of every table for the segments that succeeded (one append: the store commits them with
    their ledger rows or not at all)."""
    checkpoint: dict[str, list] = defaultdict(list)
    sites: dict[str, list] = defaultdict(list)
    vacancies: dict[str, list] = defaultdict(list)
    trace: dict[str, list] = defaultdict(list)
    layers: dict[str, list] = defaultdict(list)
    snapshots: dict[str, list] = defaultdict(list)
    site_row, vacancy_row = store.length(SLAB_CHECKPOINT_SITES), store.length(SLAB_CHECKPOINT_VACANCIES)
    for item, outcome in zip(items, outcomes):
        job: SlabSegmentJob = item.payload
        result: SlabSegmentResult = outcome.value
        for start, record, t, shots in zip(job.chains, result.records, result.traces, result.snapshots):
            identity = {"key": item.key, "chain": start.name, "replica": start.replica}
            n_vacancies = len(record["vacancy_site"])
            _extend(checkpoint, {**identity, "seed": start.seed, "segment": job.segment, "step": record["step"],
                                 "energy_eV": record["energy_eV"], "rng_state": record["rng_state"],
                                 "proposed": record["proposed"], "accepted": record["accepted"],
                                 "blocked": record["blocked"], "jumps": json.dumps(record["jumps"].tolist()),
                                 "site_start": site_row, "n_sites": slab.n_sites, "vacancy_start": vacancy_row,
                                 "n_vacancies": n_vacancies, "positions": record["positions"],
                                 "cell": record["cell"], "atomic_energy_eV": record["atomic_energy_eV"]})
            site_row += slab.n_sites
            vacancy_row += n_vacancies
            sites["site_atom"].extend(record["site_atom"])
            vacancies["vacancy_site"].extend(record["vacancy_site"])
            vacancies["vacancy_start_site"].extend(record["vacancy_start_site"])
            vacancies["vertical_displacement"].extend(
                vertical_displacements(slab, record["vacancy_start_site"], record["vacancy_site"]))
            _trace_rows(trace, layers, slab, t, {**identity, "segment": job.segment})
            for shot in shots:
                metal = shot.site_atom >= 0
                site = np.full(slab.n_atoms, -1)
                site[shot.site_atom[metal]] = np.flatnonzero(metal)
                _extend(snapshots, {**identity, "seed": start.seed, "segment": job.segment, "step": shot.step,
                                    "vdw_fraction": float(layer_vdw_fraction(slab, np.bincount(
                                        slab.site_layer[metal], minlength=slab.n_layers))),
                                    "positions": shot.positions, "cell": record["cell"], "site": site})
    blocks = _structures(store, SLAB_CHECKPOINTS, checkpoint, slab, {"atomic_energy_eV"})
    blocks[SLAB_CHECKPOINT_SITES.name] = _columns(SLAB_CHECKPOINT_SITES, sites)
    blocks[SLAB_CHECKPOINT_VACANCIES.name] = _columns(SLAB_CHECKPOINT_VACANCIES, vacancies)
    if trace["step"]:
        blocks[SLAB_TRACE.name] = _columns(SLAB_TRACE, trace)
        blocks[SLAB_TRACE_LAYERS.name] = _columns(SLAB_TRACE_LAYERS, layers)
    if snapshots["step"]:
        blocks.update(_structures(store, SLAB_SNAPSHOTS, snapshots, slab, {"site"}))
    return blocks


def _extend(columns: dict[str, list], values: dict) -> None:
    for name, value in values.items():
        columns[name].append(value)


def _trace_rows(trace: dict[str, list], layers: dict[str, list], slab: Slab, t, identity: dict) -> None:
    """A chain's trace (tasks.mc.slab_chain.SlabTrace) as rows of the trace and its layer rows."""
    n, m = len(t.step), slab.max_offset
    vertical = np.zeros((n, CROSSED), dtype=np.int64)
    horizontal = np.zeros(n, dtype=np.int64)
    for row in range(n):
        counts = jump_counts(t.jumps[row])
        horizontal[row] = counts.horizontal
        vertical[row, :min(m, CROSSED)] = counts.vertical[:CROSSED]
        vertical[row, CROSSED - 1] += counts.vertical[CROSSED:].sum()
    for name, values in {"step": t.step, "temperature_K": t.temperature_K, "energy_eV": t.energy_eV,
                         "energy_eV_per_atom": t.energy_eV / slab.n_atoms, "thickness_A": t.thickness_A,
                         "volume_A3": t.volume_A3, "proposed": t.proposed, "accepted": t.accepted,
                         "blocked": t.blocked, "vdw_fraction": layer_vdw_fraction(slab, t.metal_per_layer),
                         "horizontal_jumps": horizontal, "vertical_jumps": vertical}.items():
        trace[name].extend(values)
    for name, value in identity.items():
        trace[name].extend([value] * n)
    n_layers = slab.n_layers
    per_layer = {"key": np.repeat(identity["key"], n * n_layers), "chain": np.repeat(identity["chain"], n * n_layers),
                 "step": np.repeat(t.step, n_layers), "layer": np.tile(np.arange(n_layers), n),
                 "sites": np.tile(np.bincount(slab.site_layer, minlength=n_layers), n),
                 "metal_atoms": t.metal_per_layer.reshape(-1), "thickness_A": t.layer_thickness_A.reshape(-1),
                 "in_plane_jumps": t.jumps[:, :, m].reshape(-1),
                 "up_jumps": t.jumps[:, :, m + 1:].sum(axis=2).reshape(-1),
                 "down_jumps": t.jumps[:, :, :m].sum(axis=2).reshape(-1)}
    for name, values in per_layer.items():
        layers[name].extend(values)


def _structures(store: CampaignStore, shape, values: dict, slab: Slab, atom_names: set[str]) -> dict:
    frame_names = [c.name for c in shape.frames.columns if c.name in values]
    return structure_rows(shape, numbers=[slab.numbers] * len(values["cell"]), positions_A=values["positions"],
                          cell_A=values["cell"], pbc=[SLAB_PBC] * len(values["cell"]),
                          atom_start=store.length(shape.atoms),
                          frame_values={name: values[name] for name in frame_names},
                          atom_values={name: values[name] for name in atom_names})


def _columns(table: Table, values: dict) -> dict:
    return {c.name: np.array(values[c.name], dtype=c.numpy_dtype).reshape(-1, *c.inner_shape) for c in table.columns}


# -- reading back ---------------------------------------------------------------------------------
def checkpoint_records(store: CampaignStore, key: str) -> dict[str, dict]:
    """chain name → the checkpoint record (SlabChain.to_record) a segment ``key`` left."""
    block, frames = keyed_structures(store, SLAB_CHECKPOINTS, key)
    out = {}
    for k, f in enumerate(frames):
        sites = store.read(SLAB_CHECKPOINT_SITES, rows=slice(int(f["site_start"]),
                                                             int(f["site_start"]) + int(f["n_sites"])))
        vacancies = store.read(SLAB_CHECKPOINT_VACANCIES, rows=slice(
            int(f["vacancy_start"]), int(f["vacancy_start"]) + int(f["n_vacancies"])))
        out[str(f["chain"])] = {
            "positions": block.atom_values("positions_A", k), "cell": f["cell_A"],
            "atomic_energy_eV": block.atom_values("atomic_energy_eV", k), "site_atom": sites["site_atom"],
            "vacancy_site": vacancies["vacancy_site"], "vacancy_start_site": vacancies["vacancy_start_site"],
            "jumps": np.array(json.loads(str(f["jumps"])), dtype=np.int64), "proposed": f["proposed"],
            "accepted": f["accepted"], "seed": int(f["seed"]), "rng_state": str(f["rng_state"]),
            "step": int(f["step"]), "blocked": int(f["blocked"]), "energy_eV": float(f["energy_eV"])}
    return out


def chain_plateaus(store: CampaignStore, n_atoms: int, window_steps: int,
                   tolerance_eV_per_atom: float) -> dict[str, int | None]:
    """chain name → the step at which its stored trace reached the energy plateau
    (tasks.mc.slab_analysis.plateau_step), or None."""
    trace = store.read(SLAB_TRACE, ["chain", "step", "energy_eV"])
    return {chain: plateau_step(trace["step"][rows], trace["energy_eV"][rows], n_atoms, window_steps,
                                tolerance_eV_per_atom) for chain, rows in rows_by_chain(trace).items()}
