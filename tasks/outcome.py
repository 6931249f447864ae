"""Run a function over a batch of items and keep each item's failure to itself."""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ase.calculators.calculator import CalculatorSetupError


@dataclass(frozen=True)
class Outcome:
    """What became of one work item: a value, or the error that stopped it."""

    key: str
    value: Any = None
    error: str = ""
    # "setup": the input is wrong and a retry with the same settings fails again;
    # "calculation": the calculation failed (SCF, walltime of the code) and a retry may pass.
    error_kind: str = ""
    traceback: str = ""
    duration_s: float = 0.0
    worker: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def worker_name() -> str:
    """host:pid of this worker process, as outcomes record it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_each(fn: Callable[..., Any], keys: Sequence[str], items: Sequence[Any], *args: Any) -> list[Outcome]:
    """Call ``fn(item, *args)`` for each item; an exception fails that item alone.

    This is how a batch of labels, say, survives one structure the labeler cannot do: the
    others are returned, and the failed one carries its message and traceback to the ledger.
    """
    where = worker_name()
    outcomes = []
    for key, item in zip(keys, items, strict=True):
        start = time.perf_counter()
        try:
            value = fn(item, *args)
        except Exception as exc:  # noqa: BLE001 - every application failure is recorded, none stops the batch
            kind = "setup" if isinstance(exc, (CalculatorSetupError, ValueError)) else "calculation"
            outcomes.append(
                Outcome(
                    key=key,
                    error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    error_kind=kind,
                    traceback=traceback.format_exc(),
                    duration_s=time.perf_counter() - start,
                    worker=where,
                )
            )
        else:
            outcomes.append(Outcome(key=key, value=value, duration_s=time.perf_counter() - start, worker=where))
    return outcomes
