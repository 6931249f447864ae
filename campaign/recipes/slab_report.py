"""``campaign status``, ``campaign report`` and ``export --snapshots`` of a slab_mc store.

energy.png      energy per atom against step, one line per chain
acceptance.png  accepted fraction of hops and thickness moves per trace interval, per chain
layers.png      metal atoms per layer (share of its sites) against step, a heat map per chain
jumps.png       accepted hops within a layer and across layers (cumulative) against step, and how
                many layers each vacancy ended from its start layer (0, 1, 2, ≥ 3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from campaign.recipes.slab_tables import (SLAB_CHECKPOINT_VACANCIES, SLAB_CHECKPOINTS, SLAB_SNAPSHOTS, SLAB_TRACE,
                                          SLAB_TRACE_LAYERS, chain_plateaus)
from campaign.report import acceptance_figure, pyplot, rows_by_chain, save_figure
from storage import CampaignStore
from tasks.mc.slab_analysis import displacement_fractions


def _last_checkpoints(store: CampaignStore) -> tuple[dict, dict[str, int]]:
    frames = store.read(SLAB_CHECKPOINTS.frames, ["chain", "replica", "step", "energy_eV", "n_atoms",
                                                  "vacancy_start", "n_vacancies"])
    return frames, {chain: int(rows[-1]) for chain, rows in rows_by_chain(frames).items()}


def _displacements(store: CampaignStore, frames: dict, k: int) -> np.ndarray:
    """Share of the vacancies 0, 1, 2 and ≥ 3 layers from their start layer at checkpoint row k."""
    start = int(frames["vacancy_start"][k])
    rows = slice(start, start + int(frames["n_vacancies"][k]))
    return displacement_fractions(store.read(SLAB_CHECKPOINT_VACANCIES, ["vertical_displacement"],
                                             rows)["vertical_displacement"])


def status_rows(store: CampaignStore) -> list[dict]:
    """Per chain: step reached (of max_steps), temperature, energy, lowest energy recorded, share of the
    metal on vdW-CrS2 sites, hops within a layer per hop across, vacancy displacements, plateau."""
    if not store.length(SLAB_CHECKPOINTS.frames):
        return []
    recipe = store.attrs.get("spec", {}).get("recipe", {})
    frames, last = _last_checkpoints(store)
    n_atoms = int(frames["n_atoms"][0])
    stop = recipe.get("stop")
    plateaus = chain_plateaus(store, n_atoms, stop["window_steps"], stop["tolerance_meV_per_atom"] / 1000) \
        if stop else {}
    trace = store.read(SLAB_TRACE, ["chain", "step", "temperature_K", "energy_eV_per_atom", "vdw_fraction",
                                    "horizontal_jumps", "vertical_jumps"])
    traced = rows_by_chain(trace)
    rows = []
    for chain, k in sorted(last.items(), key=lambda item: (int(frames["replica"][item[1]]), item[0])):
        t = traced[chain][-1]
        vertical = int(trace["vertical_jumps"][t].sum())
        rows.append({"chain": chain, "step": int(frames["step"][k]), "steps": recipe.get("max_steps"),
                     "temperature_K": float(trace["temperature_K"][t]),
                     "energy_eV_per_atom": float(frames["energy_eV"][k]) / n_atoms,
                     "best_eV_per_atom": float(trace["energy_eV_per_atom"][traced[chain]].min()),
                     "vdw_fraction": float(trace["vdw_fraction"][t]),
                     "horizontal_jumps": int(trace["horizontal_jumps"][t]), "vertical_jumps": vertical,
                     "horizontal_per_vertical": int(trace["horizontal_jumps"][t]) / vertical if vertical else None,
                     "displacements": _displacements(store, frames, k).tolist(),
                     "plateau_step": plateaus.get(chain)})
    return rows


def status_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["slab_mc: no segment finished yet"]
    lines = [f"slab_mc: {len(rows)} chains (vdW: share of the metal on vdW-CrS2 sites; H/V: hops within a "
             "layer per hop across; Δlayer: vacancies 0/1/2/≥3 layers from their start)"]
    for r in rows:
        ratio = "-" if r["horizontal_per_vertical"] is None else f"{r['horizontal_per_vertical']:.2f}"
        shares = "/".join(f"{100 * s:.0f}" for s in r["displacements"])
        state = f"converged: plateau at step {r['plateau_step']}" if r["plateau_step"] is not None else \
            "max_steps reached" if r["step"] == r["steps"] else "not converged"
        lines.append(f"  {r['chain']:<6} step {r['step']:>7}/{r['steps']}  T {r['temperature_K']:.0f} K  "
                     f"E {r['energy_eV_per_atom']:.5f} eV/atom  best {r['best_eV_per_atom']:.5f}  "
                     f"vdW {100 * r['vdw_fraction']:.1f}%  H/V {ratio}  Δlayer {shares}%  {state}")
    return lines


def snapshot_structures(store: CampaignStore) -> list:
    """Every snapshot (step 0 and every ``snapshot_every`` steps) as ASE atoms, by chain and step,
    its data in ``info`` and the site of each metal atom in the array ``site`` (−1: anions)."""
    if not store.length(SLAB_SNAPSHOTS.frames):
        raise ValueError(f"{store.directory} has no slab snapshots (snapshot_every > 0, and a segment must finish)")
    from ase import Atoms

    block = store.read_structures(SLAB_SNAPSHOTS)
    f = block.frames
    out = []
    for chain, rows in rows_by_chain(f).items():
        for k in rows:
            atoms = Atoms(numbers=block.atom_values("numbers", k), positions=block.atom_values("positions_A", k),
                          cell=f["cell_A"][k], pbc=f["pbc"][k])
            atoms.set_array("site", block.atom_values("site", k).astype(np.int64))
            atoms.info.update(chain=chain, replica=int(f["replica"][k]), seed=int(f["seed"][k]),
                              step=int(f["step"][k]), vdw_fraction=float(f["vdw_fraction"][k]))
            out.append(atoms)
    return out


def write_figures(store: CampaignStore, out_dir: Path) -> list[Path]:
    if not store.length(SLAB_TRACE):
        raise ValueError(f"{store.directory} has no slab Monte Carlo trace yet (a segment must finish first)")
    trace = store.read(SLAB_TRACE)
    return [_energy(trace, out_dir),
            acceptance_figure(trace, ("hop", "thickness"), out_dir / "acceptance.png"),
            _layers(store, out_dir), _jumps(store, trace, out_dir)]


def _energy(trace: dict, out_dir: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for chain, rows in rows_by_chain(trace).items():
        ax.plot(trace["step"][rows], trace["energy_eV_per_atom"][rows], lw=0.8, label=chain)
    ax.set_xlabel("Monte Carlo step")
    ax.set_ylabel("energy (eV/atom)")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "energy.png")


def _layers(store: CampaignStore, out_dir: Path) -> Path:
    """Metal layer (0: lowest z) against step, coloured by the share of the layer's sites holding metal."""
    plt = pyplot()
    layers = store.read(SLAB_TRACE_LAYERS, ["chain", "step", "layer", "sites", "metal_atoms"])
    chains = rows_by_chain(layers)
    fig, axes = plt.subplots(len(chains), 1, figsize=(7, 1.0 + 2.2 * len(chains)), squeeze=False, sharex=True)
    for ax, (chain, rows) in zip(axes[:, 0], chains.items()):
        steps = np.unique(layers["step"][rows])
        n_layers = int(layers["layer"][rows].max()) + 1
        grid = np.full((n_layers, len(steps)), np.nan)
        grid[layers["layer"][rows], np.searchsorted(steps, layers["step"][rows])] = \
            layers["metal_atoms"][rows] / layers["sites"][rows]
        image = ax.pcolormesh(steps, np.arange(n_layers), grid, vmin=0, vmax=1, cmap="viridis", shading="nearest")
        ax.set_ylabel(f"{chain}: layer")
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 8)))
    axes[-1, 0].set_xlabel("Monte Carlo step")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="metal atoms / sites")
    fig.savefig(out_dir / "layers.png", dpi=120)
    fig.clf()
    return out_dir / "layers.png"


def _jumps(store: CampaignStore, trace: dict, out_dir: Path) -> Path:
    plt = pyplot()
    frames, last = _last_checkpoints(store)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    chains = rows_by_chain(trace)
    width = 0.8 / len(chains)
    for n, (chain, rows) in enumerate(chains.items()):
        line, = left.plot(trace["step"][rows], trace["horizontal_jumps"][rows], lw=0.9, label=f"{chain} within")
        left.plot(trace["step"][rows], trace["vertical_jumps"][rows].sum(axis=1), lw=0.9, ls="--",
                  color=line.get_color(), label=f"{chain} across")
        right.bar(np.arange(4) + (n - (len(chains) - 1) / 2) * width, 100 * _displacements(store, frames, last[chain]),
                  width, label=chain, color=line.get_color())
    left.set_xlabel("Monte Carlo step")
    left.set_ylabel("accepted hops (cumulative)")
    left.legend(fontsize=7)
    right.set_xticks(range(4), ["0", "1", "2", "≥3"])
    right.set_xlabel("layers between each vacancy and its start layer")
    right.set_ylabel("vacancies (%)")
    right.legend(fontsize=7)
    return save_figure(fig, out_dir / "jumps.png")
