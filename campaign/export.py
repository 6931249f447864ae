"""Labeled frames out of the store, for ASE, OVITO, MACE, nequip, DeePMD converters."""

from __future__ import annotations

import os
import secrets
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
    """Write every committed frame to ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return write_atomically(Path(out), lambda handle: _write_frames(store, handle))


def export_structures(structures: list[Atoms], out: Path) -> int:
    """Write structures (their ``info`` kept) to ``out``, in the format ASE takes from its suffix
    (.extxyz / .xyz: extended XYZ, .cif: CIF, one data block per structure)."""
    fmt = "cif" if Path(out).suffix.lower() == ".cif" else "extxyz"

    def write(handle) -> int:
        ase.io.write(handle, structures, format=fmt)
        return len(structures)

    return write_atomically(Path(out), write, binary=fmt == "cif")  # ASE's CIF writer wants bytes


def write_atomically(out: Path, write, binary: bool = False) -> int:
    """``write(handle)`` into ``out``. A regular file is written to a temporary file beside it and
    renamed over it at the end, so a failed export leaves the previous ``out`` as it was."""
    if out.exists() and not out.is_file():  # /dev/stdout, a pipe: nothing to replace
        with open(out, "wb" if binary else "w") as handle:
            return write(handle)
    target = out.resolve() if out.is_symlink() else out
    # O_EXCL with mode 0666: the umask applies as it would to open(out, "w"), and no other file is hit.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            count = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _write_frames(store: CampaignStore, handle) -> int:
    count = 0
    for frame in iter_frames(store):
        ase.io.write(handle, frame_to_atoms(frame), format="extxyz")
        count += 1
    return count
