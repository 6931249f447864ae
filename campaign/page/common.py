"""The panels every campaign page has, whatever its recipe: the campaign, its stages (done,
failed, pending, rate, ETA) and its latest failures. The counts are ``campaign status``'s own
(storage.ledger.stage_summary, followed row by row: storage.ledger.LedgerFollower), so the page and
the command agree on a store."""

from __future__ import annotations

import html
import time
from typing import Any, Mapping

import numpy as np

from campaign.page.panel import Panel, PanelData, columns, html_table
from storage import CampaignStore
from storage.ledger import LedgerFollower
from storage.schema import LABELED, LEDGER

RATE_WINDOW_S = 600.0  # items finished in the last ten minutes set the rate: a stage's pace now
LATEST_FAILURES = 12


class OverviewPanel(Panel):
    name = "overview"
    title = "Campaign"

    def read(self, store: CampaignStore) -> PanelData:
        attrs = store.attrs
        launches = attrs.get("launches", [])
        kind = attrs.get("spec", {}).get("recipe", {}).get("kind", "label")
        started = min((launch.get("started_unix", np.inf) for launch in launches), default=np.inf)
        since = "" if not np.isfinite(started) else \
            f", first launch {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}"
        return {"text": f"<b>{html.escape(str(attrs.get('campaign')))}</b> ({html.escape(kind)}) · store "
                        f"<code>{html.escape(str(store.directory.resolve()))}</code> · {len(launches)} launches"
                        f"{since} · {store.length(LABELED.frames)} labeled frames"}

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["text"]


def _eta(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StagesPanel(Panel):
    name = "stages"
    title = "Stages"
    live = True  # the rates and ETA move with the clock

    def __init__(self, ledger: LedgerFollower):
        self.ledger = ledger

    def read(self, store: CampaignStore) -> PanelData:
        self.ledger.update(store)
        summary = self.ledger.summary()
        rates = self._rates(time.time())
        names = list(summary)
        per_min = [60 * rates.get(s, 0.0) for s in names]
        pending = [summary[s]["pending"] for s in names]
        eta = [_eta(p / (r / 60)) if p and r > 0 else ("done" if not p else "–") for p, r in zip(pending, per_min)]
        data = columns(stage=names, done=[summary[s]["done"] for s in names],
                       failed=[summary[s]["failed"] for s in names], pending=pending, per_min=per_min, eta=eta)
        return {"stages": data, "table": html_table(data, [
            ("stage", "stage"), ("done", "done"), ("failed", "failed"), ("pending", "pending"),
            ("per_min", "items/min (last 10 min)"), ("eta", "ETA")], {"per_min": ".1f"})}

    def _rates(self, now: float) -> dict[str, float]:
        """Items per second each stage finished over the last RATE_WINDOW_S."""
        # since the window's first item: a stage that began inside the window is not diluted
        recent = self.ledger.done_since(now - RATE_WINDOW_S)
        return {stage: n / max(now - first, 1.0) for stage, (n, first) in recent.items()}

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["table"]


class FailuresPanel(Panel):
    name = "failures"
    title = "Latest failures (a relaunch retries them)"

    def __init__(self, ledger: LedgerFollower):
        self.ledger = ledger  # brought up to date by the stages panel, read just before this one

    def read(self, store: CampaignStore) -> PanelData:
        self.ledger.update(store)  # nothing new to read if the stages panel just did
        rows = self.ledger.failed_rows()[-LATEST_FAILURES:]  # oldest first, as they are read
        names = ("stage", "key", "error_kind", "error", "worker", "launch")
        entries = store.read(LEDGER, names, rows=np.array(rows, dtype=np.int64)) if rows else LEDGER.empty(names)
        newest_first = range(len(rows) - 1, -1, -1)
        data = columns(**{name: [entries[name][k] for k in newest_first] for name in names})
        data["key"] = [str(k)[:16] for k in data["key"]]
        return {"failures": data, "table": html_table(data, [("stage", "stage"), ("key", "key"),
                                                             ("error_kind", "kind"), ("error", "error"),
                                                             ("worker", "worker"), ("launch", "launch")])}

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["table"]


def common_panels() -> list[Panel]:
    """Fresh panels for one page (the stages and failures share what they have read of the ledger)."""
    ledger = LedgerFollower()
    return [OverviewPanel(), StagesPanel(ledger), FailuresPanel(ledger)]
