"""``campaign launch``: validate, lock the store, start the cluster, run the recipe, report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from distributed import Client

from campaign.page.document import ROUTE, CampaignPage
from campaign.recipe import RunContext, recipe_for
from campaign.runner import StageReport, record_plan
from campaign.spec import CampaignSpec
from campaign.stage import Stage
from schedulers.cluster import RunningCluster, open_cluster
from schedulers.dashboard import page_link
from storage import CampaignStore
from storage.schema import LABELED
from tasks.cell_validity import cell_problems


@dataclass
class LaunchReport:
    store: Path
    launch: int
    stages: list[StageReport]
    frames: int


def build_stages(spec: CampaignSpec) -> list[Stage]:
    """Every input is read and checked here, before the store is touched. Iterative recipes plan
    their first stages here and the later ones as their loop makes them."""
    return recipe_for(spec.recipe.kind).plan(spec)


def warn_about_cells(spec: CampaignSpec, stages: list[Stage], say: Callable[[str], None]) -> None:
    """Cells the labeler's Brillouin-zone sampling gets wrong (tasks.cell_validity): a warning,
    since a test or a deliberate study may want them."""
    for problem in cell_problems(recipe_for(spec.recipe.kind).cells_to_label(spec, stages), spec.labeler):
        say(f"warning: {problem}")


@contextlib.contextmanager
def _cluster(spec: CampaignSpec, client: Client | None) -> Iterator[RunningCluster]:
    if client is not None:
        yield RunningCluster.external(client)
    else:
        page = CampaignPage(spec.store)
        try:
            with open_cluster(spec.scheduler, Path(spec.store), pages={ROUTE: page.dask_document}) as running:
                yield running
        finally:
            page.close()


def launch(spec: CampaignSpec, *, client: Client | None = None, progress: bool = True,
           say: Callable[[str], None] = print) -> LaunchReport:
    """Run (or resume) a campaign. Pass ``client`` to use a cluster you already have."""
    recipe = recipe_for(spec.recipe.kind)
    stages = build_stages(spec)
    warn_about_cells(spec, stages, say)
    with CampaignStore.open_for_writing(spec.store, spec.name, recipe.tables) as store:
        launch_index = store.record_launch({"spec": spec.model_dump(mode="json"),
                                            "scheduler": spec.scheduler.kind.value})
        planned = record_plan(store, stages)
        say(f"Store: {Path(spec.store).resolve()} (launch {launch_index})")
        with _cluster(spec, client) as running:
            say(f"Dashboard: {running.dashboard_link}")
            for route in running.pages:
                say(f"Campaign page: {page_link(running.dashboard_link, route)}")
            running.wait_for_first_worker()
            context = RunContext(spec, running.client, store, launch_index, progress=progress,
                                 health_check=running.check_health, gpu=running.has_gpus, say=say, planned=planned)
            reports = recipe.run(context, stages)
        return LaunchReport(Path(spec.store), launch_index, reports, store.length(LABELED.frames))
