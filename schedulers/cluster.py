"""Start the cluster a campaign asks for, hand back a connected client, and watch its health."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from distributed import Client

from schedulers.dashboard import DashboardPage, dashboard_pages
from schedulers.errors import SchedulerError
from schedulers.local import local_cluster
from schedulers.settings import SchedulerKind, SchedulerSettings
from schedulers.slurm import check_sbatch_accepts, slurm_cluster, squeue_report


@dataclass
class RunningCluster:
    client: Client
    cluster: Any = None
    kind: str = "external"
    has_gpus: bool = False
    worker_start_timeout_s: float = 600.0
    dashboard_host: str | None = None  # where the dashboard listens, when not on every interface
    pages: list[str] = field(default_factory=list)  # routes of extra dashboard pages
    _no_workers_since: float | None = field(default=None, repr=False)

    @classmethod
    def external(cls, client: Client) -> "RunningCluster":
        """A cluster the caller already has: GPU work is tagged if its workers advertise ``GPU``."""
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return cls(client, has_gpus=any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers))

    @property
    def dashboard_link(self) -> str:
        """Dask names the scheduler's host; a dashboard bound to localhost answers on localhost only."""
        link = self.client.dashboard_link
        if self.dashboard_host:
            parts = urlsplit(link)
            link = parts._replace(netloc=f"{self.dashboard_host}:{parts.port}").geturl()
        return link

    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def wait_for_first_worker(self) -> None:
        deadline = time.monotonic() + self.worker_start_timeout_s
        while self.n_workers() == 0:
            if time.monotonic() > deadline:
                raise SchedulerError(f"no worker started within {self.worker_start_timeout_s:.0f} s; "
                                     f"worker jobs: {self._jobs_report()}")
            time.sleep(0.5)

    def check_health(self) -> None:
        """Raise if the cluster has had no worker for longer than worker_start_timeout_s."""
        if self.n_workers() > 0:
            self._no_workers_since = None
            return
        now = time.monotonic()
        if self._no_workers_since is None:
            self._no_workers_since = now
        elif now - self._no_workers_since > self.worker_start_timeout_s:
            raise SchedulerError(f"the cluster has had no worker for {self.worker_start_timeout_s:.0f} s; "
                                 f"worker jobs: {self._jobs_report()}")

    def _jobs_report(self) -> str:
        if self.kind != "slurm":
            return "local workers did not start"
        return squeue_report([job.job_id for job in self.cluster.workers.values() if getattr(job, "job_id", None)])


def _bound_host(address: str) -> str | None:
    """The host of ``host:port`` when it names one interface; None for every interface."""
    host = address.rpartition(":")[0]
    return None if host in ("", "0.0.0.0", "[::]", "*") else host


def _served(cluster: Any, added: list[str]) -> list[str]:
    """The routes of the pages added while the cluster started that its dashboard serves."""
    # the scheduler's HTTP server also runs when Dask could not build its bokeh dashboard: ask the
    # bokeh applications it holds (distributed.dashboard.scheduler.connect adds them)
    http = getattr(getattr(cluster, "scheduler", None), "http_application", None)
    bokeh_apps = [app for app in getattr(http, "applications", []) if hasattr(app, "_applications")]
    return sorted(route for route in added if any(route in app._applications for app in bokeh_apps))


def slurm_job_script(settings: SchedulerSettings, shared_directory: Path) -> str:
    """The script each worker job would run (a scheduler is started and closed, nothing submitted)."""
    cluster = slurm_cluster(settings.slurm, shared_directory)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextlib.contextmanager
def open_cluster(settings: SchedulerSettings, shared_directory: Path,
                 pages: Mapping[str, DashboardPage] | None = None) -> Iterator[RunningCluster]:
    """A started cluster with at least one worker, closed (jobs cancelled) on exit. ``pages``:
    extra dashboard pages by route (schedulers.dashboard)."""
    if settings.kind is SchedulerKind.local:
        with dashboard_pages(pages or {}) as added:
            cluster = local_cluster(settings.local)
        try:
            with Client(cluster) as client:
                yield RunningCluster(client, cluster, "local", has_gpus=settings.has_gpus,
                                     pages=_served(cluster, added))
        finally:
            cluster.close()
        return

    slurm = settings.slurm
    with dashboard_pages(pages or {}) as added:
        cluster = slurm_cluster(slurm, shared_directory)
    try:
        check_sbatch_accepts(cluster.job_script())
        if slurm.adapt is not None:
            cluster.adapt(minimum_jobs=slurm.adapt.minimum_jobs, maximum_jobs=slurm.adapt.maximum_jobs)
        else:
            cluster.scale(jobs=slurm.jobs or 1)
        with Client(cluster) as client:
            running = RunningCluster(client, cluster, "slurm", has_gpus=settings.has_gpus,
                                     worker_start_timeout_s=slurm.worker_start_timeout_s,
                                     dashboard_host=_bound_host(slurm.dashboard_address),
                                     pages=_served(cluster, added))
            yield running
    finally:
        cluster.close()
