"""Fan a stage's pending items out over Dask and fold the outcomes into the store.

The driver is the single writer. Results are committed in batches (data rows, then ledger
rows, then the commit pointer, see storage.store), at most every ``flush_interval_s`` seconds
or ``flush_items`` items, so the store costs little per task and a killed driver loses at most
the results of its last unflushed seconds, which the next launch redoes.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

from distributed import Client, as_completed
from tqdm import tqdm

from campaign.keys import batch_key
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.ledger import DONE, FAILED, LedgerEntry, done_keys, ledger_block, plan_block, planned_keys
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
        self.resources = ",".join(f"{name}={amount:g}" for name, amount in sorted((stage.resources or {}).items()))
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
                               resources=self.resources, launch=self.launch, finished_unix=now)
                   for item, o, task_key in self.pending]
        blocks["ledger"] = ledger_block(entries)
        self.store.append(blocks)
        self.done += len(good)
        self.failed += len(self.pending) - len(good)
        self.pending.clear()


class StageRun:
    """A stage's pending items submitted to Dask; results are committed as they arrive.

    ``wait(quorum)`` returns once that fraction of the submitted items has an outcome; the rest
    keep running, and ``poll()`` (called while the driver waits on other work) commits them as
    they come in. This is how an active-learning iteration moves on without its stragglers."""

    def __init__(self, client: Client, store: CampaignStore, stage: Stage, launch: int, *, progress: bool = True,
                 flush_interval_s: float = 1.0, flush_items: int = 2000):
        finished = done_keys(store)
        pending = [item for item in stage.items if item.key not in finished]
        self.report = StageReport(stage.name, len(stage.items), len(stage.items) - len(pending), 0, 0)
        self.n_submitted = len(pending)
        self.flush_interval_s, self.flush_items = flush_interval_s, flush_items
        self.committer = _Committer(store, stage, launch)
        self.bar = tqdm(total=len(pending), desc=stage.name, unit="item", disable=not progress or not pending,
                        mininterval=0.5)
        self.last_flush = time.monotonic()
        self.batch_of: dict[str, list[WorkItem]] = {}
        self.results = None
        if not pending:
            return
        batches = _batches(pending, stage.batch_size)
        task_keys = [batch_key(stage.name, [i.key for i in b]) for b in batches]
        futures = client.map(stage.run_batch, [[i.key for i in b] for b in batches],
                             [[i.payload for i in b] for b in batches], key=task_keys, retries=stage.retries,
                             resources=dict(stage.resources) if stage.resources else None, pure=False,
                             **stage.kwargs)
        self.batch_of = dict(zip(task_keys, batches))
        self.results = as_completed(futures, with_results=True, raise_errors=False)

    @property
    def n_finished(self) -> int:
        return self.committer.done + self.committer.failed + len(self.committer.pending)

    @property
    def complete(self) -> bool:
        return not self.batch_of

    def poll(self) -> int:
        """Take what has arrived, commit when due; returns how many items arrived."""
        n = 0
        if self.results is not None and self.batch_of:
            for future, result in self.results.next_batch(block=False):
                batch = self.batch_of.pop(future.key)
                if not isinstance(result, list):  # the task raised; as_completed may hand over its type
                    error = result if isinstance(result, BaseException) else future.exception()
                    result = _task_failure(batch, error)
                self.committer.add(batch, result, future.key)
                self.bar.update(len(batch))
                future.release()
                n += len(batch)
        now = time.monotonic()
        pending = self.committer.pending
        if len(pending) >= self.flush_items or (pending and (now - self.last_flush >= self.flush_interval_s
                                                             or self.complete)):
            self.committer.flush()
            self.last_flush = now
        if self.complete:
            self.bar.close()
        self.report.done, self.report.failed = self.committer.done, self.committer.failed
        return n

    def wait(self, quorum: float = 1.0, *, health_check: Callable[[], None] | None = None,
             health_interval_s: float = 5.0, also: Sequence["StageRun"] = ()) -> StageReport:
        """Block until ``quorum`` of the submitted items have outcomes (all of them at 1.0),
        committing as they come; ``also`` are earlier runs whose stragglers are committed too."""
        need = self.n_submitted if quorum >= 1.0 else math.ceil(quorum * self.n_submitted)
        last_health = time.monotonic()
        try:
            while True:
                arrived = self.poll()
                for other in also:
                    arrived += other.poll()
                if self.n_finished >= need and not self.committer.pending:
                    break
                now = time.monotonic()
                if not arrived:
                    if health_check is not None and now - last_health >= health_interval_s:
                        health_check()
                        last_health = now
                    time.sleep(0.02)
        except BaseException:
            # Ctrl-C, a cluster that lost its workers, a failed write: keep what already arrived (a
            # retried append rewrites the same rows), and let the relaunch do the rest.
            for run in (self, *also):
                with contextlib.suppress(Exception):
                    run.committer.flush()
            raise
        return self.report


def record_plan(store: CampaignStore, stages: Sequence[Stage], known: set[str] | None = None) -> set[str]:
    """Add the stages' items the plan does not hold yet (what ``status`` counts as pending);
    returns the plan's keys, to pass back as ``known`` so that the plan is read once."""
    known = planned_keys(store) if known is None else known
    new = [(item.key, stage.name) for stage in stages for item in stage.items if item.key not in known]
    store.append({"plan": plan_block([k for k, _ in new], [s for _, s in new])})
    known.update(k for k, _ in new)
    return known


def run_stage(client: Client, store: CampaignStore, stage: Stage, launch: int, *,
              progress: bool = True, flush_interval_s: float = 1.0, flush_items: int = 2000,
              health_check: Callable[[], None] | None = None, health_interval_s: float = 5.0) -> StageReport:
    """Run every item of the stage that the ledger does not already mark done."""
    run = StageRun(client, store, stage, launch, progress=progress, flush_interval_s=flush_interval_s,
                   flush_items=flush_items)
    return run.wait(1.0, health_check=health_check, health_interval_s=health_interval_s)
