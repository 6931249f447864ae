"""``campaign report`` of an irradiation store:

yields.png   sputtering yield vs ion energy, one panel per ion: total, per element, top vs bottom
             layer, with the confidence interval of each point as error bars
damage.png   top view of the end state of one impact (the one that sputtered most; ``damage_key``
             picks another), sputtered atoms marked where they left
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from campaign.report import pyplot, save_figure
from storage import CampaignStore


def latest_yields(store: CampaignStore) -> dict[str, np.ndarray]:
    """The yields table's rows of its latest launch (computed from every impact finished by then)."""
    from campaign.recipes.irradiation_tables import IRR_YIELDS, yield_rows

    table = store.read(IRR_YIELDS)
    if len(table["launch"]):
        keep = table["launch"] == table["launch"].max()
        return {k: v[keep] for k, v in table.items()}
    # a launch still running (or stopped before its end): yields of what is there so far
    spec = store.attrs.get("spec", {}).get("recipe", {})
    return yield_rows(store, None, spec.get("confidence", 0.95), spec.get("seed", 0), -1)


def write_figures(store: CampaignStore, out_dir: Path, damage_key: str | None = None) -> list[Path]:
    from campaign.recipes.irradiation_tables import IRR_IMPACTS

    if not store.length(IRR_IMPACTS):
        raise ValueError(f"{store.directory} has no finished impact to report")
    return [_yields(store, out_dir), _damage(store, out_dir, damage_key)]


def _yields(store: CampaignStore, out_dir: Path) -> Path:
    plt = pyplot()
    y = latest_yields(store)
    ions = sorted(set(y["ion"]))
    fig, axes = plt.subplots(1, len(ions), figsize=(5.5 * len(ions), 4.2), squeeze=False, sharey=True)
    series = [(s, "all") for s in sorted(set(y["species"]), key=lambda s: (s != "all", s))] + [("all", "top"),
                                                                                              ("all", "bottom")]
    for ax, ion in zip(axes[0], ions):
        for species, layer in series:
            rows = (y["ion"] == ion) & (y["species"] == species) & (y["layer"] == layer)
            if not rows.any():
                continue
            order = np.argsort(y["energy_eV"][rows])
            e, mean = y["energy_eV"][rows][order], y["mean"][rows][order]
            low, high = y["low"][rows][order], y["high"][rows][order]
            label = ("total" if species == "all" else species) if layer == "all" else f"{layer} layer"
            # a BCa interval need not contain the mean of a skewed sample: bars are drawn from 0
            ax.errorbar(e, mean, yerr=[np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)], marker="o",
                        capsize=3, label=label,
                        linestyle="-" if layer == "all" else ":")
        n = y["impacts"][y["ion"] == ion]
        ax.set(xscale="log", xlabel="ion energy (eV)", title=f"{ion} ions ({n.min()}–{n.max()} impacts per point)")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel(f"sputtering yield (atoms/ion), {100 * y['confidence'][0]:g}% interval")
    return save_figure(fig, out_dir / "yields.png")


def _damage(store: CampaignStore, out_dir: Path, key: str | None) -> Path:
    from ase.data import chemical_symbols

    from campaign.recipes.irradiation_tables import IRR_END, IRR_SPUTTERED, ensemble_impacts

    plt = pyplot()
    impacts = ensemble_impacts(store, None)  # the latest ensemble's impacts that ran to their end
    if key is not None and key not in set(impacts["key"].tolist()):
        raise ValueError(f"no finished impact {key!r} in the latest ensemble of {store.directory}")
    row = int(np.argmax(impacts["sputtered"])) if key is None else int(np.flatnonzero(impacts["key"] == key)[0])
    key = str(impacts["key"][row])
    frames = store.read(IRR_END.frames, ["key"])
    block = store.read_structures(IRR_END, np.flatnonzero(frames["key"] == key)[:1])
    atoms = block.atoms
    numbers = atoms["numbers"]
    cell = block.frames["cell_A"][0]
    fractions = np.linalg.solve(cell.T, atoms["positions_A"].T).T
    fractions[:, :2] %= 1.0  # in-plane images back into the cell (MD does not wrap)
    positions = fractions @ cell
    sputtered = store.read(IRR_SPUTTERED, ["key", "element", "position_A"])
    gone = sputtered["key"] == key
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for z in sorted(set(numbers.tolist())):
        mine = numbers == z
        ax.scatter(positions[mine, 0], positions[mine, 1], s=30 if z > 20 else 14, label=chemical_symbols[z],
                   alpha=0.8)
    outline = np.array([[0, 0], cell[0, :2], cell[0, :2] + cell[1, :2], cell[1, :2], [0, 0]])
    ax.plot(outline[:, 0], outline[:, 1], color="grey", linewidth=0.8)
    marked = sputtered["position_A"][gone]  # where each was when it left (or at the end, if detached)
    if gone.any():
        ax.scatter([], [], marker="x", color="red", label=f"sputtered ({int(gone.sum())}: "
                   + ", ".join(sorted(set(sputtered['element'][gone]))) + ")")
    if len(marked):
        ax.scatter(marked[:, 0], marked[:, 1], marker="x", color="red", s=60)
    ax.scatter([impacts["aim_x_A"][row]], [impacts["aim_y_A"][row]], marker="*", color="black", s=120, label="aim")
    ax.set(aspect="equal", xlabel="x (Å)", ylabel="y (Å)",
           title=f"{impacts['ion'][row]} at {impacts['energy_eV'][row]:g} eV: end state (top view)")
    ax.legend(fontsize="small", loc="upper right")
    return save_figure(fig, out_dir / "damage.png")
