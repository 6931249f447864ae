"""Deterministic task keys: the same spec gives the same keys on every launch and every cluster."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Sequence

import numpy as np


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


def derive_seed(seed: int, *path: int | str) -> int:
    """The seed of one part of a campaign seeded with ``seed``, e.g. (iteration, "train", member).
    numpy's SeedSequence keeps the streams of different paths independent, whatever the counts
    (a formula like seed·10⁴ + 100·k + m collides once m reaches 100). 63 bits: stored as int64."""
    words = tuple(zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in path)
    return int(np.random.SeedSequence(seed, spawn_key=words).generate_state(1, np.uint64)[0] >> np.uint64(1))
