"""``campaign status`` and ``campaign report`` of a phase-diagram store.

hull.png       formation energy per atom vs x in M(1−x)A of every labeler-relaxed structure, the
               hull through its vertices, the known phases (Cr3S4, Cr2S3, Cr5S8 for Cr–S) marked
parity.png     per composition, the potential's relaxed energies against the labeler's, with ρ
ce_rounds.png  the cluster expansion's CV score per round
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from campaign.recipes.phase_tables import (PHASE_AGREEMENT, PHASE_CE_ROUNDS, PHASE_CELLS, PHASE_COMPUTED, PHASE_HULL,
                                           PHASE_RANKED)
from campaign.report import pyplot, save_figure
from storage import CampaignStore

# x in Cr(1−x)S of the phases the Cr(1−x)S study finds on its hull
KNOWN_PHASES = {"Cr3S4": 0.25, "Cr2S3": 1 / 3, "Cr5S8": 0.375}


def latest(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not len(table["launch"]):
        return table
    keep = table["launch"] == table["launch"].max()
    return {k: v[keep] for k, v in table.items()}


def status_rows(store: CampaignStore) -> dict:
    """Per composition: cells enumerated, ranked, relaxed by the potential, checked by the labeler,
    ρ of the latest launch; the CE's rounds; the hull's vertices."""
    def fractions(table, column="vacancy_fraction", where=None):
        values = store.read(table, [column])[column] if store.length(table) else np.zeros(0)
        return values if where is None else values[where]

    computed = store.read(PHASE_COMPUTED.frames, ["vacancy_fraction", "method", "stage"]) \
        if store.length(PHASE_COMPUTED.frames) else {"vacancy_fraction": np.zeros(0), "method": [], "stage": []}
    methods = np.array([str(m) for m in computed["method"]])
    stages = np.array([str(s) for s in computed["stage"]])
    enumerated, ranked = fractions(PHASE_CELLS), fractions(PHASE_RANKED)
    agreement = latest(store.read(PHASE_AGREEMENT))
    rho = {(round(float(x), 9), str(m)): float(r) for x, m, r in zip(agreement["vacancy_fraction"], agreement["method"],
                                                                    agreement["spearman_rho"])}
    xs = sorted(set(np.round(np.concatenate([enumerated, ranked]), 9).tolist()))
    compositions = [{
        "x": x, "enumerated": int(np.sum(np.isclose(enumerated, x))), "ranked": int(np.sum(np.isclose(ranked, x))),
        "relaxed": int(np.sum(np.isclose(computed["vacancy_fraction"], x) & (methods == "potential"))),
        "checked": int(np.sum(np.isclose(computed["vacancy_fraction"], x) & (stages == "phase-check"))),
        "rho_potential": rho.get((x, "potential")), "rho_ce": rho.get((x, "ce"))} for x in xs]
    rounds = store.read(PHASE_CE_ROUNDS, ["round", "n_structures", "cv_rmse_eV_per_site"])
    hull = latest(store.read(PHASE_HULL, ["launch", "formula", "vacancy_fraction", "on_hull"]))
    vertices = sorted({(float(x), str(f)) for x, f, on in zip(hull["vacancy_fraction"], hull["formula"],
                                                              hull["on_hull"]) if on})
    return {"compositions": compositions,
            "ce_rounds": [{"round": int(r), "structures": int(n), "cv_meV_per_site": 1000 * float(c)}
                          for r, n, c in zip(rounds["round"], rounds["n_structures"], rounds["cv_rmse_eV_per_site"])],
            "hull_vertices": [{"x": x, "formula": f} for x, f in vertices]}


def status_lines(status: dict) -> list[str]:
    lines = []
    if status.get("ce_rounds"):
        last = status["ce_rounds"][-1]
        lines += ["", f"cluster expansion: {len(status['ce_rounds'])} fits, last round {last['round']}: "
                  f"{last['structures']} structures, CV {last['cv_meV_per_site']:.1f} meV/site"]
    if status.get("compositions"):
        lines += ["", f"{'x':>7}{'enumerated':>12}{'ranked':>9}{'relaxed':>9}{'checked':>9}{'ρ pot':>8}{'ρ CE':>8}"]
        for c in status["compositions"]:
            rho = [f"{v:>8.3f}" if v is not None and np.isfinite(v) else f"{'–':>8}"
                   for v in (c["rho_potential"], c["rho_ce"])]
            lines.append(f"{c['x']:>7.4f}{c['enumerated']:>12}{c['ranked']:>9}{c['relaxed']:>9}{c['checked']:>9}"
                         + "".join(rho))
    if status.get("hull_vertices"):
        lines += ["", "hull: " + ", ".join(f"{v['formula']} (x={v['x']:.3f})" for v in status["hull_vertices"])]
    return lines


def hull_structures(store: CampaignStore) -> list:
    """The relaxed structures on the latest hull, by x, their hull data in ``info``."""
    from campaign.recipes.phase_diagram import read_structures

    hull = latest(store.read(PHASE_HULL)) if store.length(PHASE_HULL) else {}
    if not hull or not hull["on_hull"].any():
        raise ValueError(f"{store.directory} has no hull (a phase-diagram store writes it at the end of a launch)")
    structures = read_structures(store, PHASE_COMPUTED)
    out = []
    for k in np.flatnonzero(hull["on_hull"])[np.argsort(hull["vacancy_fraction"][hull["on_hull"]], kind="stable")]:
        atoms = structures[str(hull["key"][k])].copy()
        atoms.info.update(key=str(hull["key"][k]), source=str(hull["source"][k]),
                          vacancy_fraction=float(hull["vacancy_fraction"][k]),
                          energy_eV_per_atom=float(hull["energy_eV_per_atom"][k]),
                          formation_energy_eV_per_atom=float(hull["formation_energy_eV_per_atom"][k]))
        out.append(atoms)
    return out


def write_figures(store: CampaignStore, out_dir: Path) -> list[Path]:
    if not store.length(PHASE_HULL):
        raise ValueError(f"{store.directory} has no hull yet (the phase-diagram recipe writes it at its end)")
    paths = [_hull(store, out_dir)]
    if store.length(PHASE_AGREEMENT):
        paths.append(_parity(store, out_dir))
    if store.length(PHASE_CE_ROUNDS):
        paths.append(_ce_rounds(store, out_dir))
    return paths


def _hull(store: CampaignStore, out_dir: Path) -> Path:
    plt = pyplot()
    hull = latest(store.read(PHASE_HULL))
    x, ef, on = hull["vacancy_fraction"], 1000 * hull["formation_energy_eV_per_atom"], hull["on_hull"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(x[~on], ef[~on], s=14, color="0.55", label="computed (labeler)")
    order = np.argsort(x[on])
    ax.plot(x[on][order], ef[on][order], "-o", color="C3", label="hull")
    for formula, xk in KNOWN_PHASES.items():
        ax.axvline(xk, color="C0", lw=0.8, ls=":")
        ax.text(xk, ax.get_ylim()[1], formula, rotation=90, va="top", ha="right", fontsize=8, color="C0")
    for xv, ev, f in zip(x[on], ef[on], hull["formula"][on]):
        ax.annotate(str(f), (xv, ev), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("x in M(1−x)A")
    ax.set_ylabel("formation energy (meV/atom)")
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir / "hull.png")


def _parity(store: CampaignStore, out_dir: Path) -> Path:
    plt = pyplot()
    frames = store.read(PHASE_COMPUTED.frames, ["cell", "method", "stage", "vacancy_fraction", "energy_eV_per_atom"])
    potential = {int(c): e for c, m, e in zip(frames["cell"], frames["method"], frames["energy_eV_per_atom"])
                 if m == "potential"}
    checked = [(float(x), potential[int(c)], e) for c, s, x, e in zip(frames["cell"], frames["stage"],
                                                                      frames["vacancy_fraction"],
                                                                      frames["energy_eV_per_atom"])
               if s == "phase-check" and int(c) in potential]
    agreement = latest(store.read(PHASE_AGREEMENT))
    xs = sorted({x for x, _, _ in checked})
    fig, axes = plt.subplots(1, max(len(xs), 1), figsize=(3.6 * max(len(xs), 1), 3.6), squeeze=False)
    for ax, xv in zip(axes[0], xs):
        pairs = np.array([(p, e) for x, p, e in checked if x == xv])
        ax.scatter(pairs[:, 1], pairs[:, 0], s=12)
        lo, hi = pairs.min(), pairs.max()
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        rho = [r for x, m, r in zip(agreement["vacancy_fraction"], agreement["method"], agreement["spearman_rho"])
               if np.isclose(x, xv) and m == "potential"]
        ax.set_title(f"x = {xv:.3f}, ρ = {rho[0]:.3f}" if rho and np.isfinite(rho[0]) else f"x = {xv:.3f}", fontsize=9)
        ax.set_xlabel("labeler (eV/atom)")
        ax.set_ylabel("potential (eV/atom)")
    fig.tight_layout()
    return save_figure(fig, out_dir / "parity.png")


def _ce_rounds(store: CampaignStore, out_dir: Path) -> Path:
    plt = pyplot()
    rounds = latest(store.read(PHASE_CE_ROUNDS))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rounds["n_structures"], 1000 * rounds["cv_rmse_eV_per_site"], "-o")
    for n, cv, chosen in zip(rounds["n_structures"], rounds["cv_rmse_eV_per_site"], rounds["chosen"]):
        reasons = [c["reason"][0] for c in json.loads(str(chosen))]  # g: ground state, u: uncertainty
        if reasons:
            ax.annotate("".join(reasons), (n, 1000 * cv), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("labeler-relaxed structures")
    ax.set_ylabel("CV RMSE (meV/site)")
    return save_figure(fig, out_dir / "ce_rounds.png")
