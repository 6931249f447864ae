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
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase.data import chemical_symbols

from campaign.keys import task_key
from campaign.recipes.label import label_items, labeled_frame_rows
from campaign.recipes.structures import load_structures
from campaign.runner import StageRun, record_plan
from campaign.spec import ActiveLearningRecipe, CampaignSpec
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.frames import LabeledFrame, frame_blocks, iter_frames
from storage.ledger import done_keys
from storage.schema import AL_MODELS
from tasks.active.explore import CommitteeFiles, ExploredFrames, ExploreJob, ExploreSettings, explore_batch
from tasks.active.initial import antisite, dimers, isolated_atoms, relax_batch, slab, vacancy
from tasks.active.select import (ACCURATE, CANDIDATE, FAILED, classify, deviation_histogram, select_candidates,
                                 structure_fingerprints)
from tasks.active.training import MemberJob, TrainingFrame, train_batch
from tasks.labeling import label_batch, labeler_settings_json
from tasks.nnp.model import BehlerParrinello
from tasks.nnp.train import TrainSettings
from tasks.structures import Structure

VERSION = 1
MODELS_DIR = "models"


def candidate_source(iteration: int) -> str:
    return f"al-iter{iteration}"


def candidate_iteration(source: str) -> int:
    """The iteration that selected a frame; −1 for initial data."""
    prefix = candidate_source(0)[:-1]
    return int(source[len(prefix):]) if source.startswith(prefix) and source[len(prefix):].isdigit() else -1


# -- initial data ---------------------------------------------------------------------------------
def initial_structures(recipe: ActiveLearningRecipe, base: list[Structure], explore: list[Structure]) -> list[Structure]:
    """The initial structures ``base`` (as the spec's sources give them) and what is cut from or
    added to them: defects and slabs of the first one, dimers and isolated atoms of every element
    of ``base`` and the exploration structures ``explore``."""
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
    return frame_blocks(frames, atom_start=store.length("atoms"))


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
                                                        "labeler": dataclasses.asdict(labeler)}), s)
                 for s in base[:relax.count]]
        stages.append(Stage("al-relax", items, relax_batch,
                            {"labeler": labeler, "max_steps": relax.max_steps, "fmax_eV_per_A": relax.fmax_eV_per_A,
                             "keep_fraction": relax.keep_fraction},
                            functools.partial(relax_frame_rows, labeler=labeler), 1, recipe.retries))
    return stages


# -- training -------------------------------------------------------------------------------------
def train_settings(recipe: ActiveLearningRecipe) -> TrainSettings:
    c = recipe.committee
    return TrainSettings(hidden=tuple(c.hidden), radial_cutoff_A=c.radial_cutoff_A, angular_cutoff_A=c.angular_cutoff_A,
                         max_epochs=c.max_epochs, frames_per_step=c.frames_per_step, learning_rate=c.learning_rate,
                         lr_decay_per_epoch=c.lr_decay_per_epoch, energy_weight=c.energy_weight,
                         force_weight=c.force_weight, patience_epochs=c.patience_epochs, dtype=c.dtype,
                         device=c.device)


def dataset(store: CampaignStore, iteration: int) -> list[LabeledFrame]:
    """Labeled frames for iteration ``iteration``: no candidates of this or later iterations."""
    frames = [f for f in iter_frames(store) if candidate_iteration(f.source) < iteration]
    return sorted(frames, key=lambda f: f.key)


def model_rows(store: CampaignStore) -> dict[str, dict]:
    table = store.read("al_models")
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


def train_stage(spec: CampaignSpec, iteration: int, frames: list[LabeledFrame], elements: tuple[str, ...],
                previous: list[bytes] | None, gpu: bool) -> Stage:
    recipe = spec.recipe
    settings = train_settings(recipe)
    dataset_id = hashlib.sha256("\n".join(f.key for f in frames).encode()).hexdigest()
    training = [TrainingFrame(Structure(f.numbers, f.positions_A, f.cell_A, f.pbc, f.source), f.energy_eV,
                              f.forces_eV_per_A) for f in frames]
    items = []
    for member in range(recipe.committee.members):
        seed = recipe.seed * 10_000 + 100 * iteration + member
        warm = previous[member] if previous is not None and recipe.committee.warm_start else None
        key = task_key("al-train", VERSION, {"iteration": iteration, "member": member, "seed": seed,
                                             "dataset": dataset_id, "settings": dataclasses.asdict(settings),
                                             "warm_start": hashlib.sha256(warm).hexdigest() if warm else None})
        items.append(WorkItem(key, (member, MemberJob(seed, training, warm))))
    return Stage(f"al-train-{iteration}", items, _train_items, {"elements": elements, "settings": settings},
                 functools.partial(model_file_rows, iteration=iteration), 1, recipe.retries,
                 {"GPU": 1} if gpu else None)


def _train_items(keys, payloads, elements, settings):
    return train_batch(keys, [job for _, job in payloads], elements, settings)


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
    n_atoms = np.array([s.n_atoms for s in structures], dtype=np.int32)
    start = store.length("al_explored_atoms")
    starts = start + np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64)
    obj = functools.partial(np.array, dtype=object)
    return {
        "al_explored": {"key": obj(keys), "iteration": np.full(len(keys), iteration, np.int32),
                        "condition": obj(conditions), "trajectory": obj(trajectories),
                        "step": np.array(steps, np.int32), "deviation_eV_per_A": np.array(deviations, np.float64),
                        "cell_A": np.array([s.cell_A for s in structures]).reshape(-1, 3, 3),
                        "pbc": np.array([s.pbc for s in structures]).reshape(-1, 3), "n_atoms": n_atoms,
                        "atom_start": starts},
        "al_explored_atoms": {"numbers": np.concatenate([s.numbers for s in structures]).astype(np.int16),
                              "positions_A": np.concatenate([s.positions_A for s in structures])},
    }


def explore_stage(spec: CampaignSpec, iteration: int, models: list[bytes], structures: list[Structure],
                  gpu: bool) -> Stage:
    """``structures``: the recipe's exploration structures, loaded once per launch."""
    recipe = spec.recipe
    e = recipe.explore
    settings = ExploreSettings(steps=e.steps, frame_every=e.frame_every, timestep_fs=e.timestep_fs,
                               friction_per_fs=e.friction_per_fs, relax_steps=e.relax_steps,
                               dtype=recipe.committee.dtype, device=recipe.committee.device)
    temperatures: list[float | None] = list(e.temperatures_K) + ([None] if e.relax else [])
    shas = [hashlib.sha256(m).hexdigest() for m in models]
    items = []
    for t_index, temperature in enumerate(temperatures):
        seed = recipe.seed * 10_000 + 100 * iteration + t_index
        job = ExploreJob(structures, tuple(e.strains), temperature, seed)
        key = task_key("al-explore", VERSION, {"iteration": iteration, "models": shas, "temperature_K": temperature,
                                               "structures": [s.canonical() for s in structures],
                                               "strains": list(e.strains), "settings": dataclasses.asdict(settings),
                                               "seed": seed})
        items.append(WorkItem(key, job))
    return Stage(f"al-explore-{iteration}", items, explore_batch,
                 {"committee_files": CommitteeFiles(tuple(models)), "settings": settings},
                 functools.partial(explored_rows, iteration=iteration), 1, recipe.retries,
                 {"GPU": 1} if gpu else None)


def read_explored(store: CampaignStore, keys: set[str]) -> tuple[dict, list[Structure]]:
    table = store.read("al_explored")
    rows = np.array([i for i, k in enumerate(table["key"]) if str(k) in keys], dtype=np.int64)
    picked = {name: values[rows] for name, values in table.items()}
    first = int(picked["atom_start"].min()) if len(rows) else 0
    last = int((picked["atom_start"] + picked["n_atoms"]).max()) if len(rows) else 0
    atoms = store.read("al_explored_atoms", rows=slice(first, last))
    structures = [Structure(atoms["numbers"][s - first:s - first + n].astype(np.int64),
                            atoms["positions_A"][s - first:s - first + n], picked["cell_A"][i], picked["pbc"][i])
                  for i, (s, n) in enumerate(zip(picked["atom_start"], picked["n_atoms"]))]
    # one order whatever the arrival order of the exploration tasks
    order = sorted(range(len(rows)), key=lambda i: (str(picked["trajectory"][i]), int(picked["step"][i])))
    return {name: values[order] for name, values in picked.items()}, [structures[i] for i in order]


# -- the loop -------------------------------------------------------------------------------------
def run_active_learning(spec: CampaignSpec, store: CampaignStore, client, launch_index: int,
                        initial: Sequence[Stage], *, progress: bool = True,
                        health_check: Callable[[], None] | None = None, gpu: bool = False,
                        say: Callable[[str], None] = print) -> None:
    """Run (or resume) the loop; ``initial`` are the stages of initial_stages(spec)."""
    recipe: ActiveLearningRecipe = spec.recipe

    def run(stage: Stage, quorum: float = 1.0, stragglers: Sequence[StageRun] = ()) -> StageRun:
        record_plan(store, [stage])
        r = StageRun(client, store, stage, launch_index, progress=progress)
        r.wait(quorum, health_check=health_check, also=stragglers)
        return r

    for stage in initial:
        run(stage)
    explore_structures = load_structures(list(recipe.explore.structures))
    elements = campaign_elements(load_structures(list(recipe.initial.structures)), explore_structures)
    recorded = set(store.read("al_iterations", ["iteration"])["iteration"].tolist())
    stragglers: list[StageRun] = []
    previous: list[bytes] | None = None
    for k in range(recipe.max_iterations):
        t0 = time.monotonic()
        frames = dataset(store, k)
        stage = train_stage(spec, k, frames, elements, previous, gpu)
        run(stage, 1.0, stragglers)
        rows = model_rows(store)
        missing = [item.key for item in stage.items if item.key not in rows]
        if missing:
            raise RuntimeError(f"iteration {k}: {len(missing)} committee member(s) failed to train; "
                               f"see `campaign status` for the errors")
        members = [rows[item.key] for item in stage.items]
        models = [(store.directory / str(m["path"])).read_bytes() for m in members]
        t1 = time.monotonic()
        stage = explore_stage(spec, k, models, explore_structures, gpu)
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
            lead = BehlerParrinello.from_bytes(models[0])
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
            store.append({"al_iterations": {
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
        say(f"iteration {k}: {len(frames)} training frames, accurate {accurate:.3f} of {len(status)} explored, "
            f"{len(chosen)} selected" + (" - converged" if converged else ""))
        previous = models
        if converged:
            break
    for r in stragglers:  # late labels are kept: the next launch's first dataset has them
        r.wait(1.0, health_check=health_check)
