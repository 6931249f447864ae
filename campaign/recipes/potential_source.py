"""Where a recipe's potential comes from: a committee iteration of an active-learning store, or
potential files. Read and checked at plan time, before any store is touched; the files travel to
the workers as bytes (tasks.potential.PotentialFiles)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Literal

from pydantic import Field, model_validator

from campaign.errors import SpecError
from storage import CampaignStore
from storage.errors import StoreError
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel


class PotentialSource(StrictModel):
    """A committee iteration of an active-learning store, or potential files."""

    relative_files: ClassVar[tuple[str, ...]] = ("files",)

    store: Path | None = Field(None, description="an active-learning store (relative to the working directory, "
                               "as the spec's own store)")
    iteration: int | Literal["last"] = "last"
    member: int | Literal["committee"] = Field(0, description="one member, or the committee mean (members × "
                                              "the cost)")
    files: list[Path] | None = Field(None, min_length=1, description="potential files (relative to the spec); "
                                     "several are averaged as a committee")
    dtype: Literal["float64", "float32"] = "float64"
    device: str = Field("auto", description="auto: the worker's GPU if it has one")

    @model_validator(mode="after")
    def _one_source(self) -> "PotentialSource":
        if (self.store is None) == (self.files is None):
            raise ValueError("give the potential as either store (an active-learning store) or files")
        return self


def _store_models(source: PotentialSource) -> tuple[list[bytes], str]:
    from campaign.recipes.active_learning import AL_MODELS

    try:
        store = CampaignStore.open(source.store)
    except StoreError as error:
        raise SpecError(f"recipe.potential.store: {error}") from None
    with store:
        if AL_MODELS.name not in store.tables or not store.length(AL_MODELS):
            raise SpecError(f"recipe.potential.store: {source.store} holds no trained committee "
                            "(is it an active-learning store that finished an iteration?)")
        models = store.read(AL_MODELS, ["iteration", "member", "path"])
    iterations = sorted(set(int(i) for i in models["iteration"]))
    iteration = iterations[-1] if source.iteration == "last" else source.iteration
    if iteration not in iterations:
        raise SpecError(f"recipe.potential.iteration: {source.store} has iterations {iterations}, not {iteration}")
    rows = {int(m): str(p) for i, m, p in zip(models["iteration"], models["member"], models["path"]) if i == iteration}
    members = sorted(rows) if source.member == "committee" else [source.member]
    missing = [m for m in members if m not in rows]
    if missing:
        raise SpecError(f"recipe.potential.member: iteration {iteration} of {source.store} has members "
                        f"{sorted(rows)}, not {missing}")
    paths = [Path(source.store) / rows[m] for m in members]
    return [p.read_bytes() for p in paths], f"{source.store} iteration {iteration} member(s) {members}"


def potential_files(source: PotentialSource, check: Callable[[object, str], None] | None = None) -> PotentialFiles:
    """The potential's files, checked: each loads, and passes ``check(model, where)`` (which raises
    SpecError naming what the recipe needs, e.g. a short-range repulsion)."""
    from tasks.potential import load_potential

    if source.store is not None:
        models, where = _store_models(source)
    else:
        try:
            models = [Path(f).read_bytes() for f in source.files]
        except OSError as error:
            raise SpecError(f"recipe.potential.files: cannot read {error.filename}: {error.strerror}") from None
        where = ", ".join(str(f) for f in source.files)
    for data in models:
        try:
            model = load_potential(data)
        except ValueError as error:
            raise SpecError(f"recipe.potential: {where}: {error}") from None
        if check is not None:
            check(model, where)
    return PotentialFiles(tuple(models), source.dtype, source.device)
