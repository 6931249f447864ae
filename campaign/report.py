"""``campaign report DIR``: PNG figures of an active-learning campaign, from its store alone.

deviation_histograms.png  force-deviation histogram per iteration, trust window marked
fractions.png             accurate / candidate / failed fractions over iterations
parity_energy.png         committee mean vs labeler, energy per atom, every labeled frame
parity_forces.png         committee mean vs labeler, force components
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from campaign.export import frame_to_atoms
from storage import CampaignStore
from storage.frames import iter_frames
from storage.schema import N_DEVIATION_BINS
from tasks.active.select import HISTOGRAM_EDGES_EV_PER_A


def write_report(store: CampaignStore, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    it = store.read("al_iterations")
    if len(it["iteration"]) == 0:
        raise ValueError(f"{store.directory} has no finished active-learning iteration to report")
    spec = store.attrs.get("spec", {}).get("recipe", {})
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    centres = 0.5 * (HISTOGRAM_EDGES_EV_PER_A[:-2] + HISTOGRAM_EDGES_EV_PER_A[1:-1])
    width = HISTOGRAM_EDGES_EV_PER_A[1] - HISTOGRAM_EDGES_EV_PER_A[0]
    for k, hist in zip(it["iteration"], it["deviation_histogram"]):
        ax.step(np.append(centres, centres[-1] + width), hist[:N_DEVIATION_BINS] / max(1, hist.sum()),
                where="mid", label=f"iteration {k}")
    for name in ("trust_lo", "trust_hi"):
        if name in spec:
            ax.axvline(spec[name], color="grey", linestyle="--")
    ax.set(xlabel="max force deviation (eV/Å), last bin: above 0.5", ylabel="fraction of explored frames")
    ax.legend()
    written.append(_save(fig, out_dir / "deviation_histograms.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("accurate", "candidate", "failed"):
        ax.plot(it["iteration"], it[f"{name}_fraction"], marker="o", label=name)
    ax.set(xlabel="iteration", ylabel="fraction of explored frames", ylim=(0, 1))
    ax.legend()
    written.append(_save(fig, out_dir / "fractions.png"))

    written += _parity(store, it, out_dir, plt)
    return written


def _parity(store: CampaignStore, it: dict, out_dir: Path, plt) -> list[Path]:
    """The last iteration's committee on every labeled frame."""
    from tasks.nnp.batch import AtomsBatch
    from tasks.nnp.committee import Committee
    from tasks.nnp.model import BehlerParrinello

    models = store.read("al_models")
    last = models["iteration"] == models["iteration"].max()
    committee = Committee([BehlerParrinello.load(store.directory / str(p)) for p in models["path"][last]])
    e_ref, e_model, f_ref, f_model = [], [], [], []
    frames = iter_frames(store)
    # many frames per evaluation: the batched engine, in chunks that keep memory bounded
    while chunk := list(itertools.islice(frames, 256)):
        batch = AtomsBatch.from_atoms([frame_to_atoms(f) for f in chunk])
        out = committee(batch)
        n_atoms = batch.n_atoms
        e_ref.append(np.array([f.energy_eV for f in chunk]) / n_atoms)
        e_model.append(out["energy"].numpy() / n_atoms)
        f_ref += [f.forces_eV_per_A.reshape(-1) for f in chunk]
        f_model.append(out["forces"].numpy().reshape(-1))
    e_ref, e_model = np.concatenate(e_ref), np.concatenate(e_model)
    written = []
    for name, ref, pred, unit in (("energy", e_ref, e_model, "eV/atom"),
                                  ("forces", np.concatenate(f_ref), np.concatenate(f_model), "eV/Å")):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(ref, pred, s=4)
        lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], color="grey")
        rmse = float(np.sqrt(np.mean((ref - pred) ** 2)))
        ax.set(xlabel=f"labeler {name} ({unit})", ylabel=f"committee {name} ({unit})",
               title=f"iteration {int(it['iteration'][-1])}: RMSE {rmse:.3g} {unit}")
        written.append(_save(fig, out_dir / f"parity_{name}.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    return path
