"""The ``anneal`` recipe: simulated annealing of M(1−x)A decorations with a potential (the study:
12 cycles of 50,000 steps from 20,000 … 9,000 K to 0.01 K, swaps and cell moves, NPT at P = 0).

Chains are (composition × replica), ``chains_per_task`` of them per task, advanced one segment of
``steps_per_segment`` steps at a time in one batched state (tasks.mc). Each segment is a keyed
stage item whose outcome is every chain's exact checkpoint: a relaunch skips finished segments and
continues each group from the last checkpoint in the store, on exactly the trajectory an
uninterrupted run takes. Per chain and cycle the lowest structure goes to the store, with the
metal occupation of each layer; ``campaign export STORE --minima OUT`` writes them for the
phase-diagram recipe's hull (``hull.structures``).
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from campaign.errors import SpecError
from campaign.keys import derive_seed, task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.anneal_tables import TABLES, checkpoint_records, segment_rows
from campaign.recipes.phase_diagram import LatticeSpec
from campaign.recipes.chain_segments import groups_of, monte_carlo_potential, run_segments
from campaign.recipes.potential_source import PotentialSource
from campaign.spec import CampaignSpec, RecipeSpec
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.mc.anneal import AnnealCell, ChainStart, SegmentJob, SegmentSettings, anneal_cell, anneal_segments, \
    vacancy_count
from tasks.mc.schedule import GeometricCycles, MoveSettings
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel

TASK = "anneal-segment"
VERSION = 1
STUDY_STARTS_K = [20000.0 - 1000.0 * k for k in range(12)]


class ScheduleSpec(StrictModel):
    """Geometric cooling cycles; each continues from the previous cycle's last structure."""

    start_temperatures_K: list[float] = Field(default_factory=lambda: list(STUDY_STARTS_K), min_length=1)
    steps_per_cycle: int = Field(50_000, ge=2)
    end_temperature_K: float = Field(0.01, gt=0)

    @field_validator("start_temperatures_K")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(not t > 0 for t in values):
            raise ValueError(f"start temperatures must be positive, got {values}")
        return values

    def build(self) -> GeometricCycles:
        return GeometricCycles(tuple(self.start_temperatures_K), self.steps_per_cycle, self.end_temperature_K)


class MovesSpec(StrictModel):
    cell_move_fraction: float = Field(0.12, ge=0, le=1)
    max_strain: float = Field(0.001, gt=0, lt=0.2, description="each lattice vector scaled by exp(ε), |ε| ≤ this")
    swap_groups: list[tuple[int, int]] = Field(default_factory=lambda: [(0, 6), (10_000, 2)], min_length=1,
                                               description="(first step within a cycle, largest group of "
                                               "metal–vacancy pairs swapped together), ascending")
    pressure_GPa: float = 0.0

    @field_validator("swap_groups")
    @classmethod
    def _ascending(cls, groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
        firsts = [g[0] for g in groups]
        if firsts[0] != 0 or firsts != sorted(set(firsts)) or any(g[1] < 1 for g in groups):
            raise ValueError(f"swap_groups must start at step 0, ascend, and allow groups of at least 1: {groups}")
        return groups

    def build(self) -> MoveSettings:
        return MoveSettings(self.cell_move_fraction, self.max_strain, (True, True, True),
                            tuple((int(a), int(b)) for a, b in self.swap_groups), self.pressure_GPa)


class AnnealSpec(RecipeSpec):
    kind: Literal["anneal"] = "anneal"
    potential: PotentialSource
    lattice: LatticeSpec = LatticeSpec()
    supercell: list[list[int]] = Field(default_factory=lambda: [[4, 0, 0], [2, 4, 0], [0, 0, 3]],
                                       description="rows: supercell vectors in primitive-cell units (the study: "
                                       "4 × 2√3 × 3 of the NiAs cell)")
    vacancy_fractions: list[float | str] = Field(..., min_length=1, description="x of M(1−x)A: numbers or "
                                                 "fractions such as '1/3'; x × metal sites must be whole")
    replicas: int = Field(1, ge=1)
    schedule: ScheduleSpec = ScheduleSpec()
    moves: MovesSpec = MovesSpec()
    chains_per_task: int = Field(16, ge=1, description="chains advanced together in one batched state")
    steps_per_segment: int = Field(5_000, ge=1, description="a checkpoint of every chain after this many steps")
    record_every: int = Field(100, ge=1, description="steps between trace rows")
    skin_A: float = Field(1.0, ge=0)
    seed: int = 0
    retries: int = Field(2, ge=0)

    @field_validator("supercell")
    @classmethod
    def _matrix(cls, rows: list[list[int]]) -> list[list[int]]:
        if len(rows) != 3 or any(len(r) != 3 for r in rows) or round(np.linalg.det(np.array(rows))) <= 0:
            raise ValueError(f"supercell must be a 3×3 integer matrix with a positive determinant, got {rows}")
        return rows

    @model_validator(mode="after")
    def _fractions(self) -> "AnnealSpec":
        self.fractions()
        return self

    def fractions(self) -> list[Fraction]:
        out = [vacancy_fraction(value) for value in self.vacancy_fractions]
        if len(set(out)) != len(out):
            raise ValueError(f"vacancy fractions repeat: {self.vacancy_fractions}")
        return out


def vacancy_fraction(value: float | str) -> Fraction:
    """x of M(1−x)A from a number or a fraction such as '1/3'; ValueError outside [0, 1)."""
    try:
        x = Fraction(str(value)).limit_denominator(10_000)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"vacancy fraction {value!r} is not a number or a fraction") from None
    if not 0 <= x < 1:
        raise ValueError(f"vacancy fraction {value!r} must lie in [0, 1)")
    return x


# -- plan -----------------------------------------------------------------------------------------
def chain_starts(recipe: AnnealSpec, cell: AnnealCell) -> list[ChainStart]:
    starts = []
    for x in recipe.fractions():
        try:
            vacancy_count(cell, float(x))
        except ValueError as error:
            raise SpecError(f"recipe.vacancy_fractions: {error} (recipe.supercell {recipe.supercell})") from None
        for replica in range(recipe.replicas):
            starts.append(ChainStart(f"x={x} r{replica}", float(x), replica,
                                     derive_seed(recipe.seed, "anneal", str(x), replica)))
    return starts


def segment_settings(recipe: AnnealSpec) -> SegmentSettings:
    return SegmentSettings(recipe.schedule.build(), recipe.moves.build(), recipe.steps_per_segment,
                           recipe.record_every, recipe.skin_A)


def group_key(recipe: AnnealSpec, files: PotentialFiles, group: Sequence[ChainStart], segment: int) -> str:
    inputs = {"potential": files.identity(), "dtype": recipe.potential.dtype,
              "lattice": recipe.lattice.model_dump(mode="json"), "supercell": recipe.supercell,
              "chains": [[c.name, c.seed] for c in group], "schedule": recipe.schedule.model_dump(mode="json"),
              "moves": recipe.moves.model_dump(mode="json"), "steps_per_segment": recipe.steps_per_segment,
              "record_every": recipe.record_every, "skin_A": recipe.skin_A, "segment": segment}
    return task_key(TASK, VERSION, inputs, recipe.seed)


def segment_stage(recipe: AnnealSpec, cell: AnnealCell, files: PotentialFiles, items: list[WorkItem], segment: int,
                  gpu: bool) -> Stage:
    return Stage(f"anneal-segment{segment + 1}", items, anneal_segments,
                 {"cell": cell, "potential": files, "settings": segment_settings(recipe)},
                 functools.partial(segment_rows, cell=cell), 1, recipe.retries, {"GPU": 1} if gpu else None)


def first_stage(spec: CampaignSpec) -> Stage:
    recipe: AnnealSpec = spec.recipe
    lattice = recipe.lattice.build()
    try:
        cell = anneal_cell(lattice, recipe.supercell)
    except Exception as error:  # noqa: BLE001 - ase's supercell builder on a bad matrix
        raise SpecError(f"recipe.supercell: {error}") from None
    starts = chain_starts(recipe, cell)
    files, _ = monte_carlo_potential(recipe.potential, {lattice.metal, lattice.anion}, "the lattice")
    items = [WorkItem(group_key(recipe, files, g, 0), SegmentJob(g, 0, None))
             for g in groups_of(starts, recipe.chains_per_task)]
    return segment_stage(recipe, cell, files, items, 0, False)


# -- run ------------------------------------------------------------------------------------------
def run_anneal(context: RunContext, stages: Sequence[Stage]) -> list:
    recipe: AnnealSpec = context.spec.recipe
    first = stages[0]
    cell, files = first.kwargs["cell"], first.kwargs["potential"]
    return run_segments(
        context, [item.payload.chains for item in first.items], segment_settings(recipe).n_segments,
        key_of=lambda group, segment: group_key(recipe, files, group, segment),
        job_of=SegmentJob, records_of=lambda key: checkpoint_records(context.store, key),
        stage_of=lambda items, segment: segment_stage(recipe, cell, files, items, segment, context.gpu))


@register
class AnnealRecipe(Recipe):
    kind = "anneal"
    spec = AnnealSpec
    tables = TABLES
    labels = False

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return [first_stage(spec)]

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        return run_anneal(context, stages)

    def status(self, store: CampaignStore) -> dict:
        from campaign.recipes.anneal_report import status_rows

        return {"chains": status_rows(store)}

    def format_status(self, status: dict) -> list[str]:
        from campaign.recipes.anneal_report import status_lines

        return status_lines(status.get("chains", []))

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        from campaign.recipes.anneal_report import write_figures

        return write_figures(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.anneal_tables import ANNEAL_TRACE
        from campaign.recipes.chain_panels import ChainTracePanel

        return [ChainTracePanel("anneal-chains", "Annealing: every chain", ANNEAL_TRACE)]
