"""The local workers' log filter drops shutdown noise and nothing else."""

import inspect
import logging

from distributed import LocalCluster
from distributed.worker import Worker

from schedulers.worker_setup import _ShutdownNoiseFilter

GET_DATA = "failed during get data with %s -> %s"


def _record(msg: str, args: tuple) -> logging.LogRecord:
    return logging.getLogger("distributed.worker").makeRecord("distributed.worker", logging.ERROR, __file__, 1, msg,
                                                              args, None)


def test_the_filter_keys_on_the_message_distributed_logs():
    assert f'"{GET_DATA}"' in inspect.getsource(Worker.get_data)


def test_a_broken_gather_for_the_scheduler_is_dropped_a_peers_is_kept():
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        worker = next(iter(cluster.workers.values()))
        keep = _ShutdownNoiseFilter(worker).filter
        assert not keep(_record(GET_DATA, (worker.address, None)))
        assert keep(_record(GET_DATA, (worker.address, "tcp://127.0.0.1:4321")))
        assert keep(_record("Compute Failed", ()))
        assert keep(_record("Failed to communicate with scheduler during heartbeat.", ()))  # running, not closing
