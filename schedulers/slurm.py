"""SLURM worker jobs through dask-jobqueue, with a pre-flight check that sbatch accepts them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from schedulers.errors import SchedulerError
from schedulers.settings import SlurmSettings
from schedulers.tuning import campaign_dask_config, job_script_exports

THREAD_ENV = ["export OMP_NUM_THREADS=1", "export MKL_NUM_THREADS=1", "export OPENBLAS_NUM_THREADS=1"]


def worker_extra_args(settings: SlurmSettings) -> list[str]:
    args = []
    lifetime = settings.resolved_lifetime()
    if lifetime:
        args += ["--lifetime", lifetime, "--lifetime-stagger", settings.lifetime_stagger]
    if settings.gpus_per_job:
        processes = settings.processes or settings.cores
        args += ["--resources", f"GPU={settings.gpus_per_job // processes}"]
    return args


def slurm_cluster(settings: SlurmSettings, shared_directory: Path):
    """A SLURMCluster (scheduler started here, no job submitted yet).

    ``shared_directory`` must be visible from the compute nodes: temporary TLS certificates for
    the workers are written there (mode 0700) and job logs go below it by default.
    """
    from dask_jobqueue import SLURMCluster

    # dask-jobqueue writes the workers' temporary certificates here and deletes them itself.
    security_dir = shared_directory / ".dask-security"
    security_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(security_dir, 0o700)
    directives = list(settings.job_extra_directives)
    if settings.gpus_per_job:
        directives.append(f"--gres=gpu:{settings.gpus_per_job}")
    with campaign_dask_config():
        cluster = SLURMCluster(
            queue=settings.queue,
            account=settings.account,
            cores=settings.cores,
            processes=settings.processes or settings.cores,
            memory=settings.memory,
            walltime=settings.walltime,
            job_extra_directives=directives,
            job_script_prologue=THREAD_ENV + job_script_exports() + list(settings.job_script_prologue),
            worker_extra_args=worker_extra_args(settings),
            interface=settings.interface,
            local_directory=settings.local_directory,
            log_directory=settings.log_directory or str(shared_directory / "slurm-logs"),
            python=settings.python or sys.executable,
            job_name="campaign-worker",
            security=True if settings.tls else None,
            shared_temp_directory=str(security_dir),
            scheduler_options={"dashboard_address": settings.dashboard_address},
            silence_logs=logging.ERROR,
        )
    return cluster


def check_sbatch_accepts(job_script: str) -> None:
    """``sbatch --test-only``: the job is validated but not queued. A refused job (more memory
    than any node has, unknown partition or account) becomes an error now, not a silent hang."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(job_script)
        path = f.name
    try:
        proc = subprocess.run(["sbatch", "--test-only", path], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SchedulerError("sbatch not found: is this a SLURM login node? (use --scheduler local)") from None
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        raise SchedulerError(f"SLURM refused the worker job (sbatch --test-only exit {proc.returncode}): {message}\n"
                             "Check the slurm section of the spec (queue, account, cores, memory, walltime, "
                             "gpus_per_job); `campaign launch SPEC --dry-run --scheduler slurm` prints the job script.")


def squeue_report(job_ids: list[str]) -> str:
    if not job_ids:
        return "no worker job was submitted"
    proc = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %r"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() or f"jobs {', '.join(job_ids)} are no longer in the queue (see the job logs)"
