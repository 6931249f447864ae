"""Fan a stage's pending items out over Dask and fold the outcomes into the store.

The driver is the single writer. Results are committed in batches (data rows, then ledger
rows, then the commit pointer, see storage.store), at most every ``flush_interval_s`` seconds
or ``flush_items`` items, so the store costs little per task and a killed driver loses at most
the results of its last unflushed seconds, which the next launch redoes.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from distributed import Client, as_completed
from tqdm import tqdm

from campaign.keys import batch_key
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.ledger import DONE, FAILED, LedgerEntry, done_keys, ledger_block
from tasks.outcome import Outcome

_INFRASTRUCTURE = ("KilledWorker", "CommClosedError", "FutureCancelledError", "CancelledError")


@dataclass
class StageReport:
    stage: str
    planned: int
    skipped: int  # already done in an earlier launch
    done: int
    failed: int


def _batches(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _task_failure(batch: list[WorkItem], exc: BaseException) -> list[Outcome]:
    """A task that raised out of the task function: its worker died too often, or a bug."""
    kind = "infrastructure" if type(exc).__name__ in _INFRASTRUCTURE else "task"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [Outcome(key=item.key, error=f"{type(exc).__name__}: {exc}", error_kind=kind, traceback=text)
            for item in batch]


class _Committer:
    """Buffers outcomes and writes them as one transaction per flush."""

    def __init__(self, store: CampaignStore, stage: Stage, launch: int):
        self.store, self.stage, self.launch = store, stage, launch
        self.pending: list[tuple[WorkItem, Outcome, str]] = []
        self.done = self.failed = 0

    def add(self, batch: list[WorkItem], outcomes: list[Outcome], task_key: str) -> None:
        by_key = {o.key: o for o in outcomes}
        for item in batch:
            self.pending.append((item, by_key.get(item.key) or Outcome(item.key, error="no outcome returned",
                                                                     error_kind="task"), task_key))

    def flush(self) -> None:
        if not self.pending:
            return
        now = time.time()
        good = [(item, outcome) for item, outcome, _ in self.pending if outcome.ok]
        blocks = dict(self.stage.store_rows(self.store, [i for i, _ in good], [o for _, o in good])
                      if good and self.stage.store_rows else {})
        entries = [LedgerEntry(key=item.key, stage=self.stage.name, status=DONE if o.ok else FAILED,
                               duration_s=o.duration_s, error=o.error, error_kind=o.error_kind,
                               traceback=o.traceback, task_key=task_key, worker=o.worker,
                               launch=self.launch, finished_unix=now)
                   for item, o, task_key in self.pending]
        blocks["ledger"] = ledger_block(entries)
        self.store.append(blocks)
        self.done += len(good)
        self.failed += len(self.pending) - len(good)
        self.pending.clear()


def run_stage(client: Client, store: CampaignStore, stage: Stage, launch: int, *,
              progress: bool = True, flush_interval_s: float = 1.0, flush_items: int = 2000,
              health_check: Callable[[], None] | None = None, health_interval_s: float = 5.0) -> StageReport:
    """Run every item of the stage that the ledger does not already mark done."""
    finished = done_keys(store)
    pending = [item for item in stage.items if item.key not in finished]
    report = StageReport(stage.name, len(stage.items), len(stage.items) - len(pending), 0, 0)
    if not pending:
        return report

    batches = _batches(pending, stage.batch_size)
    task_keys = [batch_key(stage.name, [i.key for i in b]) for b in batches]
    futures = client.map(stage.run_batch, [[i.key for i in b] for b in batches],
                         [[i.payload for i in b] for b in batches], key=task_keys, retries=stage.retries,
                         resources=dict(stage.resources) if stage.resources else None, pure=False,
                         **stage.kwargs)
    batch_of = dict(zip(task_keys, batches))
    committer = _Committer(store, stage, launch)
    bar = tqdm(total=len(pending), desc=stage.name, unit="item", disable=not progress, mininterval=0.5)
    last_flush = last_health = time.monotonic()
    results = as_completed(futures, with_results=True, raise_errors=False)
    del futures  # as_completed holds them; each is released once consumed
    try:
        while not results.is_empty():
            arrived = results.next_batch(block=False)
            for future, result in arrived:
                batch = batch_of.pop(future.key)
                outcomes = _task_failure(batch, result) if isinstance(result, BaseException) else result
                committer.add(batch, outcomes, future.key)
                bar.update(len(batch))
                future.release()
            now = time.monotonic()
            if len(committer.pending) >= flush_items or (committer.pending and now - last_flush >= flush_interval_s):
                committer.flush()
                last_flush = now
            if not arrived:
                if health_check is not None and now - last_health >= health_interval_s:
                    health_check()
                    last_health = now
                time.sleep(0.02)
        committer.flush()
    except BaseException:
        # Ctrl-C, a cluster that lost its workers, a failed write: keep what already arrived (a
        # retried append rewrites the same rows), and let the relaunch do the rest.
        with contextlib.suppress(Exception):
            committer.flush()
        raise
    finally:
        bar.close()
    report.done, report.failed = committer.done, committer.failed
    return report
