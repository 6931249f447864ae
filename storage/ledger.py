"""The ledger: one row per finished attempt at a work item; the latest row of a key wins."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from storage.schema import LEDGER, PLAN
from storage.store import CampaignStore

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    stage: str
    status: str
    duration_s: float
    error: str = ""
    error_kind: str = ""
    traceback: str = ""
    task_key: str = ""
    worker: str = ""
    resources: str = ""
    launch: int = 0
    finished_unix: float = 0.0


def ledger_block(entries: Sequence[LedgerEntry]) -> dict[str, np.ndarray]:
    def col(name: str, dtype) -> np.ndarray:
        return np.array([getattr(e, name) for e in entries], dtype=dtype)

    return {
        "key": col("key", object), "stage": col("stage", object), "status": col("status", object),
        "duration_s": col("duration_s", np.float64), "error": col("error", object),
        "error_kind": col("error_kind", object), "traceback": col("traceback", object),
        "task_key": col("task_key", object), "worker": col("worker", object),
        "resources": col("resources", object), "launch": col("launch", np.int32),
        "finished_unix": col("finished_unix", np.float64),
    }


def latest_status(store: CampaignStore) -> dict[str, tuple[str, int]]:
    """key → (status, ledger row) of the key's latest entry."""
    data = store.read(LEDGER, ["key", "status"])
    latest: dict[str, tuple[str, int]] = {}
    for row, (key, status) in enumerate(zip(data["key"], data["status"])):
        latest[str(key)] = (str(status), row)
    return latest


def done_keys(store: CampaignStore) -> set[str]:
    return {key for key, (status, _) in latest_status(store).items() if status == DONE}


def plan_block(keys: Sequence[str], stages: Sequence[str]) -> dict[str, np.ndarray]:
    return {"key": np.array(list(keys), dtype=object), "stage": np.array(list(stages), dtype=object)}


def planned_keys(store: CampaignStore) -> set[str]:
    return {str(k) for k in store.read(PLAN, ["key"])["key"]}


def stage_summary(store: CampaignStore) -> dict[str, dict[str, int]]:
    """Per stage: how many planned items are done, failed, pending."""
    plan = store.read(PLAN, ["key", "stage"])
    latest = latest_status(store)
    summary: dict[str, dict[str, int]] = {}
    for key, stage in zip(plan["key"], plan["stage"]):
        counts = summary.setdefault(str(stage), {"done": 0, "failed": 0, "pending": 0})
        status = latest.get(str(key), ("pending", -1))[0]
        counts[status if status in (DONE, FAILED) else "pending"] += 1
    return summary


def failures(store: CampaignStore, limit: int | None = None) -> list[dict]:
    """Latest entries of the keys that currently stand failed."""
    latest = latest_status(store)
    rows = sorted(row for status, row in latest.values() if status == FAILED)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        return []
    data = store.read(LEDGER, ["key", "stage", "error", "error_kind", "traceback", "worker", "launch"],
                      rows=np.array(rows))
    return [{name: (values[i].item() if hasattr(values[i], "item") else values[i]) for name, values in data.items()}
            for i in range(len(rows))]


class LedgerFollower:
    """``stage_summary`` and the failed keys of a store that is being written, kept up to date by
    reading only the plan and ledger rows committed since the last ``update`` (both tables only
    grow): what a page refreshing every few seconds can afford on a ledger of millions of rows."""

    def __init__(self) -> None:
        self._plan_rows = self._ledger_rows = 0
        self.stage_of: dict[str, str] = {}
        self.latest: dict[str, tuple[str, int, float]] = {}  # key → (status, ledger row, finished_unix)
        self._counts: dict[str, dict[str, int]] = {}
        self._failed: dict[str, int] = {}  # key → ledger row, of the keys that stand failed
        self._done: dict[str, deque[float]] = {}  # per stage: finished_unix of its done entries, ledger order

    @staticmethod
    def _bucket(entry: tuple[str, int, float] | None) -> str:
        return entry[0] if entry is not None and entry[0] in (DONE, FAILED) else "pending"

    def update(self, store: CampaignStore) -> None:
        n_plan, n_ledger = store.length(PLAN), store.length(LEDGER)
        if (n_plan, n_ledger) == (self._plan_rows, self._ledger_rows):
            return  # nothing committed since: no read at all (the failures panel asks right after the stages)
        if n_plan < self._plan_rows or n_ledger < self._ledger_rows:  # not the store followed so far
            self.__init__()
        # both reads first: a read that fails leaves the follower as it was, to be retried whole
        plan = store.read(PLAN, ["key", "stage"], rows=slice(self._plan_rows, n_plan))
        ledger = store.read(LEDGER, ["key", "status", "finished_unix"], rows=slice(self._ledger_rows, n_ledger))
        for key, stage in zip(plan["key"], plan["stage"]):
            key, stage = str(key), str(stage)
            self.stage_of[key] = stage
            counts = self._counts.setdefault(stage, {"done": 0, "failed": 0, "pending": 0})
            counts[self._bucket(self.latest.get(key))] += 1
        for offset, (key, status, finished) in enumerate(zip(ledger["key"], ledger["status"], ledger["finished_unix"])):
            key = str(key)
            before, after = self.latest.get(key), (str(status), self._ledger_rows + offset, float(finished))
            self.latest[key] = after
            if after[0] == FAILED:
                self._failed[key] = after[1]
            else:
                self._failed.pop(key, None)
            if key in self.stage_of:
                counts = self._counts[self.stage_of[key]]
                counts[self._bucket(before)] -= 1
                counts[self._bucket(after)] += 1
                if after[0] == DONE:
                    self._done.setdefault(self.stage_of[key], deque()).append(after[2])
        self._plan_rows, self._ledger_rows = n_plan, n_ledger

    def summary(self) -> dict[str, dict[str, int]]:
        """What ``stage_summary`` says of the store as of the last update."""
        return {stage: dict(counts) for stage, counts in self._counts.items()}

    def done_since(self, since_unix: float) -> dict[str, tuple[int, float]]:
        """Per stage: how many items were done at or after ``since_unix``, and when the first of
        them was (earlier entries are forgotten: call with a time that only moves forward). Entries
        are taken in ledger order, which is commit order: a clock that lags on one worker only
        delays when its entries are forgotten."""
        out = {}
        for stage, times in self._done.items():
            while times and times[0] < since_unix:
                times.popleft()
            if times:
                out[stage] = (len(times), times[0])
        return out

    def failed_rows(self) -> list[int]:
        """Ledger rows of the keys that stand failed, oldest first (as ``failures`` orders them)."""
        return sorted(self._failed.values())
