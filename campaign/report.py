"""``campaign report DIR``: the figures of the store's recipe, from the store alone."""

from __future__ import annotations

from pathlib import Path

from campaign.recipe import recipe_for, store_recipe_kind
from storage import CampaignStore


def write_report(store: CampaignStore, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return recipe_for(store_recipe_kind(store)).report(store, out_dir)


def pyplot():
    """matplotlib's pyplot with a file-only backend (reports run on clusters without displays)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    return path
