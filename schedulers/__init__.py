"""Dask clusters built from a campaign's scheduler settings: local (default) or SLURM.

Nothing here knows the science; ``campaign/`` asks for a cluster and gets a client.
"""

from schedulers.errors import SchedulerError
from schedulers.settings import AdaptSettings, LocalSettings, SchedulerSettings, SlurmSettings

__all__ = ["AdaptSettings", "LocalSettings", "SchedulerError", "SchedulerSettings", "SlurmSettings"]
