"""The default: a LocalCluster of single-threaded worker processes on this machine."""

from __future__ import annotations

import logging
import os

from distributed import LocalCluster
from distributed.security import Security

from schedulers.settings import LocalSettings
from schedulers.tuning import campaign_dask_config


def local_cluster(settings: LocalSettings) -> LocalCluster:
    # Labelers are OpenMP codes: two threads per process on a busy node ran tblite 3-10x slower.
    # Dask's nanny already exports OMP_NUM_THREADS=1 etc. to worker processes (pre-spawn-environ).
    kwargs = dict(
        n_workers=settings.workers or os.cpu_count() or 1,
        threads_per_worker=settings.threads_per_worker,
        processes=True,
        memory_limit=settings.memory_limit,
        dashboard_address=settings.dashboard_address,
        host="127.0.0.1",
        silence_logs=logging.ERROR,
        preload=["schedulers.worker_setup"],  # workers leave Ctrl-C to the driver
    )
    if settings.gpus:
        kwargs["resources"] = {"GPU": settings.gpus}
    if settings.tls:
        kwargs.update(security=Security.temporary(), protocol="tls://")
    with campaign_dask_config():
        return LocalCluster(**kwargs)
