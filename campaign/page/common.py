"""The panels every campaign page has, whatever its recipe: the campaign, its stages (done,
failed, pending, rate, ETA) and its latest failures. The counts are ``campaign status``'s own
(storage.ledger.stage_summary), so the page and the command always agree on a store."""

from __future__ import annotations

import html
import time
from typing import Any, Mapping

import numpy as np

from campaign.page.panel import Panel, PanelData, columns, html_table
from storage import CampaignStore
from storage.ledger import DONE, failures, stage_summary
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

    def read(self, store: CampaignStore) -> PanelData:
        summary = stage_summary(store)
        rates = self._rates(store, time.time())
        names = list(summary)
        per_min = [60 * rates.get(s, 0.0) for s in names]
        pending = [summary[s]["pending"] for s in names]
        eta = [_eta(p / (r / 60)) if p and r > 0 else ("done" if not p else "–") for p, r in zip(pending, per_min)]
        data = columns(stage=names, done=[summary[s]["done"] for s in names],
                       failed=[summary[s]["failed"] for s in names], pending=pending, per_min=per_min, eta=eta)
        return {"stages": data, "table": html_table(data, [
            ("stage", "stage"), ("done", "done"), ("failed", "failed"), ("pending", "pending"),
            ("per_min", "items/min (last 10 min)"), ("eta", "ETA")], {"per_min": ".1f"})}

    @staticmethod
    def _rates(store: CampaignStore, now: float) -> dict[str, float]:
        """Items per second each stage finished over the last RATE_WINDOW_S (latest entry per key)."""
        ledger = store.read(LEDGER, ["key", "stage", "status", "finished_unix"])
        latest: dict[str, int] = {}
        for row, key in enumerate(ledger["key"]):
            latest[str(key)] = row
        rows = np.array(sorted(latest.values()), dtype=int)
        if not len(rows):
            return {}
        recent = rows[(ledger["status"][rows] == DONE) & (ledger["finished_unix"][rows] > now - RATE_WINDOW_S)]
        rates: dict[str, float] = {}
        for stage in set(ledger["stage"][recent].tolist()):
            times = ledger["finished_unix"][recent][ledger["stage"][recent] == stage]
            # since the window's first item: a stage that began inside the window is not diluted
            span = max(now - times.min(), 1.0)
            rates[str(stage)] = len(times) / span
        return rates

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["table"]


class FailuresPanel(Panel):
    name = "failures"
    title = "Latest failures (a relaunch retries them)"

    def read(self, store: CampaignStore) -> PanelData:
        latest = failures(store)[::-1][:LATEST_FAILURES]  # ledger order: the newest last
        data = columns(stage=[f["stage"] for f in latest], key=[str(f["key"])[:16] for f in latest],
                       kind=[f["error_kind"] for f in latest], error=[f["error"] for f in latest],
                       worker=[f["worker"] for f in latest], launch=[f["launch"] for f in latest])
        return {"failures": data, "table": html_table(data, [("stage", "stage"), ("key", "key"), ("kind", "kind"),
                                                             ("error", "error"), ("worker", "worker"),
                                                             ("launch", "launch")])}

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["table"]


COMMON_PANELS = (OverviewPanel(), StagesPanel(), FailuresPanel())
