"""Preloaded by every local worker process (Dask's ``preload``).

A terminal's Ctrl-C goes to the whole foreground process group, the LocalCluster's worker
processes included. The driver handles it (commits what arrived, closes the cluster); workers
that raised KeyboardInterrupt on their own would only print tracebacks over its one line.
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
