"""``campaign report DIR``: the figures of the store's recipe, from the store alone, and
``index.html``, one self-contained page of them (images inline: it opens from disk, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from campaign.recipe import recipe_for, store_recipe_kind
from storage import CampaignStore


def write_report(store: CampaignStore, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = recipe_for(store_recipe_kind(store)).report(store, out_dir)
    return [*written, write_index(store, out_dir / "index.html", written)]


def write_index(store: CampaignStore, path: Path, parts: Sequence[Path]) -> Path:
    """The status and every part of the report on one page: PNGs inline as data URIs, HTML
    fragments (tables) inline, other text as preformatted."""
    import base64
    import html
    import re

    from campaign.status import campaign_status, format_status

    status = campaign_status(store)
    title = html.escape(f"campaign {status['campaign']} ({status['recipe']})")
    body = [f"<h1>{title}</h1>", f"<pre>{html.escape(format_status(status))}</pre>"]
    shown = {part.stem for part in parts if part.suffix == ".html"}
    for part in parts:
        if part.suffix not in (".png", ".html") and part.stem in shown:
            continue  # a table also written as HTML (table.md beside table.html)
        body.append(f"<h2>{html.escape(part.name)}</h2>")
        if part.suffix == ".png":
            data = base64.b64encode(part.read_bytes()).decode()
            body.append(f"<img alt='{html.escape(part.stem)}' src='data:image/png;base64,{data}'>")
        elif part.suffix == ".html":
            text = part.read_text()
            inner = re.search(r"<body[^>]*>(.*)</body>", text, re.S | re.I)
            body.append(re.sub(r"<!doctype[^>]*>|<meta[^>]*>|<title>.*?</title>", "",
                               inner.group(1) if inner else text, flags=re.S | re.I))
        else:
            body.append(f"<pre>{html.escape(part.read_text())}</pre>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}" \
            "table{border-collapse:collapse}td,th{padding:2px 6px}"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return path


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


def rows_by_chain(table: dict) -> dict[str, np.ndarray]:
    """chain name → its rows of a table read with ``chain`` and ``step`` columns, in step order."""
    chains = np.array([str(c) for c in table["chain"]])
    return {c: np.flatnonzero(chains == c)[np.argsort(table["step"][chains == c], kind="stable")]
            for c in sorted(set(chains.tolist()))}


def acceptance_figure(trace: dict, moves: Sequence[str], path: Path) -> Path:
    """Accepted fraction of each kind of move per trace interval, one panel per kind and a line per
    chain, from a Monte Carlo trace read with chain, step and the cumulative proposed and accepted
    (columns in the order of ``moves``)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(moves), figsize=(5 * len(moves), 3.8), sharey=True, squeeze=False)
    for chain, rows in rows_by_chain(trace).items():
        proposed, accepted = np.diff(trace["proposed"][rows], axis=0), np.diff(trace["accepted"][rows], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = accepted / proposed
        for move, ax in enumerate(axes[0]):
            ax.plot(trace["step"][rows][1:], rate[:, move], lw=0.8, label=chain)
    for ax, name in zip(axes[0], moves):
        ax.set_title(f"{name} moves", fontsize=9)
        ax.set_xlabel("Monte Carlo step")
    axes[0][0].set_ylabel("accepted fraction")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, path)
