"""``campaign launch``: validate, lock the store, start the cluster, run every stage, report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from distributed import Client

from campaign.recipes import label_stages
from campaign.recipes.active_learning import initial_stages, run_active_learning
from campaign.runner import StageReport, record_plan, run_stage
from campaign.spec import ActiveLearningRecipe, CampaignSpec
from campaign.stage import Stage
from schedulers.cluster import RunningCluster, open_cluster
from storage import CampaignStore


@dataclass
class LaunchReport:
    store: Path
    launch: int
    stages: list[StageReport]
    frames: int


def build_stages(spec: CampaignSpec) -> list[Stage]:
    """Every input is read and checked here, before the store is touched. An active-learning
    campaign plans its initial data here; later stages are planned as the loop makes them."""
    if isinstance(spec.recipe, ActiveLearningRecipe):
        return initial_stages(spec)
    return label_stages(spec)


@contextlib.contextmanager
def _cluster(spec: CampaignSpec, client: Client | None) -> Iterator[RunningCluster]:
    if client is not None:
        yield RunningCluster.external(client)
    else:
        with open_cluster(spec.scheduler, Path(spec.store)) as running:
            yield running


def launch(spec: CampaignSpec, *, client: Client | None = None, progress: bool = True,
           say: Callable[[str], None] = print) -> LaunchReport:
    """Run (or resume) a campaign. Pass ``client`` to use a cluster you already have."""
    stages = build_stages(spec)
    with CampaignStore.open_for_writing(spec.store, spec.name) as store:
        launch_index = store.record_launch({"spec": spec.model_dump(mode="json"),
                                            "scheduler": spec.scheduler.kind.value})
        record_plan(store, stages)
        say(f"Store: {Path(spec.store).resolve()} (launch {launch_index})")
        with _cluster(spec, client) as running:
            say(f"Dashboard: {running.dashboard_link}")
            running.wait_for_first_worker()
            if isinstance(spec.recipe, ActiveLearningRecipe):
                run_active_learning(spec, store, running.client, launch_index, stages, progress=progress,
                                    health_check=running.check_health, gpu=running.has_gpus, say=say)
                reports = []
            else:
                reports = [run_stage(running.client, store, stage, launch_index, progress=progress,
                                     health_check=running.check_health) for stage in stages]
        return LaunchReport(Path(spec.store), launch_index, reports, store.length("frames"))
