"""Deterministic task keys: the same spec gives the same keys on every launch and every cluster."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence


def task_key(task: str, version: int, inputs: Any, seed: int | None = None) -> str:
    """Hash of task name, task version, canonical (JSON, sorted keys) inputs and seed.

    Scheduler, queue and worker count are deliberately absent: moving a campaign from a laptop
    to SLURM must not redo anything.
    """
    payload = json.dumps({"task": task, "version": version, "inputs": inputs, "seed": seed},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def batch_key(stage: str, item_keys: Sequence[str]) -> str:
    """The Dask key of a batch: readable on the dashboard, unique for its items."""
    digest = hashlib.sha256("\n".join(item_keys).encode()).hexdigest()[:16]
    return f"{stage}-{digest}"
