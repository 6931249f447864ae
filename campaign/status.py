"""What a store says about its campaign, read from the store alone (no cluster)."""

from __future__ import annotations

from campaign.errors import SpecError
from campaign.recipe import Recipe, recipe_for, store_recipe_kind
from storage import CampaignStore
from storage.ledger import failures, stage_summary
from storage.schema import LABELED


def campaign_status(store: CampaignStore, max_failures: int = 20) -> dict:
    attrs = store.attrs
    kind = store_recipe_kind(store)
    return {
        "campaign": attrs.get("campaign"),
        "store": str(store.directory.resolve()),
        "schema_version": attrs.get("schema_version"),
        "recipe": kind,
        "launches": len(attrs.get("launches", [])),
        "frames": store.length(LABELED.frames),
        "stages": stage_summary(store),
        "failures": [{k: f[k] for k in ("key", "stage", "error", "error_kind", "worker")}
                     for f in failures(store, limit=max_failures)],
        **_recipe(kind).status(store),
    }


def _recipe(kind: str) -> Recipe:
    """The store's recipe; one this installation does not know (a plug-in that is not installed
    here) still gets the stages and failures, without the recipe's own sections."""
    try:
        return recipe_for(kind)
    except SpecError:
        return Recipe()


def format_status(status: dict) -> str:
    lines = [f"campaign {status['campaign']} ({status['recipe']})  store {status['store']}",
             f"launches {status['launches']}  labeled frames {status['frames']}", "",
             f"{'stage':<16}{'done':>8}{'failed':>8}{'pending':>9}"]
    for stage, c in status["stages"].items():
        lines.append(f"{stage:<16}{c['done']:>8}{c['failed']:>8}{c['pending']:>9}")
    lines += _recipe(status["recipe"]).format_status(status)
    if status["failures"]:
        lines += ["", "failed items (a relaunch retries them):"]
        lines += [f"  {f['stage']} {f['key'][:12]}  [{f['error_kind']}] {f['error']}" for f in status["failures"]]
    return "\n".join(lines)
