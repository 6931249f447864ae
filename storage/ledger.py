"""The ledger: one row per finished attempt at a work item; the latest row of a key wins."""

from __future__ import annotations

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
