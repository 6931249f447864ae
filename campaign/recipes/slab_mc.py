"""The ``slab_mc`` recipe: vacancy-diffusion Monte Carlo on a metal–anion slab under in-plane strain
(the Cr(1−x)S study's section 2.6: a CrS2 slab of 6,912 atoms at 300 K and P_z = 0, vacancy hops
and thickness moves each followed by a relaxation, until the energy stops falling).

Chains are replicas, each from its own random Cr/vacancy arrangement, ``chains_per_task`` of them
per task, advanced one segment of ``steps_per_segment`` steps at a time (tasks.mc.slab_task). Each
segment is a keyed stage item whose outcome is every chain's exact checkpoint: a relaunch skips
finished segments and continues each group from the last checkpoint in the store, on exactly the
trajectory an uninterrupted run takes. A chain whose stored trace has reached the energy plateau
(``stop``) is not continued.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Sequence, Union

import numpy as np
from pydantic import Discriminator, Field, Tag, model_validator

from campaign.errors import SpecError
from campaign.keys import derive_seed, task_key
from campaign.recipe import Recipe, RunContext, register
from campaign.recipes.anneal import vacancy_fraction
from campaign.recipes.chain_segments import groups_of, monte_carlo_potential, run_segments
from campaign.recipes.phase_diagram import LatticeSpec
from campaign.recipes.potential_source import PotentialSource
from campaign.recipes.slab_tables import TABLES, chain_plateaus, checkpoint_records, segment_rows
from campaign.spec import CampaignSpec, RecipeSpec
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from tasks.mc.anneal import vacancies_on
from tasks.mc.schedule import ConstantTemperature, MoveSettings
from tasks.mc.slab_build import Slab, build_slab, slab_from_atoms
from tasks.mc.slab_chain import RelaxSchedule, SlabMoves, check_vacuum
from tasks.mc.slab_task import SlabSegmentJob, SlabSegmentSettings, SlabStart, slab_segments
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel

TASK = "slab-mc-segment"
VERSION = 1
STUDY_STRAIN = round(1 - 3.1625 / 3.29, 6)  # the study's 50.6 Å over 16 cells against the free layer's 3.29 Å
VACANT = "X"  # a vacant metal site in a slab file (ASE's dummy atom, as icet writes vacancies)


class BuiltSlabSpec(StrictModel):
    """An anion-terminated slab cut from the NiAs lattice (tasks.mc.slab_build.build_slab); the
    defaults are the study's CrS2 slab (Cr2304 S4608 on 15 Cr layers of 288 sites)."""

    lattice: LatticeSpec = Field(default_factory=lambda: LatticeSpec(a_A=3.29, c_A=5.573))
    repeats: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        (16, 9), description="in-plane repeats of the rectangular cell (a, a√3), two metal sites per layer each")
    layers: int = Field(15, ge=1, description="metal layers; (layers − 1) / (2 layers) vacant sites make MA2")
    vacancy_fraction: float | str = Field("7/15", description="vacant share of the metal sites, a number or "
                                          "'a/b'; × sites must be whole")
    in_plane_strain: float = Field(STUDY_STRAIN, gt=-1, lt=1, description="compressive: a × (1 − strain)")
    vacuum_A: float = Field(30.0, gt=0)
    hop_distance_A: float = Field(4.9, gt=0, description="a vacancy hops to the sites this close (the study: "
                                  "6 in-plane, 7 in each adjacent layer)")

    random_start: ClassVar[bool] = True

    @model_validator(mode="after")
    def _fraction(self) -> "BuiltSlabSpec":
        vacancy_fraction(self.vacancy_fraction)
        return self

    @property
    def n_sites(self) -> int:
        return 2 * self.repeats[0] * self.repeats[1] * self.layers

    def build(self, seed: int) -> Slab:
        x = vacancy_fraction(self.vacancy_fraction)
        try:
            vacancies_on(self.n_sites, float(x))
            return build_slab(self.lattice.build(), self.repeats, self.layers, float(x),
                              in_plane_strain=self.in_plane_strain, vacuum_A=self.vacuum_A, seed=seed,
                              hop_distance_A=self.hop_distance_A)
        except ValueError as error:
            raise SpecError(f"recipe.slab: {error}") from None


class FileSlabSpec(StrictModel):
    """A slab from a structure file: a rectangular cell with c along z, the vacant metal sites as
    'X' atoms (the sites are the metal atoms and the X; the X are dropped from the atoms)."""

    relative_files: ClassVar[tuple[str, ...]] = ("file",)

    file: Path = Field(..., description="relative paths are taken from the spec file's folder")
    index: int = Field(-1, description="the frame of a file holding several")
    format: str | None = Field(None, description="ASE format name when the extension does not tell")
    metal: str = "Cr"
    start: Literal["random", "file"] = Field("random", description="random: each replica shuffles the metal "
                                             "over the sites; file: every replica starts from the file")
    hop_distance_A: float = Field(4.9, gt=0)

    @property
    def random_start(self) -> bool:
        return self.start == "random"

    def build(self, seed: int) -> Slab:
        from ase.io import read

        try:
            atoms = read(self.file, index=self.index, format=self.format)
        except Exception as error:  # noqa: BLE001 - ASE's readers raise anything on a file they cannot parse
            raise SpecError(f"recipe.slab.file: cannot read {self.file}: {error}") from None
        symbols = np.array(atoms.get_chemical_symbols())
        on_site = (symbols == self.metal) | (symbols == VACANT)
        if not on_site.any():
            raise SpecError(f"recipe.slab.file: {self.file} holds no {self.metal} atom and no vacant site "
                            f"({VACANT!r}); it has {sorted(set(symbols.tolist()))}")
        try:
            return slab_from_atoms(atoms[symbols != VACANT], atoms.positions[on_site],
                                   hop_distance_A=self.hop_distance_A)
        except ValueError as error:
            raise SpecError(f"recipe.slab.file: {self.file}: {error}") from None


def _slab_kind(value) -> str:
    """A slab with a ``file`` is read from it, any other is built (errors then name the fields of the
    one the user meant)."""
    file = isinstance(value, FileSlabSpec) or (isinstance(value, dict) and "file" in value)
    return "file-source" if file else "generated-source"  # the spec's source tags, left out of error paths


SlabSource = Annotated[Union[Annotated[FileSlabSpec, Tag("file-source")],
                             Annotated[BuiltSlabSpec, Tag("generated-source")]], Discriminator(_slab_kind)]


class SlabMovesSpec(StrictModel):
    thickness_fraction: float = Field(MoveSettings.cell_move_fraction, ge=0, le=1,
                                      description="share of the steps that propose a thickness move")
    max_strain: float = Field(MoveSettings.max_strain, gt=0, lt=0.2, description="z scaled by exp(ε), |ε| ≤ this")
    pressure_GPa: float = Field(MoveSettings.pressure_GPa, description="along z")
    cell_only_steps: int = Field(SlabMoves.cell_only_steps, ge=0, description="the first steps move the "
                                 "thickness only")
    in_plane_fraction: float = Field(SlabMoves.in_plane_fraction, ge=0, le=1, description="share of the hops "
                                     "proposed within a layer")


class RelaxSpec(StrictModel):
    """FIRE after every move: ⌈max_steps (1 − exp(−(step + 1) / growth_steps))⌉ steps at MC step step."""

    max_steps: int = Field(RelaxSchedule.max_steps, ge=0)
    growth_steps: float = Field(RelaxSchedule.growth_steps, gt=0)
    fmax_eV_per_A: float = Field(RelaxSchedule.fmax_eV_per_A, ge=0)
    skin_A: float = Field(RelaxSchedule.skin_A, ge=0, description="a hop frees the atoms within cutoff + skin "
                          "of its two sites")


class StopSpec(StrictModel):
    """A chain stops once its energy fell by less than the tolerance over the last window."""

    window_steps: int = Field(10_000, ge=1)
    tolerance_meV_per_atom: float = Field(1.0, ge=0)


class SlabMcSpec(RecipeSpec):
    kind: Literal["slab_mc"] = "slab_mc"
    potential: PotentialSource
    slab: SlabSource
    replicas: int = Field(1, ge=1, description="chains, each from its own random start with its own moves")
    temperature_K: float = Field(300.0, gt=0)
    max_steps: int = Field(210_000, ge=1)
    moves: SlabMovesSpec = SlabMovesSpec()
    relax: RelaxSpec = RelaxSpec()
    stop: StopSpec | None = Field(StopSpec(), description="null: every chain runs max_steps")
    chains_per_task: int = Field(1, ge=1, description="chains advanced together (their relaxations batched)")
    steps_per_segment: int = Field(1000, ge=1, description="a checkpoint of every chain after this many steps")
    record_every: int = Field(100, ge=1, description="steps between trace rows")
    snapshot_every: int = Field(10_000, ge=0, description="steps between snapshots (0: none)")
    seed: int = 0
    retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _steps(self) -> "SlabMcSpec":
        if self.steps_per_segment % self.record_every:
            raise ValueError(f"steps_per_segment ({self.steps_per_segment}) must be a multiple of record_every "
                             f"({self.record_every})")
        if self.max_steps % self.steps_per_segment:
            raise ValueError(f"max_steps ({self.max_steps}) must be a multiple of steps_per_segment "
                             f"({self.steps_per_segment})")
        if self.stop is not None and self.stop.window_steps % self.record_every:
            raise ValueError(f"stop.window_steps ({self.stop.window_steps}) must be a multiple of record_every "
                             f"({self.record_every}): the energy is compared with the record a window earlier")
        return self


# -- plan -----------------------------------------------------------------------------------------
def segment_settings(recipe: SlabMcSpec) -> SlabSegmentSettings:
    m = recipe.moves
    thickness = MoveSettings(m.thickness_fraction, m.max_strain, (False, False, True), pressure_GPa=m.pressure_GPa)
    moves = SlabMoves(thickness, m.cell_only_steps, m.in_plane_fraction, RelaxSchedule(**recipe.relax.model_dump()))
    return SlabSegmentSettings(ConstantTemperature(recipe.temperature_K, recipe.max_steps), moves,
                               recipe.steps_per_segment, recipe.record_every, recipe.snapshot_every,
                               recipe.slab.random_start)


def slab_identity(slab: Slab) -> str:
    """What keys of work on this slab depend on: its atoms, cell, sites and hops."""
    digest = hashlib.sha256()
    for array in (slab.numbers, slab.positions, slab.cell, slab.sites, slab.site_atom):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(slab.hop_distance_A).encode())
    return digest.hexdigest()


def segment_key(recipe: SlabMcSpec, slab: Slab, files: PotentialFiles, group: Sequence[SlabStart],
                segment: int) -> str:
    """Everything a segment's work depends on; max_steps and stop are not (they decide which
    segments run, and each runs steps_per_segment steps), so a campaign extends by raising them."""
    inputs = {"potential": files.identity(), "dtype": recipe.potential.dtype, "slab": slab_identity(slab),
              "random_start": recipe.slab.random_start, "chains": [[c.name, c.seed] for c in group],
              "temperature_K": recipe.temperature_K, "moves": recipe.moves.model_dump(mode="json"),
              "relax": recipe.relax.model_dump(mode="json"), "steps_per_segment": recipe.steps_per_segment,
              "record_every": recipe.record_every, "snapshot_every": recipe.snapshot_every, "segment": segment}
    return task_key(TASK, VERSION, inputs, recipe.seed)


def segment_stage(recipe: SlabMcSpec, slab: Slab, files: PotentialFiles, items: list[WorkItem], segment: int,
                  gpu: bool) -> Stage:
    return Stage(f"slab-segment{segment + 1}", items, slab_segments,
                 {"slab": slab, "potential": files, "settings": segment_settings(recipe)},
                 functools.partial(segment_rows, slab=slab), 1, recipe.retries, {"GPU": 1} if gpu else None)


def first_stage(spec: CampaignSpec) -> Stage:
    recipe: SlabMcSpec = spec.recipe
    slab = recipe.slab.build(derive_seed(recipe.seed, "slab_mc", "slab"))
    files, cutoff_A = monte_carlo_potential(recipe.potential, set(slab.atoms().get_chemical_symbols()), "the slab")
    try:
        check_vacuum(slab, slab.positions, cutoff_A)
    except ValueError as error:
        raise SpecError(f"recipe.slab: {error}") from None
    starts = [SlabStart(f"r{r}", r, derive_seed(recipe.seed, "slab_mc", r)) for r in range(recipe.replicas)]
    items = [WorkItem(segment_key(recipe, slab, files, g, 0), SlabSegmentJob(g, 0, None))
             for g in groups_of(starts, recipe.chains_per_task)]
    return segment_stage(recipe, slab, files, items, 0, False)


# -- run ------------------------------------------------------------------------------------------
def run_slab(context: RunContext, stages: Sequence[Stage]) -> list:
    recipe: SlabMcSpec = context.spec.recipe
    first = stages[0]
    slab, files, settings = first.kwargs["slab"], first.kwargs["potential"], first.kwargs["settings"]

    def at_plateau() -> set[str]:
        if recipe.stop is None:
            return set()
        plateaus = chain_plateaus(context.store, slab.n_atoms, recipe.stop.window_steps,
                                  recipe.stop.tolerance_meV_per_atom / 1000)
        return {chain for chain, step in plateaus.items() if step is not None}

    return run_segments(
        context, [item.payload.chains for item in first.items], settings.n_segments,
        key_of=lambda group, segment: segment_key(recipe, slab, files, group, segment),
        job_of=SlabSegmentJob, records_of=lambda key: checkpoint_records(context.store, key),
        stage_of=lambda items, segment: segment_stage(recipe, slab, files, items, segment, context.gpu),
        finished=at_plateau, finished_as="reached the energy plateau")


@register
class SlabMcRecipe(Recipe):
    kind = "slab_mc"
    spec = SlabMcSpec
    tables = TABLES
    labels = False

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return [first_stage(spec)]

    def run(self, context: RunContext, stages: Sequence[Stage]) -> list:
        return run_slab(context, stages)

    def status(self, store: CampaignStore) -> dict:
        from campaign.recipes.slab_report import status_rows

        return {"chains": status_rows(store)}

    def format_status(self, status: dict) -> list[str]:
        from campaign.recipes.slab_report import status_lines

        return status_lines(status.get("chains", []))

    def report(self, store: CampaignStore, out_dir: Path) -> list[Path]:
        from campaign.recipes.slab_report import write_figures

        return write_figures(store, out_dir)

    def panels(self) -> list:
        from campaign.recipes.chain_panels import ChainTracePanel
        from campaign.recipes.slab_tables import SLAB_TRACE

        return [ChainTracePanel("slab-chains", "Slab Monte Carlo: every chain", SLAB_TRACE)]
