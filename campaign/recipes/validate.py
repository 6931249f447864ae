"""The ``validate`` recipe: potentials against the labeler, property by property (Table II of the
MoS2 study; the Cr(1-x)S study's Δ between equations of state).

Every source (each potential named in the spec, and the campaign's labeler) first relaxes the
reference cell (``structure`` step); then every other step (elastic constants, equation of state,
energy–strain curves, phonons, point defects, dimer curves) runs from the cell that source relaxed,
one keyed task per (source, step). A relaunch skips finished tasks, and the labeler's tasks run on
the workers like any labeling.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from ase.data import atomic_numbers

from campaign.errors import SpecError
from campaign.keys import task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.potential_source import PotentialSource, potential_files
from campaign.recipes.structures import load_structures
from campaign.recipes.validate_tables import TABLES, comparison_rows, displaced_forces, job_rows, \
    relaxed_structures, source_rows
from campaign.spec import CampaignSpec, RecipeSpec, StructureSource
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.settings import StrictModel
from tasks.structures import Structure
from tasks.validation.jobs import STEPS, DefectCase, Source, ValidationJob, ValidationSettings, step_settings, \
    validate_batch
from tasks.validation.phonons import HEXAGONAL_PATH
from tasks.validation.threshold import ThresholdSettings

TASK = "validate"
VERSION = 2
Triple = tuple[int, int, int]


class NamedPotential(PotentialSource):
    name: str = Field(..., min_length=1, description="its column in the table")


class DefectSpec(StrictModel):
    name: str = Field(..., min_length=1, description="its row in the table, e.g. V_S, V_S2, S_Mo")
    kind: Literal["vacancy", "antisite"]
    species: str
    count: int = Field(1, ge=1, description="vacancy: atoms of species removed together (nearest ones)")
    replacement: str | None = Field(None, description="antisite: the element put on a species site")

    @model_validator(mode="after")
    def _antisite_needs_replacement(self) -> "DefectSpec":
        if self.kind == "antisite" and (not self.replacement or self.replacement == self.species):
            raise ValueError("an antisite needs a replacement other than its species")
        return self


class ThresholdSpec(StrictModel):
    """Threshold displacement energies (Table III of the MoS2 study) by bisection on the recoil
    energy, every direction of a round in one batched MD state (tasks/validation/threshold.py)."""

    species: list[str] = Field(..., min_length=1, description="PKA elements: the topmost atom of each, nearest "
                               "the cell's centre")
    directions: int = Field(16, ge=1, description="points on a Fibonacci hemisphere (z ≥ 0)")
    low_eV: float = Field(1.0, gt=0)
    high_eV: float = Field(80.0, gt=0)
    rounds: int = Field(8, ge=1, description="bisection rounds: the bracket ends (high − low)/2^rounds wide")
    time_fs: float = Field(500.0, gt=0, description="NVE time after which a Wigner–Seitz vacancy is a defect")
    max_timestep_fs: float = Field(1.0, gt=0)
    max_displacement_A: float = Field(0.05, gt=0, description="adaptive step: no atom moves more per step")
    bond_cutoff_A: float = Field(3.0, gt=0, description="atoms farther from the cell's bonded network left it")
    repeat: Triple = Field((1, 1, 1), description="the cell the recoils run in: the repeated cell repeated again")
    labeler: bool = Field(False, description="also for the labeler: MD with it, one calculation per MD step")

    @model_validator(mode="after")
    def _bracket(self) -> "ThresholdSpec":
        if not self.high_eV > self.low_eV:
            raise ValueError(f"high_eV ({self.high_eV}) must exceed low_eV ({self.low_eV})")
        if min(self.repeat) < 1 or len(set(self.species)) != len(self.species):
            raise ValueError(f"repeat must be positive and species distinct: {self.repeat}, {self.species}")
        return self

    def build(self) -> ThresholdSettings:
        return ThresholdSettings(self.low_eV, self.high_eV, self.rounds, self.time_fs, self.max_timestep_fs,
                                 self.max_displacement_A, self.bond_cutoff_A)


class ElementReference(StrictModel):
    """A crystal of one element whose energy per atom (relaxed with its cell) is that element's
    chemical potential for the defects, next to the isolated atom's."""

    element: str
    structure: StructureSource


class ValidateSpec(RecipeSpec):
    kind: Literal["validate"] = "validate"
    structure: StructureSource = Field(..., description="the unit cell (one structure)")
    sheet: bool = Field(..., description="a 2D sheet in the xy plane (in-plane relaxation and elastic constants "
                        "in N/m) or a bulk crystal")
    repeat: Triple = Field((1, 1, 1), description="every calculation uses the unit cell repeated so (tblite's "
                           "Γ point wants cells ≥ 7 Å wide); lattice constants are per unit cell")
    potentials: list[NamedPotential] = Field(..., min_length=1)
    labeler_name: str = Field("labeler", min_length=1, description="the labeler's column in the table")
    steps: list[Literal[STEPS]] = Field(default_factory=lambda: list(STEPS))
    fmax_eV_per_A: float = Field(0.01, gt=0)
    max_relax_steps: int = Field(1000, ge=1)
    elastic_strains: list[float] = Field(default_factory=lambda: list(ValidationSettings.elastic_strains), min_length=2)
    relax_ions: bool = Field(True, description="relaxed-ion elastic constants (Table II's)")
    eos_scales: list[float] = Field(default_factory=lambda: list(ValidationSettings.eos_scales), min_length=7,
                                    description="V/V0 (a sheet: A/A0) of the equation of state; the Cr(1-x)S "
                                    "study's Δ: (0.9 … 1.2)³ in steps of 0.02 in the lattice vectors")
    curve_strains: list[float] = Field(default_factory=lambda: list(ValidationSettings.curve_strains), min_length=2)
    phonon_supercell: Triple | None = Field(None, description="default: repeat")
    phonon_distance_A: float = Field(0.01, gt=0)
    phonon_path: list[tuple[str, tuple[float, float, float]]] = Field(
        default_factory=lambda: [(n, q) for n, q in HEXAGONAL_PATH], min_length=2,
        description="(label, reduced q-point) corners; default Γ–M–K–Γ of a hexagonal cell")
    phonon_points: int = Field(51, ge=2)
    defects: list[DefectSpec] = Field(default_factory=list)
    defect_repeat: Triple = Field((1, 1, 1), description="the defect cell: the repeated cell repeated again")
    chemical_potential_references: list[ElementReference] = Field(
        default_factory=list, description="elemental crystals: E_f also against their energies per atom")
    dimer_distances_A: list[float] = Field(default_factory=lambda: list(ValidationSettings.dimer_distances_A),
                                           min_length=2)
    box_A: float = Field(14.0, gt=0, description="box of isolated atoms and dimers (not periodic)")
    thresholds: ThresholdSpec | None = Field(None, description="threshold displacement energies; none by default")
    seed: int = 0
    retries: int = Field(2, ge=0)

    @field_validator("repeat", "phonon_supercell", "defect_repeat")
    @classmethod
    def _positive(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"repeats must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ValidateSpec":
        names = [p.name for p in self.potentials] + [self.labeler_name]
        if len(set(names)) != len(names):
            raise ValueError(f"potential names and labeler_name must differ: {names}")
        if "structure" not in self.steps:
            raise ValueError("steps must include 'structure': every other step starts from its relaxed cell")
        defects = [d.name for d in self.defects]
        if len(set(defects)) != len(defects):
            raise ValueError(f"defect names repeat: {defects}")
        for name, values, least, floor in (("elastic_strains", self.elastic_strains, 2, -1),
                                           ("eos_scales", self.eos_scales, 7, 0),
                                           ("curve_strains", self.curve_strains, 2, -1)):
            if len(set(values)) < least or min(values) <= floor:
                raise ValueError(f"{name} needs {least} distinct values above {floor} (the fits), got {values}")
        repeats = [self.repeat, self.defect_repeat, self.phonon_supercell or self.repeat,
                   self.thresholds.repeat if self.thresholds else (1, 1, 1)]
        if self.sheet and any(r[2] != 1 for r in repeats):
            raise ValueError(f"a sheet repeats in its plane only (third entry 1): {repeats}")
        return self

    def settings(self) -> ValidationSettings:
        return ValidationSettings(
            sheet=self.sheet, repeat=tuple(self.repeat), fmax_eV_per_A=self.fmax_eV_per_A,
            max_steps=self.max_relax_steps, elastic_strains=tuple(self.elastic_strains), relax_ions=self.relax_ions,
            eos_scales=tuple(self.eos_scales), curve_strains=tuple(self.curve_strains),
            phonon_supercell=tuple(self.phonon_supercell or self.repeat), phonon_distance_A=self.phonon_distance_A,
            phonon_path=tuple((n, tuple(q)) for n, q in self.phonon_path), phonon_points=self.phonon_points,
            defects=tuple(DefectCase(d.name, d.kind, d.species, d.count, d.replacement) for d in self.defects),
            defect_repeat=tuple(self.defect_repeat), references=reference_crystals(self),
            dimer_distances_A=tuple(self.dimer_distances_A),
            box_A=self.box_A, threshold_species=tuple(self.thresholds.species) if self.thresholds else (),
            threshold_directions=self.thresholds.directions if self.thresholds else 16,
            threshold=self.thresholds.build() if self.thresholds else ThresholdSettings(),
            threshold_repeat=tuple(self.thresholds.repeat) if self.thresholds else (1, 1, 1), seed=self.seed)


# -- plan -----------------------------------------------------------------------------------------
def reference_crystals(recipe: ValidateSpec) -> tuple[tuple[str, dict], ...]:
    """(element, canonical structure) of each chemical-potential reference, checked."""
    elements = [ref.element for ref in recipe.chemical_potential_references]
    if len(set(elements)) != len(elements):
        raise SpecError(f"recipe.chemical_potential_references: elements repeat: {elements}")
    return tuple((ref.element, _reference_crystal(k, ref))
                 for k, ref in enumerate(recipe.chemical_potential_references))


@functools.lru_cache(maxsize=64)  # every task key reads the settings: read each file once
def _reference_crystal(k: int, ref: ElementReference) -> dict:
    found = load_structures([ref.structure])
    symbols = set(found[0].to_atoms().get_chemical_symbols()) if len(found) == 1 else set()
    if len(found) != 1 or symbols != {ref.element}:
        raise SpecError(f"recipe.chemical_potential_references.{k}: the reference of {ref.element} must be one "
                        f"structure of {ref.element} alone, got {len(found)} holding {sorted(symbols)}")
    return found[0].canonical()


def reference_cell(recipe: ValidateSpec) -> Structure:
    found = load_structures([recipe.structure])
    if len(found) != 1:
        raise SpecError(f"recipe.structure: gives {len(found)} structures; the validation takes one unit cell")
    atoms = found[0].to_atoms()
    atoms.pbc = True  # a sheet is periodic with vacuum, as the labelers compute it
    symbols = set(atoms.get_chemical_symbols())
    defect_cell = atoms.repeat(recipe.repeat).repeat(recipe.defect_repeat)
    for d in recipe.defects:
        present = defect_cell.get_chemical_symbols().count(d.species)
        if not present:
            raise SpecError(f"recipe.defects: {d.name} takes {d.species} out of {atoms.get_chemical_formula()}, "
                            "which has none")
        if d.count > present:
            raise SpecError(f"recipe.defects: {d.name} removes {d.count} {d.species}; the defect cell has {present}")
        if d.replacement is not None and d.replacement not in atomic_numbers:
            raise SpecError(f"recipe.defects: {d.name}: replacement {d.replacement!r} is not an element")
    for symbol in recipe.thresholds.species if recipe.thresholds else ():
        if symbol not in symbols:
            raise SpecError(f"recipe.thresholds.species: {atoms.get_chemical_formula()} has no {symbol}")
    return Structure.from_atoms(atoms.repeat(recipe.repeat), tag="validate-reference")


def sources(spec: CampaignSpec, reference: Structure) -> list[Source]:
    """The potentials (checked to know the reference cell's and the antisites' elements), then the labeler."""
    recipe: ValidateSpec = spec.recipe
    elements = {str(s) for s in reference.to_atoms().get_chemical_symbols()}
    elements |= {d.replacement for d in recipe.defects if d.replacement}
    out = []
    for k, p in enumerate(recipe.potentials):
        def check(model, where: str, k=k) -> None:
            missing = elements - set(getattr(model, "elements", elements))
            if missing:
                raise SpecError(f"recipe.potentials.{k}: {where} knows no {sorted(missing)}")

        out.append(Source(p.name, potential=potential_files(p, check)))
    out.append(Source(recipe.labeler_name, labeler=spec.labeler))
    return out


def source_identity(source: Source) -> dict:
    if source.labeler is not None:
        return {"labeler": source.labeler.model_dump(mode="json")}
    return {"potential": source.potential.identity(), "dtype": source.potential.dtype}


def job_key(recipe: ValidateSpec, source: Source, step: str, structure: Structure) -> str:
    inputs = {"source": source_identity(source), "step": step, "structure": structure.canonical(),
              "settings": step_settings(recipe.settings(), step)}
    return task_key(TASK, VERSION, inputs)


def stage_of(recipe: ValidateSpec, name: str, items: list[WorkItem]) -> Stage:
    return Stage(name, items, validate_batch, kwargs={"settings": recipe.settings()}, store_rows=job_rows,
                 batch_size=1, retries=recipe.retries)


def first_stage(spec: CampaignSpec) -> Stage:
    recipe: ValidateSpec = spec.recipe
    reference = reference_cell(recipe)
    items = [WorkItem(job_key(recipe, s, "structure", reference), ValidationJob(s, "structure", reference))
             for s in sources(spec, reference)]
    return stage_of(recipe, "validate-structure", items)


# -- run ------------------------------------------------------------------------------------------
def wants_thresholds(recipe: ValidateSpec, source: Source) -> bool:
    """Thresholds when asked for, and for the labeler only when asked for it too (MD with a DFT
    labeler costs one calculation per step)."""
    return recipe.thresholds is not None and (source.labeler is None or recipe.thresholds.labeler)


def run_validation(context: RunContext, stages: Sequence[Stage]) -> list:
    """Relax per source; then every other step, and the labeler's phonon forces one displaced cell
    per task; then the labeler's phonons from those forces."""
    recipe: ValidateSpec = context.spec.recipe
    first = stages[0]
    context.store.append(source_rows(context.launch, first.items))
    reports = [context.run(first).report]
    relaxed = relaxed_structures(context.store)
    items, phonons = [], []  # phonons: (source, relaxed cell, its forces keys) assembled after
    for item in first.items:
        source = item.payload.source
        if item.key not in relaxed:
            context.say(f"validate: {source.name} did not relax the reference cell; its other properties are "
                        "skipped")
            continue
        cell = Structure.from_atoms(relaxed[item.key], tag=f"relaxed by {source.name}")
        for step in (s for s in STEPS if s != "structure" and s in recipe.steps):
            if (step == "defects" and not recipe.defects) or (step == "thresholds" and not wants_thresholds(
                    recipe, source)):
                continue
            if step == "phonons" and source.labeler is not None:
                forces = displacement_items(recipe, source, relaxed[item.key])
                items += forces
                phonons.append((source, cell, [f.key for f in forces]))
                continue
            items.append(WorkItem(job_key(recipe, source, step, cell), ValidationJob(source, step, cell)))
    if items:
        context.store.append(source_rows(context.launch, items))
        reports.append(context.run(stage_of(recipe, "validate-properties", items)).report)
    assembled = []
    forces = displaced_forces(context.store) if phonons else {}
    for source, cell, keys in phonons:
        if not all(k in forces for k in keys):
            context.say(f"validate: {source.name}: {sum(k not in forces for k in keys)} of {len(keys)} displaced "
                        "cells have no forces; its phonons are skipped")
            continue
        assembled.append(WorkItem(job_key(recipe, source, "phonons", cell),
                                  ValidationJob(source, "phonons", cell, np.stack([forces[k] for k in keys]))))
    if assembled:
        context.store.append(source_rows(context.launch, assembled))
        reports.append(context.run(stage_of(recipe, "validate-phonons", assembled)).report)
    context.store.append(comparison_rows(context.store, recipe.labeler_name, context.launch))
    return reports


def displacement_items(recipe: ValidateSpec, source: Source, relaxed_cell) -> list[WorkItem]:
    """One forces task per displaced supercell of phonopy's, in its order."""
    from tasks.validation.jobs import phonon_displacements

    _, cells = phonon_displacements(relaxed_cell, recipe.settings())
    out = []
    for k, atoms in enumerate(cells):
        structure = Structure.from_atoms(atoms, tag=f"phonon displacement {k}")
        out.append(WorkItem(job_key(recipe, source, "forces", structure), ValidationJob(source, "forces", structure)))
    return out


@register
class ValidateRecipe(Recipe):
    kind = "validate"
    spec = ValidateSpec
    tables = TABLES

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return [first_stage(spec)]

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        return run_validation(context, stages)

    def cells_to_label(self, spec: CampaignSpec, stages: Sequence[Stage]) -> list[Structure]:
        """The reference cell as repeated: the labeler sees it and strained, displaced or defective
        copies of its size (phonon supercells: ``phonon_supercell`` unit cells)."""
        recipe: ValidateSpec = spec.recipe
        cells = [reference_cell(recipe)]
        if recipe.phonon_supercell and "phonons" in recipe.steps:
            unit = load_structures([recipe.structure])[0].to_atoms()
            unit.pbc = True
            cells.append(Structure.from_atoms(unit.repeat(recipe.phonon_supercell), tag="validate-phonons"))
        return cells

    def status(self, store: CampaignStore) -> dict:
        from campaign.recipes.validate_report import status_rows

        return {"validation": status_rows(store)}

    def format_status(self, status: dict) -> list[str]:
        from campaign.recipes.validate_report import status_lines

        return status_lines(status.get("validation", {}))

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        from campaign.recipes.validate_report import write_report

        return write_report(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.validate_panels import PANELS

        return list(PANELS)
