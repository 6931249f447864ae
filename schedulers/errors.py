class SchedulerError(Exception):
    """The cluster could not be started or lost all its workers (a refused job, no nodes)."""
