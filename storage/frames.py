"""Labeled structures in the store (the ``LABELED`` ragged structures table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from storage.schema import LABELED
from storage.store import CampaignStore
from storage.tables import structure_rows


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


_FRAME_FIELDS = ("key", "source", "labeler", "labeler_settings", "energy_eV", "stress_eV_per_A3")


def frame_blocks(frames: Sequence[LabeledFrame], atom_start: int) -> dict[str, dict[str, np.ndarray]]:
    """The rows of the labeled-frames tables for these frames, their atoms appended at atom_start."""
    return structure_rows(
        LABELED, numbers=[f.numbers for f in frames], positions_A=[f.positions_A for f in frames],
        cell_A=[f.cell_A for f in frames], pbc=[f.pbc for f in frames], atom_start=atom_start,
        frame_values={name: [getattr(f, name) for f in frames] for name in _FRAME_FIELDS},
        atom_values={"forces_eV_per_A": [f.forces_eV_per_A for f in frames]})


def iter_frames(store: CampaignStore, chunk_frames: int = 4096) -> Iterator[LabeledFrame]:
    """Every committed frame, read chunk by chunk so a large store never sits in memory whole."""
    n = store.length(LABELED.frames)
    for lo in range(0, n, chunk_frames):
        block = store.read_structures(LABELED, slice(lo, min(n, lo + chunk_frames)))
        meta = block.frames
        for i in range(len(block)):
            atoms = block.atom_slice(i)
            yield LabeledFrame(
                key=str(meta["key"][i]), source=str(meta["source"][i]), labeler=str(meta["labeler"][i]),
                labeler_settings=str(meta["labeler_settings"][i]),
                numbers=block.atoms["numbers"][atoms].astype(np.int64), positions_A=block.atoms["positions_A"][atoms],
                cell_A=meta["cell_A"][i], pbc=meta["pbc"][i], energy_eV=float(meta["energy_eV"][i]),
                forces_eV_per_A=block.atoms["forces_eV_per_A"][atoms], stress_eV_per_A3=meta["stress_eV_per_A3"][i])
