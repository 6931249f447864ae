"""``campaign status`` and ``campaign report`` of a validation store.

table.md, table.html  every property per source (the labeler's column first), with each potential's
                      error against the labeler and its Δ(EOS): Table II of the MoS2 study
eos.png               equations of state, potentials as lines over the labeler's points
strain.png            energy–strain curves, one panel per curve
phonons.png           phonon bands, one panel per potential over the labeler's
dimers.png            dimer curves, one panel per pair
thresholds.png        threshold displacement energy per direction against its polar angle, per PKA element
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from campaign.recipes.validate_tables import VALIDATION_CURVES, VALIDATION_VALUES, comparison, curves, \
    latest_sources
from campaign.report import pyplot, save_figure
from storage import CampaignStore


def _labeler(store: CampaignStore) -> str:
    return str(store.attrs.get("spec", {}).get("recipe", {}).get("labeler_name", "labeler"))


def status_rows(store: CampaignStore) -> dict:
    """Per source: how many of the steps the latest launch planned for it have finished."""
    sources = latest_sources(store)
    finished: dict[str, set] = defaultdict(set)
    for table in (VALIDATION_VALUES, VALIDATION_CURVES):
        if store.length(table):
            for key in store.read(table, ["key"])["key"]:
                if str(key) in sources:
                    finished[sources[str(key)]].add(str(key))
    return {source: len(k) for source, k in finished.items()}


def status_lines(rows: dict) -> list[str]:
    if not rows:
        return ["validate: no step finished yet"]
    return ["validate: steps finished per source: " + ", ".join(f"{s} {n}" for s, n in sorted(rows.items()))]


def table_rows(store: CampaignStore, drawn: dict | None = None) -> tuple[list[str], list[tuple[str, str, dict]]]:
    """The sources (the labeler first) and, per (property, unit), each source's cell text."""
    labeler = _labeler(store)
    rows = comparison(store, labeler, drawn)
    sources = [labeler] + sorted({r["source"] for r in rows} - {labeler})
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        text = f"{r['value']:.4g}"
        if r["error"] is not None:
            rel = "" if r["relative_error"] is None else f", {100 * r['relative_error']:+.1f}%"
            text += f" ({r['error']:+.3g}{rel})"
        cells.setdefault((r["property"], r["unit"]), {})[r["source"]] = text
    return sources, [(p, u, c) for (p, u), c in cells.items()]


def write_report(store: CampaignStore, out_dir: Path) -> list[Path]:
    drawn = curves(store)
    sources, rows = table_rows(store, drawn)
    if not rows:
        raise ValueError(f"{store.directory} has no validation values yet (a structure step must finish first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["property", "unit", *sources]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([p, u, *(c.get(s, "") for s in sources)]) + " |" for p, u, c in rows]
    note = "Potentials: value (error against the labeler, relative error)."
    (out_dir / "table.md").write_text("\n".join([note, "", *lines]) + "\n")
    cell = lambda t, tag="td": f"<{tag}>{html.escape(t)}</{tag}>"  # noqa: E731
    body = "".join("<tr>" + "".join(cell(t) for t in [p, u, *(c.get(s, "") for s in sources)]) + "</tr>"
                   for p, u, c in rows)
    (out_dir / "table.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>validation</title>"
        f"<p>{html.escape(note)}</p><table border='1'><tr>{''.join(cell(h, 'th') for h in header)}</tr>"
        f"{body}</table>\n")
    paths = [out_dir / "table.md", out_dir / "table.html"]
    labeler = sources[0]
    for name, figure in (("eos", _eos), ("strain", _strain), ("phonons", _phonons), ("dimers", _dimers),
                         ("thresholds", _thresholds)):
        path = figure(drawn, labeler, out_dir / f"{name}.png")
        if path is not None:
            paths.append(path)
    return paths


def _overlay(drawn: dict, labeler: str, names: list[str], path: Path, ylabel: str, xlabel: str, points: bool = True,
             symlog: bool = False):
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (source, curve), (x, y, x_unit, _) in sorted(drawn.items()):
            if curve != name:
                continue
            if source == labeler and points:
                ax.plot(x, y[:, 0], "ko", ms=3, label=source)
            else:
                ax.plot(x, y[:, 0], lw=1.2, label=source)
            ax.set_xlabel(f"{xlabel} ({x_unit})" if x_unit != "strain" else xlabel)
        if symlog:  # the repulsion's hundreds of eV and the well's few on one axis
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    return save_figure(fig, path)


def _eos(drawn, labeler, path):
    units = {x_unit for (_, c), (_, _, x_unit, _) in drawn.items() if c == "eos"}
    xlabel = "area per atom" if any("²" in u for u in units) else "volume per atom"
    return _overlay(drawn, labeler, sorted({c for _, c in drawn if c == "eos"}), path, "energy (eV/atom)", xlabel)


def _strain(drawn, labeler, path):
    names = sorted({c for _, c in drawn if c.startswith("uniaxial") or c == "biaxial"})
    return _overlay(drawn, labeler, names, path, "energy (eV/atom)", "strain")


def _dimers(drawn, labeler, path):
    return _overlay(drawn, labeler, sorted({c for _, c in drawn if c.startswith("dimer")}), path,
                    "E − isolated atoms (eV)", "distance", points=False, symlog=True)


def _phonons(drawn, labeler, path):
    potentials = sorted({s for s, c in drawn if c == "phonon bands" and s != labeler})
    if not potentials:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(potentials), figsize=(4.2 * len(potentials), 3.6), squeeze=False)
    corners = next((c for _, c in drawn if c.startswith("phonon path corners")), None)
    for ax, source in zip(axes[0], potentials):
        ticks = drawn[(labeler, corners)][0] if corners is not None and (labeler, corners) in drawn else None
        for who, style in ((labeler, dict(color="k", lw=1.6)), (source, dict(color="tab:red", lw=0.9, ls="--"))):
            if (who, "phonon bands") in drawn:
                x, y, _, _ = drawn[(who, "phonon bands")]
                if ticks is not None and (who, corners) in drawn:  # each path onto the labeler's corners
                    x = np.interp(x, drawn[(who, corners)][0], ticks)
                for k in range(y.shape[1]):
                    ax.plot(x, y[:, k], label=who if k == 0 else None, **style)
        if ticks is not None:
            labels = corners.split(": ", 1)[1].split()
            ax.set_xticks(ticks, labels)
            for t in ticks:
                ax.axvline(t, color="0.8", lw=0.5)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_title(f"{source} against {labeler}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("frequency (THz)")
    return save_figure(fig, path)


def _thresholds(drawn, labeler, path):
    names = sorted({c for _, c in drawn if c.startswith("E_d(")})
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (source, curve), (_, y, _, _) in sorted(drawn.items()):
            if curve == name:  # series: threshold, below, polar, azimuth
                ax.plot(y[:, 2], y[:, 0], "ko" if source == labeler else "s", ms=4, mfc="none", label=source)
        ax.set_title(name.split(" by ")[0], fontsize=9)
        ax.set_xlabel("polar angle from the sheet normal (deg)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("threshold displacement energy (eV)")
    return save_figure(fig, path)
