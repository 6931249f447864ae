"""A stage: keyed work items, the plain task function that runs a batch of them, and how the
successful results become store rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from storage import CampaignStore
from tasks.outcome import Outcome


@dataclass(frozen=True)
class WorkItem:
    key: str
    payload: Any


# (store, items that succeeded, their outcomes) -> rows to append per table, besides the ledger
StoreRows = Callable[[CampaignStore, Sequence[WorkItem], Sequence[Outcome]], Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class Stage:
    name: str
    items: Sequence[WorkItem]
    # fn(keys, payloads, **kwargs) -> list[Outcome]; a function of tasks/, never a closure
    run_batch: Callable[..., list[Outcome]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    store_rows: StoreRows | None = None
    batch_size: int = 1
    retries: int = 2
    resources: Mapping[str, float] | None = None
