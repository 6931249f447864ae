"""The campaign spec: a YAML file parsed once into typed, frozen models (unknown keys refused)."""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Annotated, Iterator, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from campaign.errors import SpecError
from campaign.spec_input import read_yaml
from schedulers.settings import SchedulerKind, SchedulerSettings
from tasks.labeling import Labeler, TbliteLabeler


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(_Strict):
    """Structures from any file ASE reads (extxyz, POSCAR, CIF, LAMMPS data, ...)."""

    file: Path = Field(..., description="relative paths are taken from the spec file's folder")
    index: str = Field(":", description="ASE index: ':' for all frames, '0', '-10:'")
    format: str | None = Field(None, description="ASE format name when the extension does not tell")
    tag: str | None = Field(None, description="source tag stored with each frame; default: the file name")


class GenerateSource(_Strict):
    """Seeded perturbed copies (strain, rattle, vacancies) of a prototype cell."""

    prototype: Literal["mx2", "nias", "bulk"]
    formula: str
    a_A: float = Field(..., gt=0)
    c_A: float | None = Field(None, gt=0, description="nias (required) and hexagonal bulk")
    thickness_A: float = Field(3.19, gt=0, description="mx2: chalcogen-chalcogen distance")
    vacuum_A: float = Field(7.5, ge=0, description="mx2: vacuum on each side of the layer")
    crystalstructure: str | None = Field(None, description="bulk: as ase.build.bulk names it")
    supercell: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)],
                     Annotated[int, Field(ge=1)]] = (1, 1, 1)
    count: int = Field(1, ge=1, le=100_000, description="at most 100,000 copies per source: a typo of a few "
                       "zeros must not plan gigabytes; split a larger set over several sources")
    max_strain: float = Field(0.0, ge=0, lt=0.5)
    rattle_A: float = Field(0.0, ge=0)
    vacancy_species: str | None = None
    vacancy_fractions: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    seed: int = 0
    tag: str | None = Field(None, description="default: prototype-formula")

    @model_validator(mode="after")
    def _prototype_needs(self) -> "GenerateSource":
        if self.prototype == "nias" and self.c_A is None:
            raise ValueError("prototype nias needs c_A")
        if self.prototype == "bulk" and self.crystalstructure is None:
            raise ValueError("prototype bulk needs crystalstructure")
        return self


StructureSource = Union[FileSource, GenerateSource]


class LabelRecipe(_Strict):
    """Label every structure once with the campaign's labeler."""

    kind: Literal["label"] = "label"
    structures: list[StructureSource] = Field(..., min_length=1)
    batch_size: int = Field(8, ge=1, description="structures per task: aim for tasks of a second or more")
    retries: int = Field(2, ge=0, description="resubmissions of a task whose worker was lost")


class DefectSpec(_Strict):
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


class SlabSpec(_Strict):
    """Slab cuts of the first initial structure normal to a cell vector, one per shift."""

    axis: int = Field(2, ge=0, le=2)
    shifts: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5], min_length=1)
    vacuum_A: float = Field(16.0, gt=15.0, description="empty space added along the cut (> 15 Å)")


class RelaxSpec(_Strict):
    """Labeler relaxations of the first ``count`` initial structures, thinned by farthest-point
    sampling on the path's energies."""

    count: int = Field(1, ge=1)
    max_steps: int = Field(20, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0)
    keep_fraction: float = Field(0.7, gt=0, le=1)


class InitialData(_Strict):
    structures: list[StructureSource] = Field(..., min_length=1)
    defects: list[DefectSpec] = Field(default_factory=list)
    slabs: SlabSpec | None = None
    dimer_distances_A: list[float] = Field(default_factory=list)
    isolated_atoms: bool = True
    relax: RelaxSpec | None = None
    seed: int = 0


class CommitteeSpec(_Strict):
    members: int = Field(4, ge=2, description="4 as in the MoS2 study, 2 as in the Cr(1-x)S study")
    hidden: list[int] = Field(default_factory=lambda: [32, 32], min_length=1)
    radial_cutoff_A: float = Field(5.5, gt=0)
    angular_cutoff_A: float = Field(4.0, gt=0)
    max_epochs: int = Field(200, ge=1)
    patience_epochs: int = Field(40, ge=1)
    frames_per_step: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    lr_decay_per_epoch: float = Field(0.99, gt=0, le=1)
    energy_weight: float = Field(1.0, ge=0)
    force_weight: float = Field(10.0, ge=0)
    dtype: Literal["float32", "float64"] = "float64"
    device: str = Field("auto", description="auto: the worker's GPU when it has one")
    warm_start: bool = Field(True, description="start each member from its model of the previous iteration")


class ExploreSpec(_Strict):
    structures: list[StructureSource] = Field(..., min_length=1)
    temperatures_K: list[float] = Field(default_factory=lambda: [300.0, 600.0, 900.0, 1200.0], min_length=1)
    strains: list[float] = Field(default_factory=lambda: [-0.1, -0.05, 0.0, 0.05, 0.1], min_length=1)
    steps: int = Field(200, ge=1)
    frame_every: int = Field(10, ge=1)
    timestep_fs: float = Field(1.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0)
    relax: bool = Field(True, description="also fixed-cell FIRE relaxations of the strained cells")
    relax_steps: int = Field(100, ge=1)


class ActiveLearningRecipe(_Strict):
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
    def _window(self) -> "ActiveLearningRecipe":
        if self.trust_lo >= self.trust_hi:
            raise ValueError(f"trust_lo ({self.trust_lo}) must be below trust_hi ({self.trust_hi})")
        return self


def _recipe_kind(value) -> str:
    return value.get("kind", "label") if isinstance(value, dict) else getattr(value, "kind", "label")


RECIPE_KINDS = ("label", "active_learning")
Recipe = Annotated[Union[Annotated[LabelRecipe, Tag("label")], Annotated[ActiveLearningRecipe, Tag("active_learning")]],
                   Discriminator(_recipe_kind)]


class CampaignSpec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    store: Path = Field(..., description="store directory; relative paths are taken from the working directory")
    scheduler: SchedulerSettings = SchedulerSettings()
    labeler: Labeler = TbliteLabeler()
    recipe: Recipe

    def with_scheduler(self, kind: SchedulerKind | str | None) -> "CampaignSpec":
        if kind is None:
            return self
        return self.model_copy(update={"scheduler": self.scheduler.model_copy(update={"kind": SchedulerKind(kind)})})


def _field_names(model: type, seen: set | None = None) -> set[str]:
    """Every field name in the spec's model tree, for 'did you mean' hints."""
    seen = seen if seen is not None else set()
    fields = getattr(model, "__pydantic_fields__", None)
    if fields is None or model in seen:
        return set()
    seen.add(model)
    names = set(fields)
    for info in fields.values():
        for nested in _nested_types(info.annotation):
            names |= _field_names(nested, seen)
    return names


def _nested_types(annotation) -> Iterator:
    yield annotation
    for arg in get_args(annotation):
        yield from _nested_types(arg)


_MAX_ERRORS_SHOWN = 20
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 6, 80, 80


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short_repr(value) -> str:
    """A bounded repr of a user's input (it may be megabytes), bounded while it is built."""
    return _cut(_REPR.repr(value))


def format_validation_error(error: ValidationError, source: str) -> str:
    known = _field_names(CampaignSpec)
    lines = [f"{source}: invalid spec"]
    errors = error.errors()
    for e in errors[:_MAX_ERRORS_SHOWN]:
        loc = list(e["loc"])
        if len(loc) > 1 and loc[0] == "recipe" and loc[1] in RECIPE_KINDS:
            del loc[1]  # the union's tag: the user wrote recipe.kind, not a path through it
        where = _cut(".".join(str(p) for p in loc)) or "(top level)"
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            hint = difflib.get_close_matches(key, known, n=1)
            lines.append(f"  {where}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        elif e["type"] == "missing":
            lines.append(f"  {where}: required field is missing")
        else:
            lines.append(f"  {where}: {e['msg']} (got {_short_repr(e.get('input'))})")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a spec file; every problem is a SpecError naming the field or file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    raw = read_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping with keys name, store, recipe, ...")
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, str(path))) from None
    return _resolve_files(spec, path.parent)


def _resolve_sources(sources: list, base: Path, where: str) -> list:
    out = []
    for i, source in enumerate(sources):
        if isinstance(source, FileSource):
            file = source.file if source.file.is_absolute() else base / source.file
            if not file.is_file():
                raise SpecError(f"{where}.{i}.file: no such file: {file}")
            source = source.model_copy(update={"file": file})
        out.append(source)
    return out


def _resolve_files(spec: CampaignSpec, base: Path) -> CampaignSpec:
    recipe = spec.recipe
    if isinstance(recipe, LabelRecipe):
        recipe = recipe.model_copy(update={"structures": _resolve_sources(recipe.structures, base, "recipe.structures")})
    else:
        initial = recipe.initial.model_copy(update={"structures": _resolve_sources(
            recipe.initial.structures, base, "recipe.initial.structures")})
        explore = recipe.explore.model_copy(update={"structures": _resolve_sources(
            recipe.explore.structures, base, "recipe.explore.structures")})
        recipe = recipe.model_copy(update={"initial": initial, "explore": explore})
    return spec.model_copy(update={"recipe": recipe})
