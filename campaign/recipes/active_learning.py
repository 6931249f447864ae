"""The ``active_learning`` recipe: DP-GEN's loop as keyed stages over one store.

Per iteration k: train the committee on dataset_k, explore with it, classify frames by force
deviation, pick candidates, label them. dataset_k = every labeled frame except candidates of
iterations ≥ k, sorted by key, so it does not depend on arrival order. Every stage's items are
keyed by what they depend on (the dataset's keys, the models' hashes, the seeds), so a relaunch
finds finished training, exploration and labels in the ledger and does only what is missing.
Labels of iteration k are waited for up to ``label_quorum``; stragglers are committed while
iteration k+1 trains and explores and join the first dataset built after they arrive.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from ase.data import chemical_symbols
from pydantic import Field, model_validator

from campaign.errors import CampaignFailed
from campaign.keys import derive_seed, task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.irradiation_data import IrradiationData, irradiation_structures
from campaign.recipes.label import label_items, labeled_frame_rows
from campaign.recipes.structures import load_structures
from campaign.report import save_figure
from campaign.runner import StageRun
from campaign.spec import CampaignSpec, RecipeSpec, StrictModel, StructureSource
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.frames import LabeledFrame, frame_blocks, iter_frames
from storage.ledger import done_keys
from storage.schema import LABELED
from storage.tables import columnar, structure_rows, structure_tables
from tasks.active.explore import (CommitteeFiles, ExploredFrames, ExploreJob, ExploreSettings, explore_batch,
                                  strained)
from tasks.active.initial import antisite, dimers, isolated_atoms, relax_batch, slab, vacancy
from tasks.active.select import (ACCURATE, CANDIDATE, FAILED, HISTOGRAM_EDGES_EV_PER_A, classify,
                                 deviation_histogram, select_candidates, structure_fingerprints)
from tasks.active.training import MemberJob, TrainingFrame, train_batch
from tasks.labeling import label_batch, labeler_settings_json
from tasks.nnp.repulsion import PairTable, RepulsionSettings, dimer_scan_batch
from tasks.nnp.train import TrainSettings
from tasks.potential import load_potential
from tasks.structures import Structure

VERSION = 1
MODELS_DIR = "models"


# -- the spec -------------------------------------------------------------------------------------
class DefectSpec(StrictModel):
    """Point defects cut into copies of the first initial structure."""

    kind: Literal["vacancy", "antisite"]
    species: str
    count: int = Field(1, ge=1, description="vacancy: atoms removed together (2 on MoS2's S: V_S2)")
    replacement: str | None = Field(None, description="antisite: the element put on a species site")
    copies: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _antisite_needs_replacement(self) -> "DefectSpec":
        if self.kind == "antisite" and not self.replacement:
            raise ValueError("an antisite needs replacement")
        return self


class SlabSpec(StrictModel):
    """Slab cuts of the first initial structure normal to a cell vector, one per shift."""

    axis: int = Field(2, ge=0, le=2)
    shifts: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5], min_length=1)
    vacuum_A: float = Field(16.0, gt=15.0, description="empty space added along the cut (> 15 Å)")


class RelaxSpec(StrictModel):
    """Labeler relaxations of the first ``count`` initial structures, thinned by farthest-point
    sampling on the path's energies."""

    count: int = Field(1, ge=1)
    max_steps: int = Field(20, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0)
    keep_fraction: float = Field(0.7, gt=0, le=1)


class InitialData(StrictModel):
    structures: list[StructureSource] = Field(..., min_length=1)
    defects: list[DefectSpec] = Field(default_factory=list)
    slabs: SlabSpec | None = None
    dimer_distances_A: list[float] = Field(default_factory=list)
    isolated_atoms: bool = True
    relax: RelaxSpec | None = None
    irradiation: IrradiationData | None = Field(None, description="the MoS2 study's irradiation-ready data")
    seed: int = 0


class RepulsionSpec(RepulsionSettings):
    """DP-Tab: the committee trained inside a repulsion blend (ZBL, or a table of the labeler's dimer
    curves, scanned as a stage of the campaign)."""

    distances_A: list[float] | None = Field(None, min_length=4, description="dimer_table: the scan's "
                                            "distances; default 0.6 Å (tblite's SCF fails for Mo–S at 0.5 Å) to 2 r_outer − r_inner + 0.2 Å in 0.05 Å steps")

    @model_validator(mode="after")
    def _table_reaches_the_fade(self) -> "RepulsionSpec":
        needed = 2 * self.r_outer_A - self.r_inner_A  # the blend fades the table out up to here
        if self.distances_A is not None and max(self.distances_A) < needed:
            raise ValueError(f"distances_A must reach 2 r_outer_A − r_inner_A = {needed:g} Å")
        return self

    def scan_distances_A(self) -> list[float]:
        if self.distances_A is not None:
            return sorted(self.distances_A)
        top = 2 * self.r_outer_A - self.r_inner_A + 0.2
        return [round(r, 4) for r in np.arange(0.6, top + 1e-9, 0.05)]

    def settings(self) -> RepulsionSettings:
        return RepulsionSettings(**self.model_dump(exclude={"distances_A"}))


class CommitteeSpec(TrainSettings):
    """The committee: its members' training settings (TrainSettings) and what only the loop needs."""

    members: int = Field(4, ge=2, description="4 as in the MoS2 study, 2 as in the Cr(1-x)S study")
    warm_start: bool = Field(True, description="start each member from its model of the previous iteration")
    repulsion: RepulsionSpec | None = Field(None, description="DP-Tab: train inside a repulsion blend")

    def train_settings(self, first_launch: dict | None = None) -> TrainSettings:
        """``first_launch``: this committee section as the store's first launch resolved it. Fields
        the spec leaves unset keep those values, so a release that changes a default does not
        retrain a campaign under way."""
        names = set(TrainSettings.model_fields) - {"repulsion"}
        fields = self.model_dump(include=names)
        kept = {name: first_launch[name] for name in names - self.model_fields_set if name in (first_launch or {})}
        return TrainSettings(**{**fields, **kept}, repulsion=self.repulsion.settings() if self.repulsion else None)


class ExploreSpec(ExploreSettings):
    """Exploration: every structure at every strain, one batched run per temperature (ExploreSettings)."""

    structures: list[StructureSource] = Field(..., min_length=1)
    temperatures_K: list[float] = Field(default_factory=lambda: [300.0, 600.0, 900.0, 1200.0], min_length=1)
    strains: list[float] = Field(default_factory=lambda: [-0.1, -0.05, 0.0, 0.05, 0.1], min_length=1)
    relax: bool = Field(True, description="also fixed-cell FIRE relaxations of the strained cells")

    def settings(self) -> ExploreSettings:
        return ExploreSettings(**self.model_dump(include=set(ExploreSettings.model_fields)))


class ActiveLearningSpec(RecipeSpec):
    """DP-GEN's loop: train a committee, explore, select by force deviation, label, repeat."""

    kind: Literal["active_learning"]
    initial: InitialData
    committee: CommitteeSpec = CommitteeSpec()
    explore: ExploreSpec
    trust_lo: float = Field(0.05, ge=0, description="eV/Å: frames below are accurate")
    trust_hi: float = Field(0.15, gt=0, description="eV/Å: frames at or above have failed")
    max_candidates: int = Field(50, ge=1, description="labels per iteration")
    min_separation: int = Field(20, ge=0, description="steps between two chosen snapshots of one run")
    label_quorum: float = Field(0.95, gt=0, le=1, description="fraction of an iteration's labels before training")
    converged_fraction: float = Field(0.99, gt=0, le=1)
    max_iterations: int = Field(10, ge=1)
    seed: int = 0
    batch_size: int = Field(4, ge=1, description="structures per labeling task")
    retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _window(self) -> "ActiveLearningSpec":
        if self.trust_lo >= self.trust_hi:
            raise ValueError(f"trust_lo ({self.trust_lo}) must be below trust_hi ({self.trust_hi})")
        return self




# -- the store tables -----------------------------------------------------------------------------
N_DEVIATION_BINS = len(HISTOGRAM_EDGES_EV_PER_A) - 1  # 0.02 eV/Å bins from 0 to 0.5, then everything above

AL_MODELS = columnar("al_models", "active_learning/models", "model", (
    ("key", "str"),  # the training work item's key
    ("iteration", "i4"),
    ("member", "i4"),
    ("seed", "i8"),
    ("sha256", "str"),
    ("path", "str"),  # relative to the store directory
    ("device", "str"),
    ("n_train", "i4"),
    ("n_validation", "i4"),
    ("epochs", "i4"),
    ("train_energy_rmse_meV_per_atom", "f8"),
    ("train_force_rmse_eV_per_A", "f8"),
    ("test_energy_rmse_meV_per_atom", "f8"),
    ("test_force_rmse_eV_per_A", "f8"),
    ("wall_s", "f8"),
), chunk_rows=1024)

AL_EXPLORED = structure_tables(
    "al_explored", "al_explored_atoms", "active_learning/explored", "explored", "explored_atom",
    atoms_group="active_learning/explored_atoms",
    frame_columns=(
        ("key", "str"),  # the exploration work item that made it
        ("iteration", "i4"),
        ("condition", "str"),
        ("trajectory", "str"),  # key + system: snapshots of one run share it
        ("step", "i4"),
        ("deviation_eV_per_A", "f8"),
    ))

AL_ITERATIONS = columnar("al_iterations", "active_learning/iterations", "iteration", (
    ("iteration", "i4"),
    ("n_explored", "i4"),
    ("n_accurate", "i4"),
    ("n_candidate", "i4"),
    ("n_failed", "i4"),
    ("accurate_fraction", "f8"),
    ("candidate_fraction", "f8"),
    ("failed_fraction", "f8"),
    ("deviation_histogram", "i8", ("deviation_bin",), (N_DEVIATION_BINS,)),
    ("n_training_frames", "i4"),
    ("n_selected", "i4"),
    ("n_labeled_before_next", "i4"),  # selected labels in when the iteration ended (quorum)
    ("model_sha256", "str"),  # comma-separated, member order
    ("test_energy_rmse_meV_per_atom", "f8"),  # committee mean
    ("test_force_rmse_eV_per_A", "f8"),
    ("train_s", "f8"),
    ("explore_s", "f8"),
    ("label_s", "f8"),
    ("converged", "bool"),
    ("finished_unix", "f8"),
), chunk_rows=256)

def candidate_source(iteration: int) -> str:
    return f"al-iter{iteration}"


def candidate_iteration(source: str) -> int:
    """The iteration that selected a frame; −1 for initial data."""
    prefix = candidate_source(0)[:-1]
    return int(source[len(prefix):]) if source.startswith(prefix) and source[len(prefix):].isdigit() else -1


# -- initial data ---------------------------------------------------------------------------------
def initial_structures(recipe: ActiveLearningSpec, base: list[Structure], explore: list[Structure]) -> list[Structure]:
    """The initial structures ``base`` (as the spec's sources give them) and what is cut from or
    added to them: defects and slabs of the first one, dimers and isolated atoms of every element
    of ``base`` and the exploration structures ``explore``, and the irradiation data."""
    init = recipe.initial
    host = base[0].to_atoms()
    rng = np.random.default_rng(init.seed)
    out = list(base)
    for d in init.defects:
        for _ in range(d.copies):
            atoms = vacancy(host, d.species, d.count, rng) if d.kind == "vacancy" else antisite(host, d.species,
                                                                                             d.replacement, rng)
            name = f"{d.kind}-{d.species}{d.count if d.kind == 'vacancy' else '-' + str(d.replacement)}"
            out.append(Structure.from_atoms(atoms, name))
    if init.slabs is not None:
        for shift in init.slabs.shifts:
            out.append(Structure.from_atoms(slab(host, init.slabs.axis, shift, init.slabs.vacuum_A),
                                            f"slab-axis{init.slabs.axis}-shift{shift:g}"))
    elements = campaign_elements(base, explore)
    if init.dimer_distances_A:
        out += [Structure.from_atoms(a, "dimer") for a in dimers(elements, init.dimer_distances_A)]
    if init.isolated_atoms:
        out += [Structure.from_atoms(a, "isolated-atom") for a in isolated_atoms(elements)]
    if init.irradiation is not None:
        out += irradiation_structures(init.irradiation, base, elements, init.seed)
    return out


def campaign_elements(base: list[Structure], explore: list[Structure]) -> tuple[str, ...]:
    """Every element of the initial structures ``base`` and of the exploration structures: the
    committee's element list."""
    numbers = set()
    for s in base + explore:
        numbers |= set(s.numbers.tolist())
    return tuple(chemical_symbols[z] for z in sorted(numbers))


def relax_frame_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes, *, labeler) -> dict:
    settings = labeler_settings_json(labeler)
    frames = [LabeledFrame(key=f"{item.key}:{snap['step']}", source=f"{item.payload.tag}-relax",
                           labeler=labeler.kind, labeler_settings=settings, numbers=item.payload.numbers,
                           positions_A=snap["positions_A"], cell_A=snap["cell_A"], pbc=item.payload.pbc,
                           energy_eV=snap["energy_eV"], forces_eV_per_A=snap["forces_eV_per_A"],
                           stress_eV_per_A3=snap["stress_eV_per_A3"])
              for item, o in zip(items, outcomes) for snap in o.value]
    return frame_blocks(frames, atom_start=store.length(LABELED.atoms))


def initial_stages(spec: CampaignSpec) -> list[Stage]:
    recipe, labeler = spec.recipe, spec.labeler
    base = load_structures(list(recipe.initial.structures))
    explore = load_structures(list(recipe.explore.structures))
    stages = [Stage("al-initial", label_items(initial_structures(recipe, base, explore), labeler), label_batch,
                    {"labeler": labeler}, functools.partial(labeled_frame_rows, labeler=labeler), recipe.batch_size,
                    recipe.retries)]
    relax = recipe.initial.relax
    if relax is not None:
        settings = relax.model_dump()
        items = [WorkItem(task_key("al-relax", VERSION, {"structure": s.canonical(), "relax": settings,
                                                        "labeler": labeler.model_dump(mode="json")}), s)
                 for s in base[:relax.count]]
        stages.append(Stage("al-relax", items, relax_batch,
                            {"labeler": labeler, "max_steps": relax.max_steps, "fmax_eV_per_A": relax.fmax_eV_per_A,
                             "keep_fraction": relax.keep_fraction},
                            functools.partial(relax_frame_rows, labeler=labeler), 1, recipe.retries))
    repulsion = recipe.committee.repulsion
    if repulsion is not None and repulsion.kind == "dimer_table":
        stages.append(repulsion_stage(spec, campaign_elements(base, explore)))
    return stages


# -- the repulsion table (DP-Tab) ----------------------------------------------------------------------
AL_REPULSION = columnar("al_repulsion", "active_learning/repulsion", "pair", (
    ("key", "str"),  # the scan's work item
    ("element_a", "str"),
    ("element_b", "str"),
    ("distances_A", "str"),  # JSON lists: the grid is the spec's
    ("energy_eV", "str"),  # the dimer's binding energy at each distance
), chunk_rows=64)


def repulsion_stage(spec: CampaignSpec, elements: tuple[str, ...]) -> Stage:
    """Dimer curves of every element pair with the campaign's labeler, for the blend's table.
    Below the labeler's usual closest distance on purpose: that is what the table is for."""
    recipe = spec.recipe
    distances = recipe.committee.repulsion.scan_distances_A()
    labeler = spec.labeler.model_copy(update={"min_distance_A": 0.0})
    settings = labeler.model_dump(mode="json")
    items = [WorkItem(task_key("al-dimer-scan", VERSION, {"pair": [a, b], "distances_A": distances,
                                                          "labeler": settings}), (a, b))
             for a, b in itertools.combinations_with_replacement(elements, 2)]
    return Stage("al-repulsion", items, dimer_scan_batch, {"distances_A": distances, "labeler": labeler},
                 functools.partial(dimer_curve_rows, distances_A=distances), 1, recipe.retries)


def dimer_curve_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes, *, distances_A) -> dict:
    return {AL_REPULSION.name: {
        "key": np.array([i.key for i in items], dtype=object),
        "element_a": np.array([i.payload[0] for i in items], dtype=object),
        "element_b": np.array([i.payload[1] for i in items], dtype=object),
        "distances_A": np.array([json.dumps(list(distances_A))] * len(items), dtype=object),
        "energy_eV": np.array([json.dumps(np.asarray(o.value).tolist()) for o in outcomes], dtype=object)}}


def read_repulsion_table(store: CampaignStore, stage: Stage, elements: tuple[str, ...]) -> PairTable:
    """The PairTable of the stage's dimer curves (one per element pair, in the table's pair order)."""
    rows = store.read(AL_REPULSION)
    curves = {str(k): (json.loads(str(r)), json.loads(str(e)))
              for k, r, e in zip(rows["key"], rows["distances_A"], rows["energy_eV"])}
    missing = [item.payload for item in stage.items if item.key not in curves]
    if missing:
        raise CampaignFailed(f"dimer scans of {missing} failed; `campaign status` shows why, a relaunch retries them")
    by_pair = {item.payload: curves[item.key] for item in stage.items}
    pairs = list(itertools.combinations_with_replacement(elements, 2))
    return PairTable(tuple(elements), np.array(by_pair[pairs[0]][0]), np.array([by_pair[p][1] for p in pairs]))


# -- training -------------------------------------------------------------------------------------
def settings_key(settings: TrainSettings | ExploreSettings) -> dict:
    """Settings as they enter task keys: a feature left unset (None) is absent, so keys of stores
    written before it existed stay what they were."""
    return settings.model_dump(mode="json", exclude_none=True)


def dataset(store: CampaignStore, iteration: int) -> list[LabeledFrame]:
    """Labeled frames for iteration ``iteration``: no candidates of this or later iterations."""
    frames = [f for f in iter_frames(store) if candidate_iteration(f.source) < iteration]
    return sorted(frames, key=lambda f: f.key)


def model_rows(store: CampaignStore) -> dict[str, dict]:
    table = store.read(AL_MODELS)
    return {str(k): {name: table[name][i] for name in table} for i, k in enumerate(table["key"])}


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_file_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes, *, iteration: int) -> dict:
    rows: dict[str, list] = {c.name: [] for c in AL_MODELS.columns}
    for item, o in zip(items, outcomes):
        member, job = item.payload
        data, report = o.value["model"], o.value["report"]
        sha = hashlib.sha256(data).hexdigest()
        relative = f"{MODELS_DIR}/iter-{iteration:03d}/member-{member}-{sha[:12]}.pt"
        write_atomically(store.directory / relative, data)
        values = {"key": item.key, "iteration": iteration, "member": member, "seed": job.seed, "sha256": sha,
                  "path": relative, "device": o.value["device"], "n_train": report["n_train"],
                  "n_validation": report["n_validation"], "epochs": report["epochs"],
                  "train_energy_rmse_meV_per_atom": report["train_energy_rmse_meV_per_atom"],
                  "train_force_rmse_eV_per_A": report["train_force_rmse_eV_per_A"],
                  "test_energy_rmse_meV_per_atom": report["validation_energy_rmse_meV_per_atom"],
                  "test_force_rmse_eV_per_A": report["validation_force_rmse_eV_per_A"], "wall_s": report["wall_s"]}
        for name, value in values.items():
            rows[name].append(value)
    return {"al_models": {k: np.array(v, dtype=object if isinstance(v[0], str) else None) for k, v in rows.items()}}


def member_seed(recipe: "ActiveLearningSpec", iteration: int, stage: str, index: int, legacy: bool = False) -> int:
    """The seed of one member (training) or one condition (exploration) of an iteration. Stores
    migrated from schema version 1 keep that version's rule, so their finished work keeps its keys."""
    if legacy:
        return recipe.seed * 10_000 + 100 * iteration + index
    return derive_seed(recipe.seed, iteration, stage, index)


def train_stage(spec: CampaignSpec, iteration: int, frames: list[LabeledFrame], elements: tuple[str, ...],
                previous: list[bytes] | None, gpu: bool, legacy_seeds: bool = False,
                table: PairTable | None = None, first_launch: dict | None = None) -> Stage:
    """``table``: the dimer table of a ``dimer_table`` repulsion (read_repulsion_table);
    ``first_launch``: the committee section of the store's first launch (CommitteeSpec.train_settings)."""
    recipe = spec.recipe
    settings = recipe.committee.train_settings(first_launch)
    table_id = hashlib.sha256(json.dumps(table.to_dict(), sort_keys=True).encode()).hexdigest() if table else None
    dataset_id = hashlib.sha256("\n".join(f.key for f in frames).encode()).hexdigest()
    training = [TrainingFrame(Structure(f.numbers, f.positions_A, f.cell_A, f.pbc, f.source), f.energy_eV,
                              f.forces_eV_per_A) for f in frames]
    items = []
    for member in range(recipe.committee.members):
        seed = member_seed(recipe, iteration, "train", member, legacy_seeds)
        warm = previous[member] if previous is not None and recipe.committee.warm_start else None
        inputs = {"iteration": iteration, "member": member, "seed": seed, "dataset": dataset_id,
                  "settings": settings_key(settings), "warm_start": hashlib.sha256(warm).hexdigest() if warm else None}
        if table_id:
            inputs["repulsion_table"] = table_id
        items.append(WorkItem(task_key("al-train", VERSION, inputs), (member, MemberJob(seed, training, warm))))
    return Stage(f"al-train-{iteration}", items, _train_items,
                 {"elements": elements, "settings": settings, "table": table},
                 functools.partial(model_file_rows, iteration=iteration), 1, recipe.retries,
                 {"GPU": 1} if gpu else None)


def _train_items(keys, payloads, elements, settings, table):
    return train_batch(keys, [job for _, job in payloads], elements, settings, table)


# -- exploration ----------------------------------------------------------------------------------
def explored_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes, *, iteration: int) -> dict:
    keys, conditions, trajectories, steps, deviations, structures = [], [], [], [], [], []
    for item, o in zip(items, outcomes):
        frames: ExploredFrames = o.value
        n = len(frames.structures)
        keys += [item.key] * n
        conditions += frames.condition
        trajectories += [f"{item.key[:16]}:{t}" for t in frames.trajectory]
        steps += list(frames.step)
        deviations += list(frames.deviation_eV_per_A)
        structures += frames.structures
    return structure_rows(
        AL_EXPLORED, numbers=[s.numbers for s in structures], positions_A=[s.positions_A for s in structures],
        cell_A=[s.cell_A for s in structures], pbc=[s.pbc for s in structures],
        atom_start=store.length(AL_EXPLORED.atoms),
        frame_values={"key": keys, "iteration": [iteration] * len(keys), "condition": conditions,
                      "trajectory": trajectories, "step": steps, "deviation_eV_per_A": deviations})


def explore_stage(spec: CampaignSpec, iteration: int, models: list[bytes], structures: list[Structure],
                  gpu: bool, legacy_seeds: bool = False) -> Stage:
    """``structures``: the recipe's exploration structures, loaded once per launch."""
    recipe = spec.recipe
    e = recipe.explore
    settings = e.settings()
    files = CommitteeFiles(tuple(models), recipe.committee.dtype, recipe.committee.device)
    # dtype and device travel with the committee; in the key they stand where they always did
    key_settings = {**settings_key(settings), "dtype": files.dtype, "device": files.device}
    temperatures: list[float | None] = list(e.temperatures_K) + ([None] if e.relax else [])
    shas = [hashlib.sha256(m).hexdigest() for m in models]
    items = []
    for t_index, temperature in enumerate(temperatures):
        seed = member_seed(recipe, iteration, "explore", t_index, legacy_seeds)
        job = ExploreJob(structures, tuple(e.strains), temperature, seed)
        key = task_key("al-explore", VERSION, {"iteration": iteration, "models": shas, "temperature_K": temperature,
                                               "structures": [s.canonical() for s in structures],
                                               "strains": list(e.strains), "settings": key_settings,
                                               "seed": seed})
        items.append(WorkItem(key, job))
    return Stage(f"al-explore-{iteration}", items, explore_batch,
                 {"committee_files": files, "settings": settings},
                 functools.partial(explored_rows, iteration=iteration), 1, recipe.retries,
                 {"GPU": 1} if gpu else None)


def read_explored(store: CampaignStore, keys: set[str]) -> tuple[dict, list[Structure]]:
    rows = np.array([i for i, k in enumerate(store.read(AL_EXPLORED.frames, ["key"])["key"]) if str(k) in keys],
                    dtype=np.int64)
    block = store.read_structures(AL_EXPLORED, rows)
    picked = block.frames
    structures = [Structure(block.atom_values("numbers", i).astype(np.int64), block.atom_values("positions_A", i),
                            picked["cell_A"][i], picked["pbc"][i]) for i in range(len(block))]
    # one order whatever the arrival order of the exploration tasks
    order = sorted(range(len(rows)), key=lambda i: (str(picked["trajectory"][i]), int(picked["step"][i])))
    return {name: values[order] for name, values in picked.items()}, [structures[i] for i in order]


# -- the loop -------------------------------------------------------------------------------------
def run_active_learning(context: RunContext, initial: Sequence[Stage]) -> None:
    """Run (or resume) the loop; ``initial`` are the stages of initial_stages(spec)."""
    spec, store, run, gpu = context.spec, context.store, context.run, context.gpu
    recipe: ActiveLearningSpec = spec.recipe
    legacy = store.attrs.get("migrated_from") == 1
    launches = store.attrs.get("launches", [])
    first_launch = launches[0].get("spec", {}).get("recipe", {}).get("committee") if launches else None
    for stage in initial:
        run(stage)
    explore_structures = load_structures(list(recipe.explore.structures))
    elements = campaign_elements(load_structures(list(recipe.initial.structures)), explore_structures)
    scans = [stage for stage in initial if stage.name == "al-repulsion"]
    table = read_repulsion_table(store, scans[0], elements) if scans else None
    recorded = set(store.read(AL_ITERATIONS, ["iteration"])["iteration"].tolist())
    stragglers: list[StageRun] = []
    previous: list[bytes] | None = None
    for k in range(recipe.max_iterations):
        t0 = time.monotonic()
        frames = dataset(store, k)
        stage = train_stage(spec, k, frames, elements, previous, gpu, legacy, table, first_launch)
        run(stage, 1.0, stragglers)
        rows = model_rows(store)
        missing = [item.key for item in stage.items if item.key not in rows]
        if missing:
            raise CampaignFailed(f"iteration {k}: {len(missing)} committee member(s) failed to train; "
                                 "`campaign status` shows why, a relaunch retries them")
        members = [rows[item.key] for item in stage.items]
        models = [(store.directory / str(m["path"])).read_bytes() for m in members]
        t1 = time.monotonic()
        stage = explore_stage(spec, k, models, explore_structures, gpu, legacy)
        run(stage, 1.0, stragglers)
        explored, structures = read_explored(store, {item.key for item in stage.items} & done_keys(store))
        t2 = time.monotonic()
        status = classify(explored["deviation_eV_per_A"], recipe.trust_lo, recipe.trust_hi)
        n = max(1, len(status))
        counts = {c: int(np.sum(status == c)) for c in (ACCURATE, CANDIDATE, FAILED)}
        accurate = counts[ACCURATE] / n
        converged = accurate >= recipe.converged_fraction
        chosen: list[int] = []
        if not converged:
            candidates = np.flatnonzero(status == CANDIDATE)
            lead = load_potential(models[0])
            prints = structure_fingerprints(lead, [structures[i] for i in candidates])
            picks = select_candidates(prints, explored["deviation_eV_per_A"][candidates],
                                      [str(t) for t in explored["trajectory"][candidates]], explored["step"][candidates],
                                      recipe.max_candidates, recipe.min_separation)
            chosen = [int(candidates[p]) for p in picks]
        n_in_time = 0
        if chosen:
            tagged = [dataclasses.replace(structures[i], tag=candidate_source(k)) for i in chosen]
            label = Stage(f"al-label-{k}", label_items(tagged, spec.labeler), label_batch, {"labeler": spec.labeler},
                          functools.partial(labeled_frame_rows, labeler=spec.labeler), recipe.batch_size,
                          recipe.retries)
            label_run = run(label, recipe.label_quorum, stragglers)
            stragglers.append(label_run)
            n_in_time = label_run.report.skipped + label_run.n_finished
        t3 = time.monotonic()
        if k not in recorded:
            hist = deviation_histogram(explored["deviation_eV_per_A"])
            store.append({AL_ITERATIONS.name: {
                "iteration": np.array([k], np.int32), "n_explored": np.array([len(status)], np.int32),
                "n_accurate": np.array([counts[ACCURATE]], np.int32),
                "n_candidate": np.array([counts[CANDIDATE]], np.int32),
                "n_failed": np.array([counts[FAILED]], np.int32),
                "accurate_fraction": np.array([accurate]),
                "candidate_fraction": np.array([counts[CANDIDATE] / n]),
                "failed_fraction": np.array([counts[FAILED] / n]), "deviation_histogram": hist[None],
                "n_training_frames": np.array([len(frames)], np.int32), "n_selected": np.array([len(chosen)], np.int32),
                "n_labeled_before_next": np.array([n_in_time], np.int32),
                "model_sha256": np.array([",".join(str(m["sha256"]) for m in members)], dtype=object),
                "test_energy_rmse_meV_per_atom": np.array([np.mean([m["test_energy_rmse_meV_per_atom"] for m in members])]),
                "test_force_rmse_eV_per_A": np.array([np.mean([m["test_force_rmse_eV_per_A"] for m in members])]),
                "train_s": np.array([t1 - t0]), "explore_s": np.array([t2 - t1]), "label_s": np.array([t3 - t2]),
                "converged": np.array([converged]), "finished_unix": np.array([time.time()])}})
        context.say(f"iteration {k}: {len(frames)} training frames, accurate {accurate:.3f} of {len(status)} explored, "
            f"{len(chosen)} selected" + (" - converged" if converged else ""))
        previous = models
        if converged:
            break
    for r in stragglers:  # late labels are kept: the next launch's first dataset has them
        r.wait(1.0, health_check=context.health_check)


# -- status and report ----------------------------------------------------------------------------
ITERATION_COLUMNS = ("iteration", "n_training_frames", "test_energy_rmse_meV_per_atom", "test_force_rmse_eV_per_A",
                     "n_explored", "accurate_fraction", "candidate_fraction", "failed_fraction", "n_selected",
                     "n_labeled_before_next", "train_s", "explore_s", "label_s", "converged")


def iteration_table(store: CampaignStore) -> list[dict]:
    """One row per finished iteration."""
    table = store.read(AL_ITERATIONS, ITERATION_COLUMNS)
    return [{c: table[c][i].item() for c in ITERATION_COLUMNS} for i in range(store.length(AL_ITERATIONS))]


def iteration_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", f"{'iter':>4}{'frames':>8}{'E meV/at':>10}{'F eV/Å':>8}{'explored':>10}{'accurate':>10}"
                 f"{'cand.':>7}{'failed':>8}{'picked':>8}{'in time':>8}{'train s':>9}{'expl. s':>8}{'label s':>8}"]
    for r in rows:
        lines.append(f"{r['iteration']:>4}{r['n_training_frames']:>8}{r['test_energy_rmse_meV_per_atom']:>10.1f}"
                     f"{r['test_force_rmse_eV_per_A']:>8.3f}{r['n_explored']:>10}{r['accurate_fraction']:>10.3f}"
                     f"{r['candidate_fraction']:>7.3f}{r['failed_fraction']:>8.3f}{r['n_selected']:>8}"
                     f"{r['n_labeled_before_next']:>8}{r['train_s']:>9.1f}{r['explore_s']:>8.1f}{r['label_s']:>8.1f}"
                     + ("  converged" if r["converged"] else ""))
    return lines


def write_figures(store: CampaignStore, out_dir: Path) -> list[Path]:
    """deviation_histograms.png  force-deviation histogram per iteration, trust window marked
    convergence.png           accurate / candidate / failed fractions and the committee's held-out
                              RMSE per iteration, against iterations and hours since the first launch
    parity_energy.png         committee mean vs labeler, energy per atom, every labeled frame
    parity_forces.png         committee mean vs labeler, force components"""
    from campaign.report import pyplot

    plt = pyplot()
    it = store.read(AL_ITERATIONS)
    if len(it["iteration"]) == 0:
        raise ValueError(f"{store.directory} has no finished active-learning iteration to report")
    spec = store.attrs.get("spec", {}).get("recipe", {})
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    centres = 0.5 * (HISTOGRAM_EDGES_EV_PER_A[:-2] + HISTOGRAM_EDGES_EV_PER_A[1:-1])
    width = HISTOGRAM_EDGES_EV_PER_A[1] - HISTOGRAM_EDGES_EV_PER_A[0]
    for k, hist in zip(it["iteration"], it["deviation_histogram"]):
        ax.step(np.append(centres, centres[-1] + width), hist[:N_DEVIATION_BINS] / max(1, hist.sum()),
                where="mid", label=f"iteration {k}")
    for name in ("trust_lo", "trust_hi"):
        if name in spec:
            ax.axvline(spec[name], color="grey", linestyle="--")
    ax.set(xlabel="max force deviation (eV/Å), last bin: above 0.5", ylabel="fraction of explored frames")
    ax.legend()
    written.append(save_figure(fig, out_dir / "deviation_histograms.png"))

    written.append(_convergence(store, it, spec, out_dir, plt))

    written += _parity(store, it, out_dir, plt)
    return written


def _convergence(store: CampaignStore, it: dict, spec: dict, out_dir: Path, plt) -> Path:
    started = min((launch["started_unix"] for launch in store.attrs.get("launches", [])), default=np.nan)
    hours = (np.asarray(it["finished_unix"]) - started) / 3600
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6.5), sharex=True)
    for name in ("accurate", "candidate", "failed"):
        top.plot(it["iteration"], it[f"{name}_fraction"], marker="o", label=name)
    if "converged_fraction" in spec:
        top.axhline(spec["converged_fraction"], color="grey", linestyle="--", label="converged_fraction")
    window = f" ({spec['trust_lo']:g}-{spec['trust_hi']:g} eV/Å)" if "trust_lo" in spec and "trust_hi" in spec else ""
    top.set(ylabel=f"fraction of explored frames{window}", ylim=(0, 1.02))
    top.legend(fontsize="small")
    # hours since the first launch, on top: what a user waits for each point
    hours_axis = top.secondary_xaxis("top", functions=(
        lambda x: np.interp(x, it["iteration"], hours), lambda h: np.interp(h, hours, it["iteration"])))
    hours_axis.set_xlabel("hours since the first launch")
    bottom.plot(it["iteration"], it["test_force_rmse_eV_per_A"], marker="o", color="C3", label="forces")
    bottom.set(xlabel="iteration", ylabel="held-out force RMSE (eV/Å)")
    energy = bottom.twinx()
    energy.plot(it["iteration"], it["test_energy_rmse_meV_per_atom"], marker="s", color="C0", label="energy")
    energy.set_ylabel("held-out energy RMSE (meV/atom)")
    bottom.legend(handles=bottom.lines + energy.lines, fontsize="small")
    bottom.set_title("mean over members of each member's validation split", fontsize="small")
    return save_figure(fig, out_dir / "convergence.png")


def _parity(store: CampaignStore, it: dict, out_dir: Path, plt) -> list[Path]:
    """The last iteration's committee on every labeled frame."""
    from campaign.export import frame_to_atoms
    from tasks.nnp.batch import AtomsBatch
    from tasks.nnp.committee import Committee

    models = store.read(AL_MODELS)
    last = models["iteration"] == models["iteration"].max()
    committee = Committee([load_potential(store.directory / str(p)) for p in models["path"][last]])
    e_ref, e_model, f_ref, f_model = [], [], [], []
    frames = iter_frames(store)
    # many frames per evaluation: the batched engine, in chunks that keep memory bounded
    while chunk := list(itertools.islice(frames, 256)):
        batch = AtomsBatch.from_atoms([frame_to_atoms(f) for f in chunk])
        out = committee(batch)
        n_atoms = batch.n_atoms
        e_ref.append(np.array([f.energy_eV for f in chunk]) / n_atoms)
        e_model.append(out["energy"].numpy() / n_atoms)
        f_ref += [f.forces_eV_per_A.reshape(-1) for f in chunk]
        f_model.append(out["forces"].numpy().reshape(-1))
    e_ref, e_model = np.concatenate(e_ref), np.concatenate(e_model)
    written = []
    for name, ref, pred, unit in (("energy", e_ref, e_model, "eV/atom"),
                                  ("forces", np.concatenate(f_ref), np.concatenate(f_model), "eV/Å")):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(ref, pred, s=4)
        lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], color="grey")
        rmse = float(np.sqrt(np.mean((ref - pred) ** 2)))
        ax.set(xlabel=f"labeler {name} ({unit})", ylabel=f"committee {name} ({unit})",
               title=f"iteration {int(it['iteration'][-1])}: RMSE {rmse:.3g} {unit}")
        written.append(save_figure(fig, out_dir / f"parity_{name}.png"))
    return written


@register
class ActiveLearningRecipe(Recipe):
    kind = "active_learning"
    spec = ActiveLearningSpec
    tables = (AL_MODELS, *AL_EXPLORED.tables, AL_ITERATIONS, AL_REPULSION)

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return initial_stages(spec)

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        run_active_learning(context, stages)
        return []

    def cells_to_label(self, spec: CampaignSpec, stages: Sequence[Stage]) -> list[Structure]:
        """The planned cells, and the strained exploration cells whose snapshots become candidates."""
        explore = spec.recipe.explore
        cells = [Structure.from_atoms(strained(s, strain), s.tag) for s in load_structures(list(explore.structures))
                 for strain in explore.strains]
        return super().cells_to_label(spec, stages) + cells

    def status(self, store: CampaignStore) -> dict:
        return {"iterations": iteration_table(store)}

    def format_status(self, status: dict) -> list[str]:
        return iteration_lines(status.get("iterations", []))

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        return write_figures(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.active_learning_panels import PANELS

        return list(PANELS)
