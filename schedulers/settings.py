"""Scheduler settings, validated once where the spec is read (unknown keys refused)."""

from __future__ import annotations

import re
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SchedulerKind(str, Enum):
    local = "local"
    slurm = "slurm"


class StrictModel(BaseModel):
    """The strict base of the spec (tasks/settings.py), repeated here because schedulers/ may not
    import tasks/ (nor tasks/ schedulers/): unknown keys refused, values frozen once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalSettings(StrictModel):
    """A distributed.LocalCluster on this machine: one single-threaded worker process per core."""

    workers: int | None = Field(None, ge=1, description="worker processes; default: the number of cores")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"
    gpus: int = Field(0, ge=0, description="GPUs on this machine to advertise as worker resources")
    # Bound to localhost: a laptop's dashboard is nobody else's business.
    dashboard_address: str = "127.0.0.1:8787"
    # On by default: any process of any user on this host can reach 127.0.0.1, and a Dask scheduler
    # runs whatever function a connected client sends, as the user who launched it. A login node is
    # shared. TLS with a certificate made for this launch (held in memory) shuts them out (its cost:
    # README, "Who can reach the cluster").
    tls: bool = True


class AdaptSettings(StrictModel):
    minimum_jobs: int = Field(1, ge=0)
    maximum_jobs: int = Field(..., ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "AdaptSettings":
        if self.minimum_jobs > self.maximum_jobs:
            raise ValueError(f"minimum_jobs ({self.minimum_jobs}) exceeds maximum_jobs ({self.maximum_jobs})")
        return self


_DURATION = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2}):(\d{2})$")


def walltime_seconds(walltime: str) -> int:
    """SLURM's [D-]HH:MM:SS as seconds."""
    match = _DURATION.match(walltime)
    if not match:
        raise ValueError(f"walltime must look like HH:MM:SS or D-HH:MM:SS, got {walltime!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class SlurmSettings(StrictModel):
    """Worker jobs submitted with sbatch through dask-jobqueue's SLURMCluster."""

    queue: str | None = Field(None, description="partition (#SBATCH -p)")
    account: str | None = Field(None, description="#SBATCH -A")
    cores: int = Field(1, ge=1, description="CPU cores per job")
    processes: int | None = Field(None, ge=1, description="worker processes per job; default: one per core")
    memory: str = Field("4GB", description="memory per job")
    walltime: str = "01:00:00"
    jobs: int | None = Field(None, ge=1, description="fixed number of worker jobs (default 1 unless adapt is set)")
    adapt: AdaptSettings | None = None
    gpus_per_job: int = Field(0, ge=0, description="adds --gres=gpu:N and worker resources GPU")
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list, description="e.g. module load vasp")
    # Workers retire before the walltime kills them, staggered so they do not all leave at once;
    # "auto": 5 minutes before walltime (none for walltimes under 10 minutes).
    worker_lifetime: str | None = "auto"
    lifetime_stagger: str = "2m"
    tls: bool = True
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = Field(None, description="default: <store>/slurm-logs")
    python: str | None = Field(None, description="python on the compute nodes; default: this one")
    # Where the driver runs (the README's ``ssh -L 8787:localhost:8787 login-node`` reaches it), not
    # on every interface of a shared login node; workers do not need the dashboard.
    dashboard_address: str = "127.0.0.1:8787"
    worker_start_timeout_s: float = Field(600.0, gt=0, description="fail if no worker has started by then")

    @model_validator(mode="after")
    def _consistent(self) -> "SlurmSettings":
        walltime_seconds(self.walltime)
        if self.jobs is not None and self.adapt is not None:
            raise ValueError("set either jobs (fixed) or adapt (minimum_jobs/maximum_jobs), not both")
        processes = self.processes or self.cores
        if self.cores % processes:
            raise ValueError(f"cores ({self.cores}) must be a multiple of processes ({processes})")
        if self.gpus_per_job and self.gpus_per_job % processes:
            raise ValueError(f"gpus_per_job ({self.gpus_per_job}) must be a multiple of processes ({processes})")
        return self

    def resolved_lifetime(self) -> str | None:
        if self.worker_lifetime != "auto":
            return self.worker_lifetime
        total = walltime_seconds(self.walltime)
        return f"{(total - 300) // 60}m" if total >= 600 else None


class SchedulerSettings(StrictModel):
    kind: SchedulerKind = SchedulerKind.local
    local: LocalSettings = LocalSettings()
    slurm: SlurmSettings = SlurmSettings()

    @property
    def has_gpus(self) -> bool:
        """Whether the workers of this cluster advertise the ``GPU`` resource."""
        return (self.slurm.gpus_per_job if self.kind == SchedulerKind.slurm else self.local.gpus) > 0
