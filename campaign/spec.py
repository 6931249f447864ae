"""The campaign spec: a YAML file parsed once into typed, frozen models (unknown keys refused)."""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union, get_args

from pydantic import (BaseModel, Discriminator, Field, SerializeAsAny, Tag, ValidationError,
                      field_validator, model_validator)

from campaign.errors import SpecError
from campaign.spec_input import read_yaml
from schedulers.settings import SchedulerKind, SchedulerSettings
from tasks.labeling import Labeler, TbliteLabeler
from tasks.settings import StrictModel


class FileSource(StrictModel):
    """Structures from any file ASE reads (extxyz, POSCAR, CIF, LAMMPS data, ...)."""

    file: Path = Field(..., description="relative paths are taken from the spec file's folder")
    index: str = Field(":", description="ASE index: ':' for all frames, '0', '-10:'")
    format: str | None = Field(None, description="ASE format name when the extension does not tell")
    tag: str | None = Field(None, description="source tag stored with each frame; default: the file name")


class GenerateSource(StrictModel):
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


class DeepmdSource(StrictModel):
    """Structures from DeePMD-kit data, read with dpdata (``pip install 'mlip-campaign[deepmd]'``)."""

    deepmd: Path = Field(..., description="a system folder (type.raw, set.*), a folder holding systems at any "
                         "depth, or for deepmd/hdf5 the file; relative paths are taken from the spec file's folder")
    format: Literal["deepmd/npy", "deepmd/raw", "deepmd/hdf5"] = "deepmd/npy"
    index: str = Field(":", description="ASE index over the frames of all systems, in path order")
    tag: str | None = Field(None, description="source tag stored with each frame; default: the folder name")


def _source_kind(value: Any) -> str:
    """A source with a ``file`` is a file source, one with ``deepmd`` a DeePMD source, any other a
    generated one: errors then speak of the one the user meant, not of all three."""
    def has(key: str, model: type) -> bool:
        return isinstance(value, model) or (isinstance(value, dict) and key in value)

    if has("file", FileSource):
        return "file-source"
    return "deepmd-source" if has("deepmd", DeepmdSource) else "generated-source"


_SOURCE_TAGS = ("file-source", "deepmd-source", "generated-source")
StructureSource = Annotated[Union[Annotated[FileSource, Tag("file-source")],
                                  Annotated[DeepmdSource, Tag("deepmd-source")],
                                  Annotated[GenerateSource, Tag("generated-source")]], Discriminator(_source_kind)]


class RecipeSpec(StrictModel):
    """The ``recipe`` section of a spec; each recipe kind subclasses it (campaign/recipe.py)."""

    kind: str


def _recipe_spec(value):
    """The recipe section validated by its kind's model (kind ``label`` if none is given)."""
    from campaign.recipe import recipe_for

    if not isinstance(value, dict):
        return value
    kind = value.get("kind", "label")
    try:
        model = recipe_for(str(kind)).spec
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    return model.model_validate({**value, "kind": kind})


class CampaignSpec(StrictModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    store: Path = Field(..., description="store directory; relative paths are taken from the working directory")
    scheduler: SchedulerSettings = SchedulerSettings()
    labeler: Labeler = TbliteLabeler()
    recipe: SerializeAsAny[RecipeSpec]

    _recipe_by_kind = field_validator("recipe", mode="before")(_recipe_spec)

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


def format_validation_error(error: ValidationError, source: str, recipe: type | None = None) -> str:
    known = _field_names(CampaignSpec) | (_field_names(recipe) if recipe is not None else set())
    lines = [f"{source}: invalid spec"]
    errors = error.errors()
    for e in errors[:_MAX_ERRORS_SHOWN]:
        where = _cut(".".join(str(p) for p in e["loc"] if p not in _SOURCE_TAGS)) or "(top level)"
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
        raise SpecError(format_validation_error(exc, str(path), _recipe_model(raw.get("recipe")))) from None
    return spec.model_copy(update={"recipe": _resolved(spec.recipe, path.parent, "recipe")})


def _recipe_model(section: Any) -> type | None:
    """The recipe's spec model, for "did you mean" hints (None if its kind is unknown)."""
    from campaign.recipe import recipe_for

    try:
        return recipe_for(str(section.get("kind", "label"))).spec if isinstance(section, dict) else None
    except SpecError:
        return None


def _resolved(value: Any, base: Path, where: str) -> Any:
    """``value`` with the path of every file or DeePMD source in it (at any depth of models and lists),
    and of the fields a model lists in its ``relative_files``, made absolute against ``base`` and
    checked to exist; unchanged parts are returned as they are."""
    if isinstance(value, FileSource):
        return value.model_copy(update={"file": _existing(value.file, base, f"{where}.file", "file")})
    if isinstance(value, DeepmdSource):
        kind = "file" if value.format == "deepmd/hdf5" else "folder"
        return value.model_copy(update={"deepmd": _existing(value.deepmd, base, f"{where}.deepmd", kind)})
    if isinstance(value, BaseModel):
        updates = {}
        for name in getattr(type(value), "relative_files", ()):  # a model's own file fields
            old = getattr(value, name)
            if isinstance(old, (list, tuple)):
                updates[name] = type(old)(_existing(p, base, f"{where}.{name}.{i}", "file") for i, p in enumerate(old))
            elif old is not None:
                updates[name] = _existing(old, base, f"{where}.{name}", "file")
        for name in [n for n in type(value).model_fields if n not in updates]:
            old = getattr(value, name)
            new = _resolved(old, base, f"{where}.{name}")
            if new is not old:
                updates[name] = new
        return value.model_copy(update=updates) if updates else value
    if isinstance(value, (list, tuple)):
        items = [_resolved(v, base, f"{where}.{i}") for i, v in enumerate(value)]
        return type(value)(items) if any(a is not b for a, b in zip(items, value)) else value
    return value


def _existing(path: Path, base: Path, where: str, kind: Literal["file", "folder"]) -> Path:
    """``path`` made absolute against ``base``; a SpecError naming ``where`` unless it is a ``kind``."""
    path = path if path.is_absolute() else base / path
    if not (path.is_file() if kind == "file" else path.is_dir()):
        raise SpecError(f"{where}: no such {kind}: {path}")
    return path
