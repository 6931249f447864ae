"""Labeled structures in the store: flat per-atom rows plus per-frame rows with offsets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from storage.store import CampaignStore


@dataclass(frozen=True, eq=False)
class LabeledFrame:
    key: str
    source: str
    labeler: str
    labeler_settings: str
    numbers: np.ndarray
    positions_A: np.ndarray
    cell_A: np.ndarray
    pbc: np.ndarray
    energy_eV: float
    forces_eV_per_A: np.ndarray
    stress_eV_per_A3: np.ndarray


def frame_blocks(frames: Sequence[LabeledFrame], atom_start: int) -> dict[str, dict[str, np.ndarray]]:
    """The rows of the ``frames`` and ``atoms`` tables for these frames, appended at atom_start."""
    n_atoms = np.array([len(f.numbers) for f in frames], dtype=np.int32)
    starts = atom_start + np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64) if len(frames) else np.zeros(0, np.int64)
    empty3 = np.zeros((0, 3))
    return {
        "frames": {
            "key": np.array([f.key for f in frames], dtype=object),
            "source": np.array([f.source for f in frames], dtype=object),
            "labeler": np.array([f.labeler for f in frames], dtype=object),
            "labeler_settings": np.array([f.labeler_settings for f in frames], dtype=object),
            "energy_eV": np.array([f.energy_eV for f in frames], dtype=np.float64),
            "stress_eV_per_A3": np.array([f.stress_eV_per_A3 for f in frames], dtype=np.float64).reshape(-1, 6),
            "cell_A": np.array([f.cell_A for f in frames], dtype=np.float64).reshape(-1, 3, 3),
            "pbc": np.array([f.pbc for f in frames], dtype=bool).reshape(-1, 3),
            "n_atoms": n_atoms,
            "atom_start": starts,
        },
        "atoms": {
            "numbers": np.concatenate([f.numbers for f in frames]).astype(np.int16) if frames else np.zeros(0, np.int16),
            "positions_A": np.concatenate([f.positions_A for f in frames]) if frames else empty3,
            "forces_eV_per_A": np.concatenate([f.forces_eV_per_A for f in frames]) if frames else empty3,
        },
    }


def iter_frames(store: CampaignStore, chunk_frames: int = 4096) -> Iterator[LabeledFrame]:
    """Every committed frame, read chunk by chunk so a large store never sits in memory whole."""
    n = store.length("frames")
    for lo in range(0, n, chunk_frames):
        meta = store.read("frames", rows=slice(lo, min(n, lo + chunk_frames)))
        a0 = int(meta["atom_start"][0])
        a1 = int(meta["atom_start"][-1] + meta["n_atoms"][-1])
        atoms = store.read("atoms", rows=slice(a0, a1))
        for i in range(len(meta["key"])):
            s = int(meta["atom_start"][i]) - a0
            e = s + int(meta["n_atoms"][i])
            yield LabeledFrame(
                key=str(meta["key"][i]), source=str(meta["source"][i]), labeler=str(meta["labeler"][i]),
                labeler_settings=str(meta["labeler_settings"][i]), numbers=atoms["numbers"][s:e].astype(np.int64),
                positions_A=atoms["positions_A"][s:e], cell_A=meta["cell_A"][i], pbc=meta["pbc"][i],
                energy_eV=float(meta["energy_eV"][i]), forces_eV_per_A=atoms["forces_eV_per_A"][s:e],
                stress_eV_per_A3=meta["stress_eV_per_A3"][i])
