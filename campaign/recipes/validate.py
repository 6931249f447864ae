"""The ``validate`` recipe: potentials against the labeler, property by property (Table II of the
MoS2 study; the Cr(1-x)S study's Δ between equations of state).

Every source (each potential named in the spec, and the campaign's labeler) first relaxes the
reference cell (``structure`` step); then every other step (elastic constants, equation of state,
energy–strain curves, phonons, point defects, dimer curves) runs from the cell that source relaxed,
one keyed task per (source, step). A relaunch skips finished tasks, and the labeler's tasks run on
the workers like any labeling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, field_validator, model_validator

from campaign.errors import SpecError
from campaign.keys import task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.potential_source import PotentialSource, potential_files
from campaign.recipes.structures import load_structures
from campaign.recipes.validate_tables import TABLES, job_rows, relaxed_structures
from campaign.spec import CampaignSpec, RecipeSpec, StructureSource
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.settings import StrictModel
from tasks.structures import Structure
from tasks.validation.jobs import HEXAGONAL, STEPS, DefectCase, Source, ValidationJob, ValidationSettings, \
    validate_batch

TASK = "validate"
VERSION = 1
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
    elastic_strains: list[float] = Field(default_factory=lambda: [-0.01, -0.005, 0.005, 0.01], min_length=2)
    relax_ions: bool = Field(True, description="relaxed-ion elastic constants (Table II's)")
    eos_strains: list[float] = Field(default_factory=lambda: list(ValidationSettings.eos_strains), min_length=7,
                                     description="linear strain of every lattice vector (bulk) or both in-plane "
                                     "ones (sheet); the study: −10% … +20% in 2% steps")
    curve_strains: list[float] = Field(default_factory=lambda: list(ValidationSettings.curve_strains), min_length=2)
    phonon_supercell: Triple | None = Field(None, description="default: repeat")
    phonon_distance_A: float = Field(0.01, gt=0)
    phonon_path: list[tuple[str, tuple[float, float, float]]] = Field(
        default_factory=lambda: [(n, q) for n, q in HEXAGONAL], min_length=2,
        description="(label, reduced q-point) corners; default Γ–M–K–Γ of a hexagonal cell")
    phonon_points: int = Field(51, ge=2)
    defects: list[DefectSpec] = Field(default_factory=list)
    defect_repeat: Triple = Field((1, 1, 1), description="the defect cell: the repeated cell repeated again")
    dimer_distances_A: list[float] = Field(default_factory=lambda: list(ValidationSettings.dimer_distances_A),
                                           min_length=2)
    box_A: float = Field(20.0, gt=0, description="box of isolated atoms and dimers")
    seed: int = 0
    retries: int = Field(2, ge=0)

    @field_validator("repeat", "phonon_supercell", "defect_repeat")
    @classmethod
    def _positive(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"repeats must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _names(self) -> "ValidateSpec":
        names = [p.name for p in self.potentials] + [self.labeler_name]
        if len(set(names)) != len(names):
            raise ValueError(f"potential names and labeler_name must differ: {names}")
        if "structure" not in self.steps:
            raise ValueError("steps must include 'structure': every other step starts from its relaxed cell")
        return self

    def settings(self) -> ValidationSettings:
        return ValidationSettings(
            sheet=self.sheet, repeat=tuple(self.repeat), fmax_eV_per_A=self.fmax_eV_per_A,
            max_steps=self.max_relax_steps, elastic_strains=tuple(self.elastic_strains), relax_ions=self.relax_ions,
            eos_strains=tuple(self.eos_strains), curve_strains=tuple(self.curve_strains),
            phonon_supercell=tuple(self.phonon_supercell or self.repeat), phonon_distance_A=self.phonon_distance_A,
            phonon_path=tuple((n, tuple(q)) for n, q in self.phonon_path), phonon_points=self.phonon_points,
            defects=tuple(DefectCase(d.name, d.kind, d.species, d.count, d.replacement) for d in self.defects),
            defect_repeat=tuple(self.defect_repeat), dimer_distances_A=tuple(self.dimer_distances_A),
            box_A=self.box_A, seed=self.seed)


# -- plan -----------------------------------------------------------------------------------------
def reference_cell(recipe: ValidateSpec) -> Structure:
    found = load_structures([recipe.structure])
    if len(found) != 1:
        raise SpecError(f"recipe.structure: gives {len(found)} structures; the validation takes one unit cell")
    atoms = found[0].to_atoms()
    atoms.pbc = True  # a sheet is periodic with vacuum, as the labelers compute it
    symbols = set(atoms.get_chemical_symbols())
    for d in recipe.defects:
        if d.species not in symbols:
            raise SpecError(f"recipe.defects: {d.name} takes {d.species} out of {atoms.get_chemical_formula()}, "
                            "which has none")
    return Structure.from_atoms(atoms.repeat(recipe.repeat), tag="validate-reference")


def sources(spec: CampaignSpec) -> list[Source]:
    recipe: ValidateSpec = spec.recipe
    reference = reference_cell(recipe)
    elements = {str(s) for s in reference.to_atoms().get_chemical_symbols()}
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
    from dataclasses import asdict

    inputs = {"source": source_identity(source), "step": step, "structure": structure.canonical(),
              "settings": asdict(recipe.settings())}
    return task_key(TASK, VERSION, inputs, recipe.seed)


def stage_of(recipe: ValidateSpec, name: str, items: list[WorkItem]) -> Stage:
    return Stage(name, items, validate_batch, kwargs={"settings": recipe.settings()}, store_rows=job_rows,
                 batch_size=1, retries=recipe.retries)


def first_stage(spec: CampaignSpec) -> Stage:
    recipe: ValidateSpec = spec.recipe
    reference = reference_cell(recipe)
    items = [WorkItem(job_key(recipe, s, "structure", reference), ValidationJob(s, "structure", reference))
             for s in sources(spec)]
    return stage_of(recipe, "validate-structure", items)


# -- run ------------------------------------------------------------------------------------------
def run_validation(context: RunContext, stages: Sequence[Stage]) -> list:
    recipe: ValidateSpec = context.spec.recipe
    first = stages[0]
    reports = [context.run(first).report]
    relaxed = relaxed_structures(context.store)
    items = []
    for item in first.items:
        if item.key not in relaxed:
            context.say(f"validate: {item.payload.source.name} did not relax the reference cell; its other "
                        "properties are skipped")
            continue
        cell = Structure.from_atoms(relaxed[item.key], tag=f"relaxed by {item.payload.source.name}")
        for step in (s for s in STEPS if s != "structure" and s in recipe.steps):
            if step == "defects" and not recipe.defects:
                continue
            items.append(WorkItem(job_key(recipe, item.payload.source, step, cell),
                                  ValidationJob(item.payload.source, step, cell)))
    if items:
        reports.append(context.run(stage_of(recipe, "validate-properties", items)).report)
    return reports


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


def labeler_name(store: CampaignStore) -> str:
    return str(store.attrs.get("spec", {}).get("recipe", {}).get("labeler_name", "labeler"))

