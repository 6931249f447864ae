"""Dask settings for campaigns of second-long tasks on busy nodes.

Measured on 2 cores with two tblite workers (scripts/bench_overhead.py): the workers' 10 ms
statistical profiler, the 500 ms system monitor and the 20 ms event-loop tick together took
about 3% of each core; parallel efficiency rose from 0.88 to 0.91 without them. The dashboard
still shows tasks, progress and memory; only its Profile page stays empty.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import dask

CAMPAIGN_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "200ms",
}


@contextlib.contextmanager
def campaign_dask_config() -> Iterator[None]:
    """Apply while the scheduler and nannies are built: nannies hand their config to workers."""
    with dask.config.set(CAMPAIGN_DASK_CONFIG):
        yield


def job_script_exports() -> list[str]:
    """The same settings for dask-worker processes in batch jobs, as environment variables."""
    exports = []
    for key, value in CAMPAIGN_DASK_CONFIG.items():
        name = "DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split("."))
        exports.append(f'export {name}="{value}"')
    return exports
