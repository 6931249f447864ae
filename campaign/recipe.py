"""What a recipe is, the context it runs in, and the registry that finds recipes by ``kind``.

A recipe kind is one module (``campaign/recipes/<kind>.py`` for the built-in ones) holding a
``Recipe`` subclass that owns its spec model, its plan and run, its store tables, its rows in
``campaign status``, its figures in ``campaign report`` and its panels on the live campaign page,
and registers it. ``launch``, ``status``, ``report``, the page and the spec parser find it here
by ``kind``; the core never names one.
Recipes from other packages are found through the ``campaign.recipes`` entry-point group (each
entry point names a module that registers its recipe when imported).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

from campaign.errors import SpecError
from storage.tables import Table

if TYPE_CHECKING:
    from distributed import Client

    from campaign.page.panel import Panel
    from campaign.runner import StageReport, StageRun
    from campaign.spec import CampaignSpec, RecipeSpec
    from campaign.stage import Stage
    from storage import CampaignStore
    from tasks.structures import Structure


@dataclass
class RunContext:
    """Everything a running recipe may use: the cluster's client, the open store, this launch."""

    spec: "CampaignSpec"
    client: "Client"
    store: "CampaignStore"
    launch: int
    progress: bool = True
    health_check: Callable[[], None] | None = None
    gpu: bool = False  # the cluster's workers advertise the GPU resource
    say: Callable[[str], None] = print
    planned: set[str] | None = field(default=None, repr=False)  # the plan's keys, read once per launch

    def start(self, stage: "Stage") -> "StageRun":
        """Plan the stage's items (what ``status`` counts as pending) and submit the pending ones."""
        from campaign.runner import StageRun, record_plan

        self.planned = record_plan(self.store, [stage], self.planned)
        return StageRun(self.client, self.store, stage, self.launch, progress=self.progress)

    def run(self, stage: "Stage", quorum: float = 1.0, also: Sequence["StageRun"] = ()) -> "StageRun":
        """Start the stage and wait for ``quorum`` of its items (``also``: earlier runs whose
        stragglers are committed meanwhile)."""
        run = self.start(stage)
        run.wait(quorum, health_check=self.health_check, also=also)
        return run


class Recipe:
    """Subclass per kind: set ``kind``, ``spec`` and ``tables``, write ``plan``; the rest is optional."""

    kind: ClassVar[str]
    spec: ClassVar[type["RecipeSpec"]]
    tables: ClassVar[tuple[Table, ...]] = ()  # declared in the store by every launch
    labels: ClassVar[bool] = True  # False: the recipe never runs the labeler (a potential does its work)

    def plan(self, spec: "CampaignSpec") -> list["Stage"]:
        """Read and check every input (before the store is touched) and return the first stages."""
        raise NotImplementedError

    def run(self, context: RunContext, stages: Sequence["Stage"]) -> list["StageReport"]:
        """Run the planned stages (one after the other by default); iterative recipes override."""
        return [context.run(stage).report for stage in stages]

    def cells_to_label(self, spec: "CampaignSpec", stages: Sequence["Stage"]) -> list["Structure"]:
        """The cells the labeler will see, for the sampling rule (tasks.cell_validity) that launch
        checks: every structure planned in ``stages``; recipes that label what they make later
        (exploration snapshots) add the cells those come from. A recipe that never labels: none."""
        from tasks.structures import Structure

        if not self.labels:
            return []
        return [item.payload for stage in stages for item in stage.items if isinstance(item.payload, Structure)]

    def status(self, store: "CampaignStore") -> dict:
        """The recipe's own sections of ``campaign status --json``."""
        return {}

    def format_status(self, status: dict) -> list[str]:
        """Text lines for those sections."""
        return []

    def report(self, store: "CampaignStore", out_dir: Path) -> list[Path]:
        """Write the recipe's figures into ``out_dir``; returns their paths."""
        raise ValueError(f"recipe {self.kind!r} draws no report")

    def panels(self) -> list["Panel"]:
        """The recipe's own boxes on the live campaign page (campaign.page), after the stages and
        failures every page has."""
        return []


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: type[Recipe]) -> type[Recipe]:
    """Register a recipe class by its kind (usable as a class decorator)."""
    _REGISTRY[recipe.kind] = recipe()
    return recipe


def _load_known() -> None:
    importlib.import_module("campaign.recipes")  # the built-in recipes register on import
    for entry in entry_points(group="campaign.recipes"):
        importlib.import_module(entry.value.split(":")[0])


def recipe_for(kind: str) -> Recipe:
    if kind not in _REGISTRY:
        _load_known()
    if kind not in _REGISTRY:
        raise SpecError(f"unknown recipe kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def known_kinds() -> list[str]:
    _load_known()
    return sorted(_REGISTRY)


def store_recipe_kind(store: "CampaignStore") -> str:
    """The recipe kind the store's last launch ran (stores record the spec of each launch)."""
    return store.attrs.get("spec", {}).get("recipe", {}).get("kind", "label")
