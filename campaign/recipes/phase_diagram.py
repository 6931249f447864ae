"""The ``phase_diagram`` recipe: the Cr(1−x)S study's path from a cluster expansion to the hull.

Stages, each keyed and resumable (a relaunch skips every finished item and recomputes the fits,
which are deterministic given the store):
  1. CE-guided sampling: SQS cells at a grid of compositions, relaxed by the labeler (the paths,
     thinned, become labeled frames); a cluster expansion fitted with cross-validation; rounds
     that add, as ATAT's maps does, the predicted ground states not yet computed, then the cells
     that most reduce the fit's uncertainty per cost, until the CV score is below its target and
     no predicted ground state is uncomputed (or ``max_rounds``).
  2. Enumeration: every symmetrically distinct cell up to ``max_sites`` at the target
     compositions, one task per (cell size, supercell matrix) group, stored compactly.
  3. Ranking: every cell's energy by the potential and by the CE; per composition the ``top_k``
     lowest relaxed with the potential, ``check_per_composition`` of them, spread across that
     ranking, relaxed with the labeler; Spearman ρ and RMSE per composition.
  4. Hull: formation energies of every labeler-relaxed structure against the two references,
     energies above the hull, the vertices.
"""

from __future__ import annotations

import functools
import json
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from ase.formula import Formula
from pydantic import Field, field_validator, model_validator

from campaign.errors import SpecError
from campaign.keys import derive_seed, task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.phase_tables import (PHASE_AGREEMENT, PHASE_CE_ROUNDS, PHASE_CELL_SITES, PHASE_CELLS,
                                           PHASE_COMPUTED, PHASE_HULL, PHASE_IDEAL, PHASE_RANKED, TABLES, cell_rows,
                                           computed_rows, ranked_rows)
from campaign.recipes.potential_source import PotentialSource, potential_files
from campaign.spec import CampaignSpec, RecipeSpec, StructureSource
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.phase.enumeration import (EnumerationGroup, costliest_first, enumerate_batch, enumerate_cells,
                                     enumeration_groups, snf_labelings)
from tasks.phase.lattice import Lattice, PhaseCell
from tasks.phase.ranking import CellChunk, ClusterExpansionModel, line_at, rank_batch
from tasks.phase.relax import RelaxSettings, labeler_relax_batch, potential_relax_batch
from tasks.settings import StrictModel
from tasks.structures import Structure

VERSION = 1


# -- the spec -------------------------------------------------------------------------------------
class LatticeSpec(StrictModel):
    """NiAs M(1−x)A: the metal sites hold the metal or a vacancy, the anion sites are fixed."""

    metal: str = "Cr"
    anion: str = "S"
    a_A: float = Field(3.45, gt=0)
    c_A: float = Field(5.75, gt=0)

    def build(self) -> Lattice:
        return Lattice(self.metal, self.anion, self.a_A, self.c_A)


class SamplingSpec(StrictModel):
    """Stage 1: SQS cells, the cluster expansion and its rounds."""

    cutoffs_A: list[float] = Field([6.0, 4.0], min_length=1, description="icet cutoffs: pairs, triplets, …")
    sqs_fractions: list[float] = Field([0.0, 0.25, 0.5], min_length=2, description="vacancy fractions x of "
                                       "the first SQS cells (the references' compositions among them)")
    sqs_max_cells: int = Field(4, ge=1, description="primitive cells (4 sites each) per SQS cell at most")
    sqs_steps: int = Field(2000, ge=1, description="icet's Monte Carlo steps per SQS cell")
    candidates_max_cells: int = Field(4, ge=1, description="the rounds choose among every cell up to this size")
    per_round: int = Field(2, ge=1)
    max_rounds: int = Field(4, ge=0)
    cv_target_eV_per_site: float = Field(0.005, gt=0)
    fit_method: str = "least-squares"
    cv_splits: int = Field(5, ge=2)

    @field_validator("sqs_fractions")
    @classmethod
    def _distinct(cls, values: list[float]) -> list[float]:
        if len(set(values)) < 2 or any(not 0 <= v < 1 for v in values):
            raise ValueError(f"give at least two distinct vacancy fractions in [0, 1), got {values}")
        return values


class EnumerationSpec(StrictModel):
    """Stage 2: every distinct cell up to ``max_sites`` (vacancies and anions counted) at these x."""

    max_sites: int = Field(16, ge=4)
    vacancy_fractions: list[float] = Field(..., min_length=1)
    hnfs_per_task: int = Field(16, ge=1, description="supercells of one size and Smith form per task (each task "
                               "lists its Smith form's labelings once, the costly part)")

    @field_validator("vacancy_fractions")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0 <= v < 1]
        if bad:
            raise ValueError(f"vacancy fractions must lie in [0, 1): {bad}")
        return sorted(set(values))


class RankingSpec(StrictModel):
    """Stage 3: energies of every cell, relaxations of the best, checks with the labeler."""

    cells_per_task: int = Field(2000, ge=1)
    max_atoms_per_pass: int = Field(16384, ge=1, description="atoms in one forward pass of the potential")
    top_k: int = Field(300, ge=1, description="per composition, relaxed with the potential")
    check_per_composition: int = Field(40, ge=0, description="per composition, of the top_k, relaxed with "
                                       "the labeler (spread across the ranking)")
    relax: RelaxSettings = RelaxSettings()
    relax_per_task: int = Field(4, ge=1)


class HullSpec(StrictModel):
    references: tuple[str, str] = Field(("CrS", "CrS2"), description="formulas whose lowest labeler energies "
                                        "are the zero of the formation energy")
    structures: list[StructureSource] = Field(default_factory=list, description="more candidates for the hull "
                                              "(e.g. annealing minima of another recipe): relaxed by the labeler")


class PhaseDiagramSpec(RecipeSpec):
    kind: Literal["phase_diagram"] = "phase_diagram"
    lattice: LatticeSpec = LatticeSpec()
    sampling: SamplingSpec = SamplingSpec()
    labeler_relax: RelaxSettings = RelaxSettings()
    labeler_relax_per_task: int = Field(1, ge=1)
    enumeration: EnumerationSpec
    potential: PotentialSource
    ranking: RankingSpec = RankingSpec()
    hull: HullSpec = HullSpec()
    seed: int = 0
    retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _sites(self) -> "PhaseDiagramSpec":
        if self.enumeration.max_sites % 4:
            raise ValueError(f"enumeration.max_sites ({self.enumeration.max_sites}) must be a multiple of the "
                             "primitive cell's 4 sites")
        return self


# -- compositions ---------------------------------------------------------------------------------
def reference_fraction(formula: str, lattice: Lattice) -> float:
    """x of a reference formula M_a A_b on the lattice: 1 − a/b."""
    try:
        counts = Formula(formula).count()
    except Exception as error:  # noqa: BLE001 - ASE's parser raises several kinds
        raise SpecError(f"recipe.hull.references: {formula!r} is not a formula ({error})") from None
    if set(counts) - {lattice.metal, lattice.anion} or lattice.anion not in counts:
        raise SpecError(f"recipe.hull.references: {formula!r} is not a {lattice.metal}–{lattice.anion} "
                        "compound of the lattice")
    x = 1 - Fraction(counts.get(lattice.metal, 0), counts[lattice.anion])
    if not 0 <= x <= 1:
        raise SpecError(f"recipe.hull.references: {formula!r} has more {lattice.metal} than the lattice holds")
    return float(x)


def same_fraction(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


# -- stage 1: SQS cells, the cluster expansion and its rounds ----------------------------------------
def labeler_stage(name: str, spec: CampaignSpec, cells: Sequence[PhaseCell]) -> Stage:
    recipe: PhaseDiagramSpec = spec.recipe
    settings = recipe.labeler_relax.model_dump(mode="json")
    labeler = spec.labeler.model_dump(mode="json")
    items: dict[str, WorkItem] = {}
    for cell in cells:
        key = task_key("phase-labeler-relax", VERSION, {"cell": cell.canonical(), "relax": settings,
                                                         "labeler": labeler})
        items.setdefault(key, WorkItem(key, cell))
    return Stage(name, list(items.values()), _labeler_relax,
                 {"labeler": spec.labeler, "settings": recipe.labeler_relax},
                 functools.partial(computed_rows, stage=name, method="labeler", labeler=spec.labeler),
                 recipe.labeler_relax_per_task, recipe.retries)


def _labeler_relax(keys, cells, labeler, settings):
    return labeler_relax_batch(keys, [c.structure() for c in cells], labeler, settings)


def sqs_stage(spec: CampaignSpec) -> Stage:
    from tasks.phase.cluster_expansion import sqs_cells

    recipe: PhaseDiagramSpec = spec.recipe
    lattice = recipe.lattice.build()
    space = lattice.cluster_space(recipe.sampling.cutoffs_A)
    try:
        cells = sqs_cells(space, recipe.sampling.sqs_fractions, recipe.sampling.sqs_max_cells,
                          recipe.sampling.sqs_steps, derive_seed(recipe.seed, "sqs"))
    except ValueError as error:
        raise SpecError(f"recipe.sampling: {error}") from None
    return labeler_stage("phase-sqs", spec, [PhaseCell(f"sqs-x{x:.4f}", atoms, x)
                                              for x, atoms in zip(recipe.sampling.sqs_fractions, cells)])


def labeler_data(store: CampaignStore, up_to_round: int) -> tuple[list[str], list, np.ndarray]:
    """The data of the cluster expansion's fit in round ``up_to_round``: the labeler-relaxed SQS
    cells and the choices of rounds 1 … ``up_to_round`` (so that a relaunch refits every round on
    what it had, and makes the same choices; the ranking's checks never enter), sorted by key so
    that the fit does not depend on the order results arrived in. Keys, ideal cells, eV per site."""
    if not store.length(PHASE_IDEAL.frames):
        return [], [], np.zeros(0)

    def in_fit(stage: str) -> bool:
        prefix = "phase-ce-round"
        return stage == "phase-sqs" or (stage.startswith(prefix) and int(stage[len(prefix):]) <= up_to_round)

    ideal = read_structures(store, PHASE_IDEAL)
    computed = store.read(PHASE_COMPUTED.frames, ["key", "stage", "energy_eV"])
    energy = {str(k): float(e) for k, s, e in zip(computed["key"], computed["stage"], computed["energy_eV"])
              if in_fit(str(s))}
    keys = sorted(k for k in ideal if k in energy)
    return keys, [ideal[k] for k in keys], np.array([energy[k] / len(ideal[k]) for k in keys])


def mixing_line(x: np.ndarray, per_site: np.ndarray, x_lo: float, x_hi: float) -> tuple[float, ...] | None:
    """(x_lo, e_lo, x_hi, e_hi): the lowest energies per site at the sampled end compositions. The
    CE is fitted to energies above the line through them, as ATAT fits formation energies: the line
    carries the large composition dependence of total energies, which would otherwise dominate
    the cross-validation score. None when an end has no data."""
    lo, hi = np.isclose(x, x_lo, atol=1e-9), np.isclose(x, x_hi, atol=1e-9)
    if not lo.any() or not hi.any():
        return None
    return float(x_lo), float(per_site[lo].min()), float(x_hi), float(per_site[hi].min())


def read_structures(store: CampaignStore, shape, frames: dict | None = None) -> dict:
    """key → Atoms of a ragged structures table with a ``key`` column (the last row of a key wins);
    ``frames``: its frames table with every column, when the caller has read it already."""
    from ase import Atoms

    frames = store.read(shape.frames) if frames is None else frames
    atoms = store.read(shape.atoms, ["numbers", "positions_A"])
    out = {}
    for k in range(len(frames["key"])):
        lo = int(frames["atom_start"][k])
        hi = lo + int(frames["n_atoms"][k])
        out[str(frames["key"][k])] = Atoms(numbers=atoms["numbers"][lo:hi], positions=atoms["positions_A"][lo:hi],
                                           cell=frames["cell_A"][k], pbc=frames["pbc"][k])
    return out


def candidate_pool(recipe: PhaseDiagramSpec, lattice: Lattice) -> list:
    """Every distinct cell up to ``candidates_max_cells`` primitive cells inside the sampled range of
    x (the references' span: beyond it lie compositions the study never asks about): what the
    rounds pick from."""
    primitive, symbols = lattice.primitive(), lattice.chemical_symbols()
    found = enumerate_cells(primitive, range(1, recipe.sampling.candidates_max_cells + 1), symbols)
    cells = [lattice.cell_atoms(found.hnf[k], int(found.ncells[k]), found.sites(k)) for k in range(len(found))]
    lo, hi = min(recipe.sampling.sqs_fractions), max(recipe.sampling.sqs_fractions)
    return [a for a in cells if lo - 1e-9 <= lattice.vacancy_fraction(a) <= hi + 1e-9]


def run_sampling(context: RunContext, first: Stage) -> ClusterExpansionModel | None:
    """The SQS stage, then fits and rounds; returns the last fit (None if too little was computed)."""
    from tasks.phase.cluster_expansion import cluster_vectors, fit_cluster_expansion
    from tasks.phase.sampling import Candidates, Computed, next_structures, sampling_converged

    spec, recipe = context.spec, context.spec.recipe
    sampling = recipe.sampling
    lattice = recipe.lattice.build()
    space = lattice.cluster_space(sampling.cutoffs_A)
    context.run(first)
    pool = candidate_pool(recipe, lattice)
    pool_vectors = cluster_vectors(space, pool)
    pool_x = np.array([lattice.vacancy_fraction(a) for a in pool])
    fit = None
    for round_ in range(sampling.max_rounds + 1):
        keys, ideal, per_site = labeler_data(context.store, round_)
        x = np.array([lattice.vacancy_fraction(a) for a in ideal])
        line = mixing_line(x, per_site, min(sampling.sqs_fractions), max(sampling.sqs_fractions))
        if len(keys) < 2 or line is None:
            context.say("too few labeler-relaxed cells (both end compositions among them) to fit a cluster "
                        "expansion; the ranking goes on without it (`campaign status` shows what failed)")
            return None
        mixing = per_site - line_at(line, x)
        seed = derive_seed(recipe.seed, "ce-fit", round_)
        # least squares needs no standardising, which divides by the spread of the targets: none in a
        # fold holding only the end compositions (both zero above the line)
        fit = fit_cluster_expansion(space, ideal, mixing, sampling.fit_method, min(sampling.cv_splits, len(keys)),
                                    seed, standardize=sampling.fit_method != "least-squares")
        computed = Computed(cluster_vectors(space, ideal), x, mixing)
        # the CE cannot tell cells with one cluster vector apart: those are computed already
        fresh = ~np.any(np.all(np.isclose(pool_vectors[:, None, :], computed.cluster_vectors[None, :, :],
                                          atol=1e-9), axis=2), axis=1)
        index = np.flatnonzero(fresh)
        candidates = Candidates(pool_vectors[index], pool_x[index], np.array([len(pool[i]) for i in index]))
        picks = next_structures(candidates, computed, fit.parameters, sampling.per_round) if len(index) else []
        chosen = [pool[index[p.index]] for p in picks]
        data_id = task_key("phase-ce-fit", VERSION, {"data": keys, "settings": sampling.model_dump(mode="json"),
                                                     "seed": seed})
        record_round(context, round_, data_id, len(keys), fit, chosen, picks, lattice, seed)
        converged = len(index) == 0 or sampling_converged(fit, candidates, computed, sampling.cv_target_eV_per_site)
        if converged or round_ == sampling.max_rounds or not chosen:
            break
        cells = [PhaseCell(f"ce{round_ + 1}-{k}", atoms, lattice.vacancy_fraction(atoms))
                 for k, atoms in enumerate(chosen)]
        context.run(labeler_stage(f"phase-ce-round{round_ + 1}", spec, cells))
    # keyed by what it was fitted on, not by its floats, which may differ in the last bits between machines
    return ClusterExpansionModel(tuple(sampling.cutoffs_A), tuple(float(p) for p in fit.parameters), data_id, line)


def record_round(context: RunContext, round_: int, data_id: str, n: int, fit, chosen, picks, lattice: Lattice,
                 seed: int) -> None:
    """One row per round and data: a relaunch that refits a round on the same data adds none."""
    if store_has_round(context.store, data_id):
        return
    choices = [{"x": lattice.vacancy_fraction(a), "reason": p.reason.value, "score": float(p.score), "sites": len(a),
                "formula": a.get_chemical_formula()} for a, p in zip(chosen, picks)]
    context.store.append({PHASE_CE_ROUNDS.name: {
        "launch": np.array([context.launch]), "round": np.array([round_]),
        "data": np.array([data_id], dtype=object), "n_structures": np.array([n]),
        "cv_rmse_eV_per_site": np.array([fit.cv_rmse_eV_per_site]),
        "parameters": np.array([json.dumps([float(p) for p in fit.parameters])], dtype=object),
        "chosen": np.array([json.dumps(choices)], dtype=object), "seed": np.array([seed])}})
    picks = ", ".join(f"{c['reason']} x={c['x']:.3f}" for c in choices) or "none"
    context.say(f"cluster expansion round {round_}: {n} structures, CV {1000 * fit.cv_rmse_eV_per_site:.1f} "
                f"meV/site; next: {picks}")


def store_has_round(store: CampaignStore, data_id: str) -> bool:
    if not store.length(PHASE_CE_ROUNDS):
        return False
    return data_id in {str(d) for d in store.read(PHASE_CE_ROUNDS, ["data"])["data"]}


# -- stage 2: enumeration -------------------------------------------------------------------------
def target_fractions(recipe: PhaseDiagramSpec) -> list[Fraction]:
    """The spec's vacancy fractions as the exact fractions of metal sites they stand for (0.1363636
    is 3/22): the nearest with a denominator no larger than the largest cell's metal sites."""
    return sorted({Fraction(x).limit_denominator(recipe.enumeration.max_sites // 2)
                   for x in recipe.enumeration.vacancy_fractions})


def enumeration_stage(spec: CampaignSpec) -> Stage:
    recipe: PhaseDiagramSpec = spec.recipe
    lattice = recipe.lattice.build()
    groups = enumeration_groups(lattice.primitive(), lattice.chemical_symbols(),
                                range(1, recipe.enumeration.max_sites // 4 + 1), target_fractions(recipe),
                                recipe.enumeration.hnfs_per_task)
    groups = costliest_first(groups, lattice.chemical_symbols())
    inputs = {"lattice": recipe.lattice.model_dump(mode="json")}
    items = [WorkItem(task_key("phase-enumerate", VERSION, {**inputs, "fraction": g.fraction,
                                                           "cells": [[t.ncells, list(t.hnf)] for t in g.tasks]}), g)
             for g in groups]
    return Stage("phase-enumerate", items, enumerate_groups, {"lattice": lattice}, cell_rows, 1, recipe.retries)


def enumerate_groups(keys: list[str], groups: list[EnumerationGroup], lattice: Lattice):
    from tasks.outcome import run_each

    return run_each(_enumerate_group, keys, groups, lattice)


def _enumerate_group(group: EnumerationGroup, lattice: Lattice):
    from tasks.phase.cells import VACANCY

    primitive, symbols = lattice.primitive(), lattice.chemical_symbols()
    snf = group.tasks[0].snf
    labelings = snf_labelings(primitive, symbols, snf, species_fractions={VACANCY: [group.fraction]})
    return enumerate_batch(group.tasks, primitive, symbols, {snf: labelings})


# -- stage 3: ranking, relaxations, checks ----------------------------------------------------------
def ranking_stage(spec: CampaignSpec, store: CampaignStore, files, ce: ClusterExpansionModel | None) -> Stage:
    recipe: PhaseDiagramSpec = spec.recipe
    lattice = recipe.lattice.build()
    cells = store.read(PHASE_CELLS)
    species = store.read(PHASE_CELL_SITES)["species"]
    order = np.lexsort((cells["index_in_task"], cells["task"]))  # the plan's order, not the finishing one
    shared = {"lattice": recipe.lattice.model_dump(mode="json"),
              "fractions": [str(f) for f in target_fractions(recipe)],
              "max_sites": recipe.enumeration.max_sites, "potential": files.identity(),
              "ce": None if ce is None else ce.identity}
    size = recipe.ranking.cells_per_task
    items = []
    for lo in range(0, len(order), size):
        rows = order[lo:lo + size]
        occupation = [species[int(cells["site_start"][r]):int(cells["site_start"][r]) + int(cells["n_sites"][r])]
                      for r in rows]
        chunk = CellChunk(rows, cells["vacancy_fraction"][rows], cells["ncells"][rows], cells["hnf"][rows], occupation)
        items.append(WorkItem(task_key("phase-rank", VERSION, {**shared, "first": lo, "count": len(rows)}), chunk))
    return Stage("phase-rank", items, rank_batch,
                 {"lattice": lattice, "potential": files, "ce": ce, "max_atoms": recipe.ranking.max_atoms_per_pass},
                 ranked_rows, 1, recipe.retries)


def top_cells(spec: CampaignSpec, store: CampaignStore) -> dict[float, list[PhaseCell]]:
    """Per composition, the ``top_k`` lowest cells by the potential, lowest first."""
    recipe: PhaseDiagramSpec = spec.recipe
    lattice = recipe.lattice.build()
    ranked = store.read(PHASE_RANKED)
    cells = store.read(PHASE_CELLS)
    species = store.read(PHASE_CELL_SITES)["species"]
    out = {}
    for x in map(float, target_fractions(recipe)):
        mine = np.flatnonzero((np.abs(ranked["vacancy_fraction"] - x) < 1e-9)
                              & np.isfinite(ranked["energy_eV_per_atom"]))
        mine = mine[np.argsort(ranked["energy_eV_per_atom"][mine], kind="stable")][:recipe.ranking.top_k]
        picked = []
        for rank, r in enumerate(mine):
            row = int(ranked["cell"][r])
            lo = int(cells["site_start"][row])
            ideal = lattice.cell_atoms(cells["hnf"][row], int(cells["ncells"][row]),
                                       species[lo:lo + int(cells["n_sites"][row])])
            picked.append(PhaseCell(f"x{x:.4f}-rank{rank}", ideal, x, row))
        out[x] = picked
    return out


def potential_relax_stage(spec: CampaignSpec, files, tops: dict[float, list[PhaseCell]]) -> Stage:
    recipe: PhaseDiagramSpec = spec.recipe
    settings = recipe.ranking.relax.model_dump(mode="json")
    items = {}
    for cells in tops.values():
        for cell in cells:
            key = task_key("phase-potential-relax", VERSION, {"cell": cell.canonical(), "relax": settings,
                                                               "potential": files.identity()})
            items.setdefault(key, WorkItem(key, cell))
    return Stage("phase-relax", list(items.values()), _potential_relax,
                 {"potential": files, "settings": recipe.ranking.relax},
                 functools.partial(computed_rows, stage="phase-relax", method="potential"),
                 recipe.ranking.relax_per_task, recipe.retries)


def _potential_relax(keys, cells, potential, settings):
    return potential_relax_batch(keys, [c.structure() for c in cells], potential, settings)


def checks(recipe: PhaseDiagramSpec, store: CampaignStore, tops: dict[float, list[PhaseCell]]) -> list[PhaseCell]:
    """Per composition, ``check_per_composition`` of the potential-relaxed top cells, evenly spaced
    across their relaxed ranking (lowest and highest included)."""
    relaxed = store.read(PHASE_COMPUTED.frames, ["cell", "method", "energy_eV_per_atom"])
    energy = {int(c): e for c, m, e in zip(relaxed["cell"], relaxed["method"], relaxed["energy_eV_per_atom"])
              if m == "potential"}
    out = []
    for cells in tops.values():
        done = sorted((c for c in cells if c.row in energy), key=lambda c: energy[c.row])
        n = min(recipe.ranking.check_per_composition, len(done))
        if n:
            picks = np.unique(np.round(np.linspace(0, len(done) - 1, n)).astype(int))
            out += [done[i] for i in picks]
    return out


def agreement_rows(recipe: PhaseDiagramSpec, store: CampaignStore, launch: int) -> dict:
    """Per composition: the potential's relaxed and the CE's energies against the labeler's."""
    from tasks.phase.statistics import ranking_agreement

    frames = store.read(PHASE_COMPUTED.frames, ["cell", "method", "energy_eV_per_atom", "stage"])
    ranked = store.read(PHASE_RANKED, ["cell", "vacancy_fraction", "ce_eV_per_atom"])
    ce = dict(zip(ranked["cell"].tolist(), ranked["ce_eV_per_atom"]))
    x_of = dict(zip(ranked["cell"].tolist(), ranked["vacancy_fraction"]))
    by = {"potential": {}, "labeler": {}}
    for c, m, e, s in zip(frames["cell"], frames["method"], frames["energy_eV_per_atom"], frames["stage"]):
        if c >= 0 and m in by and (m == "potential" or s == "phase-check"):
            by[m][int(c)] = e
    rows = {name: [] for name in PHASE_AGREEMENT.names}
    for x in map(float, target_fractions(recipe)):
        cells = sorted(c for c in by["labeler"] if c in by["potential"] and same_fraction(x_of.get(c, -1), x))
        reference = np.array([by["labeler"][c] for c in cells])
        for method, values in (("potential", [by["potential"][c] for c in cells]),
                               ("ce", [ce.get(c, np.nan) for c in cells])):
            result = ranking_agreement(np.array(values), reference)
            for name, value in (("launch", launch), ("vacancy_fraction", x), ("method", method), ("n", len(cells)),
                                ("spearman_rho", result.spearman_rho), ("rmse_eV_per_atom", result.rmse)):
                rows[name].append(value)
    return {PHASE_AGREEMENT.name: {c.name: np.array(rows[c.name], dtype=c.numpy_dtype)
                                   for c in PHASE_AGREEMENT.columns}}


# -- stage 4: the hull ------------------------------------------------------------------------------
def hull_rows(recipe: PhaseDiagramSpec, store: CampaignStore, launch: int) -> dict:
    from tasks.phase.hull import HullReference, formation_energies, lower_hull

    lattice = recipe.lattice.build()
    frames = store.read(PHASE_COMPUTED.frames)
    structures = read_structures(store, PHASE_COMPUTED, frames)
    keys = [str(k) for k, m in zip(frames["key"], frames["method"]) if m == "labeler"]
    index = {str(k): i for i, k in enumerate(frames["key"])}
    symbols = [structures[k].get_chemical_symbols() for k in keys]
    counts = np.array([[s.count(lattice.metal), s.count(lattice.anion)] for s in symbols])
    energy = np.array([frames["energy_eV"][index[k]] for k in keys])
    references = []
    for formula in recipe.hull.references:
        x = reference_fraction(formula, lattice)
        at_x = [i for i, (m, a) in enumerate(counts) if same_fraction(1 - m / a, x)]
        if not at_x:
            raise SpecError(f"recipe.hull.references: no labeler-relaxed structure of {formula} (x = {x:g}); "
                            "put its x among sampling.sqs_fractions")
        best = min(at_x, key=lambda i: energy[i] / counts[i].sum())
        f = Formula(formula).count()
        n = f.get(lattice.metal, 0) + f[lattice.anion]
        references.append(HullReference(formula, (f.get(lattice.metal, 0), f[lattice.anion]),
                                        energy[best] / counts[best].sum() * n))
    formation = formation_energies(counts, energy, references[0], references[1])
    hull = lower_hull(formation.fraction, formation.formation_energy_eV_per_atom)
    return {PHASE_HULL.name: {
        "launch": np.full(len(keys), launch, np.int32), "key": np.array(keys, dtype=object),
        "source": np.array([frames["stage"][index[k]] for k in keys], dtype=object),
        "formula": np.array([structures[k].get_chemical_formula() for k in keys], dtype=object),
        "vacancy_fraction": np.array([1 - m / a for m, a in counts]),
        "energy_eV_per_atom": np.array([frames["energy_eV_per_atom"][index[k]] for k in keys]),
        "formation_energy_eV_per_atom": formation.formation_energy_eV_per_atom,
        "e_above_hull_eV_per_atom": hull.e_above_hull_eV_per_atom, "on_hull": hull.on_hull}}


def extra_cells(recipe: PhaseDiagramSpec) -> list[PhaseCell]:
    """The spec's own hull candidates (their x from their counts), to be relaxed by the labeler."""
    from campaign.recipes.structures import load_structures

    lattice = recipe.lattice.build()
    cells = []
    for structure in load_structures(list(recipe.hull.structures)):
        atoms = structure.to_atoms()
        symbols = atoms.get_chemical_symbols()
        if set(symbols) - {lattice.metal, lattice.anion} or lattice.anion not in symbols:
            raise SpecError(f"recipe.hull.structures: {structure.tag or atoms.get_chemical_formula()} is not a "
                            f"{lattice.metal}–{lattice.anion} structure")
        x = 1 - symbols.count(lattice.metal) / symbols.count(lattice.anion)
        span = sorted(reference_fraction(f, lattice) for f in recipe.hull.references)
        if not span[0] - 1e-9 <= x <= span[1] + 1e-9:
            raise SpecError(f"recipe.hull.structures: {atoms.get_chemical_formula()} (x = {x:.4f}) lies outside the "
                            f"references' span x = {span[0]:g} … {span[1]:g}")
        cells.append(PhaseCell(structure.tag or "extra", atoms, x))
    return cells


# -- the run ----------------------------------------------------------------------------------------
def run_phase_diagram(context: RunContext, stages: Sequence[Stage]) -> list:
    spec, recipe = context.spec, context.spec.recipe
    files = potential_files(recipe.potential)
    reports = []
    ce = run_sampling(context, stages[0])
    enumeration = enumeration_stage(spec)
    reports.append(context.run(enumeration).report)
    context.say(f"{context.store.length(PHASE_CELLS)} cells enumerated")
    reports.append(context.run(ranking_stage(spec, context.store, files, ce)).report)
    tops = top_cells(spec, context.store)
    reports.append(context.run(potential_relax_stage(spec, files, tops)).report)
    reports.append(context.run(labeler_stage("phase-check", spec, checks(recipe, context.store, tops))).report)
    if recipe.hull.structures:
        reports.append(context.run(labeler_stage("phase-hull-extra", spec, extra_cells(recipe))).report)
    context.store.append(agreement_rows(recipe, context.store, context.launch))
    context.store.append(hull_rows(recipe, context.store, context.launch))
    return reports


@register
class PhaseDiagramRecipe(Recipe):
    kind = "phase_diagram"
    spec = PhaseDiagramSpec
    tables = TABLES

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        recipe: PhaseDiagramSpec = spec.recipe
        lattice = recipe.lattice.build()
        for formula in recipe.hull.references:
            x = reference_fraction(formula, lattice)
            if not any(same_fraction(x, f) for f in recipe.sampling.sqs_fractions):
                raise SpecError(f"recipe.hull.references: {formula} (x = {x:g}) is not among sampling.sqs_fractions "
                                f"{recipe.sampling.sqs_fractions}: the labeler would never compute it")
        potential_files(recipe.potential)  # readable and loadable, before the store is touched
        extra_cells(recipe)  # likewise the hull's own structures
        return [sqs_stage(spec)]

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        return run_phase_diagram(context, stages)

    def cells_to_label(self, spec: CampaignSpec, stages: Sequence[Stage]) -> list[Structure]:
        return [item.payload.structure() for stage in stages for item in stage.items]

    def status(self, store: CampaignStore) -> dict:
        from campaign.recipes.phase_report import status_rows

        return status_rows(store)

    def format_status(self, status: dict) -> list[str]:
        from campaign.recipes.phase_report import status_lines

        return status_lines(status)

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        from campaign.recipes.phase_report import write_figures

        return write_figures(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.phase_panels import PANELS

        return list(PANELS)
