"""``campaign status``, ``campaign report`` and ``export --minima`` of an anneal store.

energy.png      energy per atom against step, one line per chain
acceptance.png  accepted fraction of swap and cell moves per trace interval, per chain
layers.png      the metal occupation of each layer (along c) of every chain's lowest minimum
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from campaign.recipes.anneal_tables import ANNEAL_CHECKPOINTS, ANNEAL_LAYERS, ANNEAL_MINIMA, ANNEAL_TRACE
from campaign.report import acceptance_figure, pyplot, rows_by_chain, save_figure
from storage import CampaignStore


def _schedule(store: CampaignStore):
    from campaign.recipes.anneal import ScheduleSpec

    recipe = store.attrs.get("spec", {}).get("recipe", {})
    return ScheduleSpec(**recipe.get("schedule", {})).build()


def status_rows(store: CampaignStore) -> list[dict]:
    """Per chain: step reached (of the schedule's), temperature there, energy, best minimum."""
    if not store.length(ANNEAL_CHECKPOINTS.frames):
        return []
    schedule = _schedule(store)
    frames = store.read(ANNEAL_CHECKPOINTS.frames, ["chain", "vacancy_fraction", "step", "energy_eV",
                                                     "occupied_sites"])
    minima = store.read(ANNEAL_MINIMA.frames, ["chain", "cycle", "energy_eV_per_atom", "formula"])
    last: dict[str, int] = {}
    for k, (chain, step) in enumerate(zip(frames["chain"], frames["step"])):
        if str(chain) not in last or step >= frames["step"][last[str(chain)]]:
            last[str(chain)] = k
    rows = []
    for chain, k in sorted(last.items(), key=lambda item: (frames["vacancy_fraction"][item[1]], item[0])):
        step = int(frames["step"][k])
        mine = [j for j, c in enumerate(minima["chain"]) if str(c) == chain]
        best = min(mine, key=lambda j: minima["energy_eV_per_atom"][j]) if mine else None
        rows.append({"chain": chain, "x": float(frames["vacancy_fraction"][k]), "step": step,
                     "steps": schedule.total_steps,
                     "temperature_K": schedule.temperature_K(min(step, schedule.total_steps - 1)),
                     "energy_eV_per_atom": float(frames["energy_eV"][k]) / int(frames["occupied_sites"][k]),
                     "best_eV_per_atom": None if best is None else float(minima["energy_eV_per_atom"][best]),
                     "best_cycle": None if best is None else int(minima["cycle"][best]),
                     "best_formula": None if best is None else str(minima["formula"][best])})
    return rows


def status_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["anneal: no segment finished yet"]
    lines = [f"anneal: {len(rows)} chains"]
    for r in rows:
        best = "none yet" if r["best_eV_per_atom"] is None else \
            f"{r['best_eV_per_atom']:.4f} eV/atom ({r['best_formula']}, cycle {r['best_cycle'] + 1})"
        lines.append(f"  {r['chain']:<14} step {r['step']:>8}/{r['steps']}  T {r['temperature_K']:9.2f} K  "
                     f"E {r['energy_eV_per_atom']:.4f} eV/atom  best {best}")
    return lines


def lowest_minima(store: CampaignStore) -> list:
    """Each chain's lowest minimum over all cycles (vacancies dropped), its data in ``info``."""
    if not store.length(ANNEAL_MINIMA.frames):
        raise ValueError(f"{store.directory} has no annealing minima (a cycle must end first)")
    block = store.read_structures(ANNEAL_MINIMA)
    best: dict[str, int] = {}
    for k, chain in enumerate(block.frames["chain"]):
        j = best.get(str(chain))
        if j is None or block.frames["energy_eV"][k] < block.frames["energy_eV"][j]:
            best[str(chain)] = k
    from ase import Atoms

    out = []
    for chain, k in sorted(best.items(), key=lambda item: (block.frames["vacancy_fraction"][item[1]], item[0])):
        f = block.frames
        atoms = Atoms(numbers=block.atom_values("numbers", k), positions=block.atom_values("positions_A", k),
                      cell=f["cell_A"][k], pbc=f["pbc"][k])
        atoms.info.update(chain=chain, vacancy_fraction=float(f["vacancy_fraction"][k]), cycle=int(f["cycle"][k]),
                          step=int(f["step"][k]), energy_eV=float(f["energy_eV"][k]),
                          energy_eV_per_atom=float(f["energy_eV_per_atom"][k]), seed=int(f["seed"][k]))
        out.append(atoms)
    return out


def write_figures(store: CampaignStore, out_dir: Path) -> list[Path]:
    if not store.length(ANNEAL_TRACE):
        raise ValueError(f"{store.directory} has no annealing trace yet (a segment must finish first)")
    paths = [_energy(store, out_dir), _acceptance(store, out_dir)]
    if store.length(ANNEAL_LAYERS):
        paths.append(_layers(store, out_dir))
    return paths


def _energy(store: CampaignStore, out_dir: Path) -> Path:
    """One panel per composition: energies of different x differ by far more than annealing moves them."""
    plt = pyplot()
    trace = store.read(ANNEAL_TRACE, ["chain", "vacancy_fraction", "step", "energy_eV_per_atom"])
    chains = rows_by_chain(trace)
    xs = sorted({float(trace["vacancy_fraction"][rows[0]]) for rows in chains.values()})
    fig, axes = plt.subplots(1, len(xs), figsize=(4.2 * len(xs), 3.6), squeeze=False)
    for chain, rows in chains.items():
        ax = axes[0][xs.index(float(trace["vacancy_fraction"][rows[0]]))]
        ax.plot(trace["step"][rows], trace["energy_eV_per_atom"][rows], lw=0.8, label=chain)
    for ax, x in zip(axes[0], xs):
        ax.set_title(f"x = {x:.4g}", fontsize=9)
        ax.set_xlabel("Monte Carlo step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("energy (eV/atom)")
    return save_figure(fig, out_dir / "energy.png")


def _acceptance(store: CampaignStore, out_dir: Path) -> Path:
    trace = store.read(ANNEAL_TRACE, ["chain", "step", "proposed", "accepted"])
    return acceptance_figure(trace, ("swap", "cell"), out_dir / "acceptance.png")


def _layers(store: CampaignStore, out_dir: Path) -> Path:
    plt = pyplot()
    minima = lowest_minima(store)
    layers = store.read(ANNEAL_LAYERS)
    chains = np.array([str(c) for c in layers["chain"]])
    rows = []
    for atoms in minima:
        pick = (chains == atoms.info["chain"]) & (layers["cycle"] == atoms.info["cycle"])
        order = np.argsort(layers["layer"][pick])
        rows.append(layers["metal_atoms"][pick][order] / layers["sites"][pick][order])
    grid = np.array(rows)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * grid.shape[1], 1.0 + 0.35 * len(rows)))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(minima)), [f"{a.info['chain']} ({a.get_chemical_formula()})" for a in minima], fontsize=7)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_xlabel("metal layer along c")
    fig.colorbar(image, ax=ax, label="metal occupation")
    return save_figure(fig, out_dir / "layers.png")
