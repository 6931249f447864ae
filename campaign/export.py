"""Labeled frames out of the store, for ASE, OVITO, MACE, nequip, DeePMD converters."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from storage import CampaignStore
from storage.frames import LabeledFrame, iter_frames

FORMATS = ("extxyz",)


def frame_to_atoms(frame: LabeledFrame) -> Atoms:
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions_A, cell=frame.cell_A, pbc=frame.pbc)
    results = {"energy": frame.energy_eV, "forces": frame.forces_eV_per_A}
    if np.all(np.isfinite(frame.stress_eV_per_A3)):
        results["stress"] = frame.stress_eV_per_A3
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(key=frame.key, source=frame.source, labeler=frame.labeler)
    return atoms


def export_frames(store: CampaignStore, out: Path, fmt: str = "extxyz") -> int:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    count = 0
    with open(out, "w") as handle:
        for frame in iter_frames(store):
            ase.io.write(handle, frame_to_atoms(frame), format="extxyz")
            count += 1
    return count
