"""The anneal recipe's store tables, the rows a segment becomes, and what is read back.

Tables (xarray-readable like every table of the store):
  anneal_checkpoints(_sites)  per chain and segment: everything to continue the chain exactly
                              (step, energy, RNG state, counters, the current cycle's best so far);
                              one site row per lattice site (``n_atoms`` counts sites), holding the
                              occupation (0: vacancy) and the best one; ``occupied_sites``: atoms
  anneal_minima(_atoms)       per chain and cycle: the lowest structure met (vacancies dropped)
  anneal_minimum_layers       per minimum and metal layer (ordered along c): sites and metal atoms
  anneal_trace                per chain, every ``record_every`` steps: temperature, energy,
                              volume, proposed and accepted moves (cumulative)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from campaign.stage import WorkItem
from storage import CampaignStore
from storage.tables import StructureBlock, StructureTables, columnar, structure_rows, structure_tables
from tasks.mc.anneal import AnnealCell, SegmentJob, SegmentResult
from tasks.outcome import Outcome

CHAIN_COLUMNS = (("key", "str"), ("chain", "str"), ("vacancy_fraction", "f8"), ("replica", "i4"), ("seed", "i8"))

ANNEAL_CHECKPOINTS = structure_tables(
    "anneal_checkpoints", "anneal_checkpoint_sites", "anneal/checkpoints", "checkpoint", "checkpoint_site",
    atoms_group="anneal/checkpoint_sites",
    frame_columns=(*CHAIN_COLUMNS, ("segment", "i4"), ("step", "i8"), ("occupied_sites", "i4"), ("energy_eV", "f8"),
                   ("rng_state", "str"),
                   ("proposed", "i8", ("move",), (2,)), ("accepted", "i8", ("move",), (2,)),
                   ("best_energy_eV", "f8"), ("best_step", "i8"),
                   ("best_cell_A", "f8", ("cell_vector", "xyz"), (3, 3))),
    atom_columns=(("best_numbers", "i2"),))

ANNEAL_MINIMA = structure_tables(
    "anneal_minima", "anneal_minimum_atoms", "anneal/minima", "minimum", "minimum_atom",
    atoms_group="anneal/minimum_atoms",
    frame_columns=(*CHAIN_COLUMNS, ("cycle", "i4"), ("step", "i8"), ("energy_eV", "f8"),
                   ("energy_eV_per_atom", "f8"), ("formula", "str")))

ANNEAL_LAYERS = columnar("anneal_minimum_layers", "anneal/minimum_layers", "minimum_layer", (
    ("key", "str"), ("chain", "str"), ("vacancy_fraction", "f8"), ("cycle", "i4"), ("layer", "i4"),
    ("sites", "i4"), ("metal_atoms", "i4")))

ANNEAL_TRACE = columnar("anneal_trace", "anneal/trace", "record", (
    ("key", "str"), ("chain", "str"), ("vacancy_fraction", "f8"), ("segment", "i4"), ("step", "i8"),
    ("temperature_K", "f8"), ("energy_eV", "f8"), ("energy_eV_per_atom", "f8"), ("volume_A3", "f8"),
    ("proposed", "i8", ("move",), (2,)), ("accepted", "i8", ("move",), (2,))), chunk_rows=16384)

TABLES = (*ANNEAL_CHECKPOINTS.tables, *ANNEAL_MINIMA.tables, ANNEAL_LAYERS, ANNEAL_TRACE)


def segment_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome], *,
                 cell: AnnealCell) -> dict:
    """Rows of every table for the segments that succeeded."""
    checkpoint: dict[str, list] = defaultdict(list)
    minima: dict[str, list] = defaultdict(list)
    layers: dict[str, list] = defaultdict(list)
    trace: dict[str, list] = defaultdict(list)
    for item, outcome in zip(items, outcomes):
        job: SegmentJob = item.payload
        result: SegmentResult = outcome.value
        for k, (start, record) in enumerate(zip(job.chains, result.records)):
            identity = {"key": item.key, "chain": start.name, "vacancy_fraction": start.vacancy_fraction}
            for name, value in {**identity, "replica": start.replica, "seed": start.seed, "segment": job.segment,
                                "step": record["step"], "energy_eV": record["energy_eV"],
                                "occupied_sites": int(np.count_nonzero(record["occupation"])),
                                "rng_state": record["rng_state"], "proposed": record["proposed"],
                                "accepted": record["accepted"], "best_energy_eV": record["best_energy_eV"],
                                "best_step": record["best_step"], "best_cell_A": record["best_cell"],
                                "occupation": record["occupation"], "cell": record["cell"],
                                "best_numbers": record["best_occupation"]}.items():
                checkpoint[name].append(value)
            for minimum in result.advanced.minima[k]:
                atoms = cell.structure(minimum.occupation, minimum.cell)
                for name, value in {**identity, "replica": start.replica, "seed": start.seed, "cycle": minimum.cycle,
                                    "step": minimum.step, "energy_eV": minimum.energy_eV,
                                    "energy_eV_per_atom": minimum.energy_eV / len(atoms),
                                    "formula": atoms.get_chemical_formula(), "atoms": atoms}.items():
                    minima[name].append(value)
                fraction = cell.layer_occupation(minimum.occupation)
                sites = np.bincount(cell.metal_layer[cell.metal_sites], minlength=cell.n_layers)
                for layer in range(cell.n_layers):
                    for name, value in {**identity, "cycle": minimum.cycle, "layer": layer, "sites": sites[layer],
                                        "metal_atoms": int(round(fraction[layer] * sites[layer]))}.items():
                        layers[name].append(value)
            t = result.advanced.traces[k]
            n_atoms = np.count_nonzero(record["occupation"])
            for name, values in {"step": t.step, "temperature_K": t.temperature_K, "energy_eV": t.energy_eV,
                                 "energy_eV_per_atom": t.energy_eV / n_atoms, "volume_A3": t.volume_A3,
                                 "proposed": t.proposed, "accepted": t.accepted}.items():
                trace[name].extend(values)
            for name, value in {**identity, "segment": job.segment}.items():
                trace[name].extend([value] * len(t.step))
    blocks = {}
    blocks.update(_structures(store, ANNEAL_CHECKPOINTS, checkpoint, cell))
    if minima:
        blocks.update(_structures(store, ANNEAL_MINIMA, minima, cell))
        blocks[ANNEAL_LAYERS.name] = _columns(ANNEAL_LAYERS, layers)
    if trace["step"]:
        blocks[ANNEAL_TRACE.name] = _columns(ANNEAL_TRACE, trace)
    return blocks


def _structures(store: CampaignStore, shape, values: dict, cell: AnnealCell) -> dict:
    frame_names = [c.name for c in shape.frames.columns if c.name in values]
    if shape is ANNEAL_CHECKPOINTS:
        numbers = values["occupation"]
        positions = [cell.sites.positions(c) for c in values["cell"]]
        cells = values["cell"]
        atom_values = {"best_numbers": values["best_numbers"]}
    else:
        numbers = [a.numbers for a in values["atoms"]]
        positions = [a.positions for a in values["atoms"]]
        cells = [a.cell.array for a in values["atoms"]]
        atom_values = None
    return structure_rows(shape, numbers=numbers, positions_A=positions, cell_A=cells,
                          pbc=[(True, True, True)] * len(cells), atom_start=store.length(shape.atoms),
                          frame_values={name: values[name] for name in frame_names}, atom_values=atom_values)


def _columns(table, values: dict) -> dict:
    return {c.name: np.array(values[c.name], dtype=c.numpy_dtype).reshape(-1, *c.inner_shape) for c in table.columns}


def keyed_structures(store: CampaignStore, shape: StructureTables, key: str) -> tuple[StructureBlock, list[dict]]:
    """The rows of a ragged structures table that the item ``key`` wrote, and each row's frame values."""
    rows = np.flatnonzero(store.read(shape.frames, ["key"])["key"] == key)
    block = store.read_structures(shape, rows if len(rows) else slice(0, 0))
    return block, [{name: block.frames[name][k] for name in block.frames} for k in range(len(block))]


def checkpoint_records(store: CampaignStore, key: str) -> dict[str, dict]:
    """chain name → the checkpoint record (ChainState.to_record) a segment ``key`` left."""
    block, frames = keyed_structures(store, ANNEAL_CHECKPOINTS, key)
    out = {}
    for k, f in enumerate(frames):
        out[str(f["chain"])] = {
            "occupation": block.atom_values("numbers", k).astype(np.int64), "cell": f["cell_A"],
            "energy_eV": float(f["energy_eV"]), "seed": int(f["seed"]), "rng_state": str(f["rng_state"]),
            "step": int(f["step"]), "proposed": f["proposed"], "accepted": f["accepted"],
            "best_energy_eV": float(f["best_energy_eV"]),
            "best_occupation": block.atom_values("best_numbers", k).astype(np.int64),
            "best_cell": f["best_cell_A"], "best_step": int(f["best_step"])}
    return out
