"""The campaign spec: a YAML file parsed once into typed, frozen models (unknown keys refused)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterator, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from campaign.errors import SpecError
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
    supercell: tuple[int, int, int] = (1, 1, 1)
    count: int = Field(1, ge=1)
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


class CampaignSpec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    store: Path = Field(..., description="store directory; relative paths are taken from the working directory")
    scheduler: SchedulerSettings = SchedulerSettings()
    labeler: Labeler = TbliteLabeler()
    recipe: LabelRecipe

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


def format_validation_error(error: ValidationError, source: str) -> str:
    known = _field_names(CampaignSpec)
    lines = [f"{source}: invalid spec"]
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            hint = difflib.get_close_matches(key, known, n=1)
            lines.append(f"  {where}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        elif e["type"] == "missing":
            lines.append(f"  {where}: required field is missing")
        else:
            lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a spec file; every problem is a SpecError naming the field or file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping with keys name, store, recipe, ...")
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, str(path))) from None
    return _resolve_files(spec, path.parent)


def _resolve_files(spec: CampaignSpec, base: Path) -> CampaignSpec:
    sources = []
    for i, source in enumerate(spec.recipe.structures):
        if isinstance(source, FileSource):
            file = source.file if source.file.is_absolute() else base / source.file
            if not file.is_file():
                raise SpecError(f"recipe.structures.{i}.file: no such file: {file}")
            source = source.model_copy(update={"file": file})
        sources.append(source)
    recipe = spec.recipe.model_copy(update={"structures": sources})
    return spec.model_copy(update={"recipe": recipe})
