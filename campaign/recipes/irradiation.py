"""The ``irradiation`` recipe: impacts of ions on a sheet, batched per task, and sputtering yields.

Every impact is one keyed item (ion, energy, index, seed, potential, target, settings); a task runs
``impacts_per_task`` of them as one batched MD state (tasks.irradiation). A fixed ensemble plans
``impacts`` per (ion, energy); an adaptive one (``target_relative_ci``) then adds rounds of impacts
to each point until its yield's confidence interval is that narrow or ``max_impacts`` is reached.
A relaunch skips every finished impact and continues the rounds from what the store holds.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Sequence, Union

import numpy as np
from ase.data import chemical_symbols
from ase.io import read
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from campaign.errors import SpecError
from campaign.keys import derive_seed, task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.irradiation_report import write_figures
from campaign.recipes.potential_source import PotentialSource, potential_files
from campaign.recipes.irradiation_tables import (IRR_END, IRR_IMPACTS, IRR_SPUTTERED, IRR_YIELDS, impact_rows,
                                                 point_counts, yield_rows)
from campaign.spec import CampaignSpec, RecipeSpec
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.irradiation.impact import ImpactJob, ImpactSettings, impact_batch
from tasks.irradiation.statistics import enough_impacts, impacts_to_add
from tasks.irradiation.target import Target, aim_fractions, file_target, monolayer_target
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel
from tasks.structures import Structure

TASK = "irradiation-impact"
VERSION = 1


# -- the spec -------------------------------------------------------------------------------------
class MonolayerTarget(StrictModel):
    """An n×n 2H monolayer, periodic in-plane."""

    formula: str = "MoS2"
    a_A: float = Field(3.18, gt=0)
    thickness_A: float = Field(3.19, gt=0, description="chalcogen–chalcogen distance")
    repeat: int = Field(6, ge=3, description="primitive cells along each in-plane vector (the study: ~1,700 atoms)")
    vacuum_A: float = Field(30.0, ge=25.0, description="empty space along z")

    def build(self) -> Target:
        return monolayer_target(self.formula, self.a_A, self.thickness_A, self.repeat, self.vacuum_A)


class FileTarget(StrictModel):
    """A sheet from a structure file (periodic along its first two cell vectors, z normal)."""

    relative_files: ClassVar[tuple[str, ...]] = ("file",)

    file: Path
    index: int = -1
    repeat: tuple[int, int] = Field(..., description="primitive cells along the first two cell vectors")

    def build(self) -> Target:
        try:
            atoms = read(self.file, index=self.index)
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input
            raise SpecError(f"recipe.target.file: cannot read {self.file}: {error}") from None
        try:
            return file_target(atoms, self.repeat)
        except ValueError as error:
            raise SpecError(f"recipe.target: {self.file}: {error}") from None


Targets = Annotated[Union[Annotated[FileTarget, Tag("file")], Annotated[MonolayerTarget, Tag("monolayer")]],
                    Discriminator(lambda v: "file" if (isinstance(v, FileTarget)
                                                       or (isinstance(v, dict) and "file" in v)) else "monolayer")]


class IrradiationSpec(RecipeSpec):
    """Ions of ``energies_eV`` on a sheet, ``impacts`` per (ion, energy) or until the yield's CI is
    ``target_relative_ci`` narrow."""

    kind: Literal["irradiation"] = "irradiation"
    potential: PotentialSource
    target: Targets = MonolayerTarget()
    ions: list[str] = Field(default_factory=lambda: ["Mo", "S"], min_length=1)
    energies_eV: list[float] = Field(..., min_length=1)
    impacts: int = Field(100, ge=1, description="per (ion, energy); the first round of an adaptive ensemble")
    target_relative_ci: float | None = Field(None, gt=0, lt=1, description="adaptive: add impacts until the "
                                             "total yield's interval half-width / mean is this small")
    max_impacts: int = Field(1000, ge=1, description="adaptive: the cap per (ion, energy)")
    confidence: float = Field(0.95, gt=0, lt=1)
    aim: Literal["uniform", "stratified"] = "uniform"
    polar_deg: float = Field(0.0, ge=0, lt=80, description="0: normal incidence")
    azimuth_deg: float = 0.0
    dynamics: ImpactSettings = ImpactSettings()
    impacts_per_task: int = Field(20, ge=1, description="impacts in one batched state (a GPU takes 100 or more)")
    seed: int = 0
    retries: int = Field(2, ge=0)

    @field_validator("ions")
    @classmethod
    def _elements(cls, ions: list[str]) -> list[str]:
        unknown = [i for i in ions if i not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"unknown element(s) {unknown}")
        return ions

    @field_validator("energies_eV")
    @classmethod
    def _positive(cls, energies: list[float]) -> list[float]:
        if any(not e > 0 for e in energies) or len(set(energies)) != len(energies):
            raise ValueError(f"energies must be positive and distinct, got {energies}")
        return energies

    @model_validator(mode="after")
    def _cap(self) -> "IrradiationSpec":
        if self.max_impacts < self.impacts:
            raise ValueError(f"max_impacts ({self.max_impacts}) is below impacts ({self.impacts})")
        return self

    def points(self) -> list[tuple[str, float]]:
        return [(ion, float(e)) for ion in self.ions for e in self.energies_eV]


# -- the potential --------------------------------------------------------------------------------
def has_short_range_repulsion(potential) -> bool:
    """A blend of a repulsion (ZBL or a dimer table) into the network, directly or in every member."""
    from tasks.nnp.committee import Committee
    from tasks.nnp.repulsion import Blended

    if isinstance(potential, Committee):
        return all(has_short_range_repulsion(m) for m in potential.members)
    return isinstance(potential, Blended)


def require_repulsion(model, where: str) -> None:
    if not has_short_range_repulsion(model):
        raise SpecError(
            f"recipe.potential: {where} has no short-range repulsion. A cascade brings atoms well below "
            "1 Å, where a network alone is untrained and may even attract: train the committee with "
            "committee.repulsion (kind zbl or dimer_table: DP-Tab) in its active-learning spec")


def potential_id(files: PotentialFiles) -> str:
    return files.identity()


# -- items and stages -----------------------------------------------------------------------------
def impact_items(recipe: IrradiationSpec, target: Target, potential: str, ion: str, energy_eV: float,
                 first: int, count: int) -> list[WorkItem]:
    """Impacts ``first`` … ``first + count − 1`` of one (ion, energy)."""
    seeds = [derive_seed(recipe.seed, "impact", ion, repr(energy_eV), i) for i in range(first, first + count)]
    aims = aim_fractions(recipe.impacts, first, seeds, recipe.aim == "stratified",
                         derive_seed(recipe.seed, "strata", ion, repr(energy_eV)))
    shared = {"ion": ion, "energy_eV": energy_eV, "potential": potential, **ensemble_inputs(recipe, target)}
    items = []
    for i, seed, aim in zip(range(first, first + count), seeds, aims):
        job = ImpactJob(ion, energy_eV, (float(aim[0]), float(aim[1])), recipe.polar_deg, recipe.azimuth_deg, seed, i)
        items.append(WorkItem(task_key(TASK, VERSION, {**shared, "impact": i}, seed), job))
    return items


def ensemble_inputs(recipe: IrradiationSpec, target: Target) -> dict:
    """Key inputs every impact of an ensemble shares (besides the potential and the seed)."""
    return {"aim": recipe.aim, "strata_of": recipe.impacts if recipe.aim == "stratified" else None,
            "polar_deg": recipe.polar_deg, "azimuth_deg": recipe.azimuth_deg,
            "settings": recipe.dynamics.model_dump(mode="json", exclude_none=True), "target": target_id(target),
            "dtype": recipe.potential.dtype}


def ensemble_id(recipe: IrradiationSpec, target: Target, potential: str) -> str:
    """What makes impacts of one (ion, energy) members of one ensemble: everything in their keys
    but ion, energy and index. Adaptive rounds count only these impacts."""
    inputs = {"potential": potential, "seed": recipe.seed, **ensemble_inputs(recipe, target)}
    return task_key("irradiation-ensemble", VERSION, inputs)


def target_id(target: Target) -> str:
    canonical = Structure.from_atoms(target.atoms).canonical()
    return hashlib.sha256(repr((canonical, target.repeat)).encode()).hexdigest()[:32]


def impact_stage(name: str, recipe: IrradiationSpec, target: Target, files: PotentialFiles, items: list[WorkItem],
                 gpu: bool) -> Stage:
    return Stage(name, items, impact_batch, {"target": target, "potential": files, "settings": recipe.dynamics},
                 functools.partial(impact_rows, ensemble=ensemble_id(recipe, target, potential_id(files))),
                 recipe.impacts_per_task, recipe.retries, {"GPU": 1} if gpu else None)


def first_stage(spec: CampaignSpec, gpu: bool = False) -> Stage:
    recipe: IrradiationSpec = spec.recipe
    target = recipe.target.build()
    files = potential_files(recipe.potential, require_repulsion)
    pid = potential_id(files)
    items = [item for ion, energy in recipe.points()
             for item in impact_items(recipe, target, pid, ion, energy, 0, recipe.impacts)]
    return impact_stage("irradiation-impacts", recipe, target, files, items, gpu)


def more_impacts(context: RunContext, recipe: IrradiationSpec, stage: Stage, round_: int) -> Stage | None:
    """The next adaptive round: for each point whose interval is still too wide, more impacts."""
    target, pid = stage.kwargs["target"], potential_id(stage.kwargs["potential"])
    counts, next_index = point_counts(context.store, ensemble_id(recipe, target, pid))
    items = []
    for ion, energy in recipe.points():
        done = counts.get((ion, energy), np.zeros(0, int))
        if len(done) == 0:
            continue
        check = enough_impacts(done, recipe.target_relative_ci, recipe.max_impacts, confidence=recipe.confidence,
                               rng=derive_seed(recipe.seed, "interval", ion, repr(energy), len(done)))
        add = impacts_to_add(check, recipe.target_relative_ci, recipe.max_impacts, min_batch=recipe.impacts_per_task)
        if add:
            items += impact_items(recipe, target, pid, ion, energy, next_index[(ion, energy)], add)
    if not items:
        return None
    return impact_stage(f"irradiation-impacts-round{round_}", recipe, target, stage.kwargs["potential"], items,
                        bool(stage.resources))


def run_irradiation(context: RunContext, stages: Sequence[Stage]) -> list:
    """The first round, the adaptive rounds, then the yields; returns the rounds' reports."""
    recipe: IrradiationSpec = context.spec.recipe
    stage = stages[0]
    if context.gpu:
        stage = impact_stage(stage.name, recipe, stage.kwargs["target"], stage.kwargs["potential"],
                             list(stage.items), True)
    reports = [context.run(stage).report]
    round_ = 2
    while recipe.target_relative_ci is not None:
        stage = more_impacts(context, recipe, stage, round_)
        if stage is None:
            break
        reports.append(context.run(stage).report)
        if reports[-1].done == 0:  # nothing came back: the same round would be planned again
            context.say(f"round {round_} finished no impact; the adaptive rounds stop here (its failures are in "
                        "`campaign status`)")
            break
        round_ += 1
    first = stages[0]
    ensemble = ensemble_id(recipe, first.kwargs["target"], potential_id(first.kwargs["potential"]))
    rows = yield_rows(context.store, ensemble, recipe.confidence, recipe.seed, context.launch)
    context.store.append({IRR_YIELDS.name: rows})
    context.say(f"yields of {len(recipe.points())} (ion, energy) points written ({time.strftime('%H:%M:%S')})")
    return reports


@register
class IrradiationRecipe(Recipe):
    kind = "irradiation"
    spec = IrradiationSpec
    tables = (IRR_IMPACTS, IRR_SPUTTERED, *IRR_END.tables, IRR_YIELDS)
    labels = False

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return [first_stage(spec)]

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        return run_irradiation(context, stages)

    def status(self, store: CampaignStore) -> dict:
        from campaign.recipes.irradiation_tables import status_rows

        return {"points": status_rows(store)}

    def format_status(self, status: dict) -> list[str]:
        from campaign.recipes.irradiation_tables import status_lines

        return status_lines(status.get("points", []))

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        return write_figures(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.irradiation_panels import PANELS

        return list(PANELS)
