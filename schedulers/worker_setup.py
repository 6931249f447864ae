"""Preloaded by every local worker process (Dask's ``preload``).

A terminal's Ctrl-C goes to the whole foreground process group, the LocalCluster's worker
processes included. The driver handles it (commits what arrived, closes the cluster); workers
that raised KeyboardInterrupt on their own would only print tracebacks over its one line.

Local workers also share the driver's stderr. A worker that is closing shuts its connection pool
while a heartbeat may still be in flight on it; distributed then logs that heartbeat's failure as
an ERROR with a traceback, which would bury the driver's one line about the shutdown. Likewise a
result the scheduler was gathering for the driver when the driver closed it: the worker logs the
broken transfer, though the side that asked (the driver) reports it, and the worker serves on.
"""

from __future__ import annotations

import logging
import signal
import threading

from distributed.core import Status

_CLOSING = (Status.closing, Status.closing_gracefully, Status.closed)


class _ShutdownNoiseFilter(logging.Filter):
    """Drops the heartbeat failure of a worker that is itself closing, and the failure of a transfer
    to the scheduler (a gather for the client: requester None; peers name themselves, and their
    failed transfers stay logged); keeps every other record."""

    def __init__(self, worker):
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "failed during get data with %s -> %s" and record.args and record.args[-1] is None:
            return False
        if self.worker.status not in _CLOSING:
            return True
        return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_ShutdownNoiseFilter(worker))
