"""The ``label`` recipe: one single-point label per structure, written as frames."""

from __future__ import annotations

import functools
from typing import Literal, Sequence

from pydantic import Field

from campaign.keys import task_key
from campaign.recipe import Recipe, register
from campaign.recipes.structures import load_structures
from campaign.spec import CampaignSpec, RecipeSpec, StructureSource
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.frames import LabeledFrame, frame_blocks
from storage.schema import LABELED
from tasks.labeling import label_batch, labeler_settings_json
from tasks.outcome import Outcome
from tasks.structures import Structure

LABEL_TASK = "label"
LABEL_VERSION = 1


class LabelSpec(RecipeSpec):
    """Label every structure once with the campaign's labeler."""

    kind: Literal["label"] = "label"
    structures: list[StructureSource] = Field(..., min_length=1)
    batch_size: int = Field(8, ge=1, description="structures per task: aim for tasks of a second or more")
    retries: int = Field(2, ge=0, description="resubmissions of a task whose worker was lost")


def label_items(structures: Sequence[Structure], labeler) -> list[WorkItem]:
    """One item per distinct (structure, labeler settings); duplicates collapse to one key."""
    settings = labeler.model_dump(mode="json")
    items: dict[str, WorkItem] = {}
    for structure in structures:
        key = task_key(LABEL_TASK, LABEL_VERSION, {"structure": structure.canonical(), "labeler": settings})
        items.setdefault(key, WorkItem(key, structure))
    return list(items.values())


def labeled_frame_rows(store: CampaignStore, items: Sequence[WorkItem], outcomes: Sequence[Outcome], *,
                       labeler) -> dict:
    settings = labeler_settings_json(labeler)
    frames = [
        LabeledFrame(key=item.key, source=item.payload.tag, labeler=labeler.kind, labeler_settings=settings,
                     numbers=item.payload.numbers, positions_A=item.payload.positions_A,
                     cell_A=item.payload.cell_A, pbc=item.payload.pbc, energy_eV=o.value.energy_eV,
                     forces_eV_per_A=o.value.forces_eV_per_A, stress_eV_per_A3=o.value.stress_eV_per_A3)
        for item, o in zip(items, outcomes)
    ]
    return frame_blocks(frames, atom_start=store.length(LABELED.atoms))


@register
class LabelRecipe(Recipe):
    kind = "label"
    spec = LabelSpec

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        return label_stages(spec)


def label_stages(spec: CampaignSpec) -> list[Stage]:
    recipe = spec.recipe
    items = label_items(load_structures(list(recipe.structures)), spec.labeler)
    labeler = spec.labeler
    return [Stage(
        name=LABEL_TASK,
        items=items,
        run_batch=label_batch,
        kwargs={"labeler": labeler},
        store_rows=functools.partial(labeled_frame_rows, labeler=labeler),
        batch_size=recipe.batch_size,
        retries=recipe.retries,
    )]
