"""DeePMD-kit data in and out of campaigns, through dpdata (an optional dependency).

Out: the store's labeled frames as the folders ``dp train`` reads, one system per composition.
In: DeePMD systems (``deepmd/npy``, ``deepmd/raw``, ``deepmd/hdf5``) as ASE structures.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from ase.io.formats import string2index
from ase.stress import voigt_6_to_full_3x3_stress

from storage.frames import LabeledFrame

INSTALL_HINT = "pip install 'mlip-campaign[deepmd]'"
READ_FORMATS = ("deepmd/npy", "deepmd/raw", "deepmd/hdf5")
WRITE_FORMAT = "deepmd/npy"  # what `dp train` reads; float64, as the store holds it
_SYSTEM_MARKER = "type.raw"  # every DeePMD system, folder or HDF5 group, has one


class DeepmdError(Exception):
    """DeePMD data cannot be written or read as asked (dpdata missing, a bad type map, an unreadable
    folder); one line for the user."""


def require_dpdata(purpose: str):
    try:
        import dpdata
    except ImportError:
        raise DeepmdError(f"{purpose} needs dpdata: {INSTALL_HINT}") from None
    return dpdata


# ----- out: labeled frames to DeePMD systems ---------------------------------------------------

@dataclass
class _Composition:
    """The frames of one composition, each frame's atoms ordered by atomic number (stable), so
    every frame of the system shares one ``type.raw``."""

    numbers: np.ndarray
    coords_A: list = field(default_factory=list)
    cells_A: list = field(default_factory=list)
    energies_eV: list = field(default_factory=list)
    forces_eV_per_A: list = field(default_factory=list)
    virials_eV: list = field(default_factory=list)  # None for a frame without a finite stress
    periodic: list = field(default_factory=list)

    def add(self, frame: LabeledFrame, order: np.ndarray) -> None:
        self.coords_A.append(frame.positions_A[order])
        self.cells_A.append(frame.cell_A)
        self.energies_eV.append(frame.energy_eV)
        self.forces_eV_per_A.append(frame.forces_eV_per_A[order])
        self.virials_eV.append(virial_eV(frame))
        self.periodic.append(bool(np.any(frame.pbc)))

    def system_data(self, type_map: Sequence[str]) -> dict:
        """dpdata's data dictionary of this composition under ``type_map``."""
        type_of = {atomic_numbers[name]: i for i, name in enumerate(type_map)}
        types = np.array([type_of[int(z)] for z in self.numbers])
        order = np.argsort(types, kind="stable")  # a user's type map may order elements otherwise
        data = {
            "atom_names": list(type_map),
            "atom_numbs": [int(np.sum(types == i)) for i in range(len(type_map))],
            "atom_types": types[order],
            "orig": np.zeros(3),
            "cells": np.array(self.cells_A),
            "coords": np.array(self.coords_A)[:, order],
            "energies": np.array(self.energies_eV),
            "forces": np.array(self.forces_eV_per_A)[:, order],
            # DeePMD has one pbc flag per system, no partial pbc: a slab's vacuum box is periodic.
            "nopbc": not any(self.periodic),
        }
        if all(v is not None for v in self.virials_eV):  # a system has virials for all frames or none
            data["virials"] = np.array(self.virials_eV)
        return data


def virial_eV(frame: LabeledFrame) -> np.ndarray | None:
    """DeePMD's virial, -stress x volume (eV, 3x3), or None where the labeler gave no stress."""
    if not np.all(np.isfinite(frame.stress_eV_per_A3)):
        return None
    volume_A3 = abs(float(np.linalg.det(frame.cell_A)))
    return -voigt_6_to_full_3x3_stress(frame.stress_eV_per_A3) * volume_A3


def group_by_composition(frames: Iterable[LabeledFrame]) -> dict[tuple, _Composition]:
    groups: dict[tuple, _Composition] = {}
    for frame in frames:
        order = np.argsort(frame.numbers, kind="stable")
        numbers = frame.numbers[order]
        key = tuple(numbers.tolist())
        groups.setdefault(key, _Composition(numbers)).add(frame, order)
    return groups


def resolve_type_map(elements: set[int], requested: Sequence[str] | None) -> list[str]:
    """The user's type map, checked to cover every element of the store, or the store's elements
    by atomic number."""
    if requested is None:
        return [chemical_symbols[z] for z in sorted(elements)]
    unknown = [name for name in requested if name not in atomic_numbers or name == "X"]
    if unknown:
        raise DeepmdError(f"--type-map: unknown element(s) {','.join(unknown)}")
    if len(set(requested)) != len(requested):
        raise DeepmdError(f"--type-map: an element is given twice in {','.join(requested)}")
    missing = [chemical_symbols[z] for z in sorted(elements) if chemical_symbols[z] not in requested]
    if missing:
        raise DeepmdError(f"--type-map {','.join(requested)} lacks element(s) {','.join(missing)} of the store")
    return list(requested)


@dataclass(frozen=True)
class DeepmdExport:
    frames: int
    systems: int
    type_map: list[str]


def export_deepmd(frames: Iterable[LabeledFrame], out: Path, type_map: Sequence[str] | None = None) -> DeepmdExport:
    """Write ``frames`` to the folder ``out`` as DeePMD systems (dpdata's MultiSystems layout:
    one folder per composition with ``type_map.raw``, ``type.raw``, ``set.000/*.npy``).

    Everything is written into a temporary folder beside ``out`` and renamed into place at the end:
    a failed export leaves nothing, and an ``out`` that exists and is not an empty folder is refused,
    never mixed with new systems. The frames are held in memory until written (dpdata writes each
    system's arrays whole), of the order of 100 bytes per atom of the store."""
    dpdata = require_dpdata("--to deepmd")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise DeepmdError(f"{out} exists and is not an empty folder; export to a new folder")
    groups = group_by_composition(frames)
    if not groups:
        raise DeepmdError("the store holds no labeled frames to export")
    elements = {int(z) for key in groups for z in key}
    names = resolve_type_map(elements, type_map)
    systems = [dpdata.LabeledSystem(data=group.system_data(names)) for group in groups.values()]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.mkdir(tmp)  # mode 0777 less the umask, as a folder the user made
    try:
        dpdata.MultiSystems(*systems, type_map=list(names)).to(WRITE_FORMAT, str(tmp))
        _fsync_tree(tmp)
        os.rename(tmp, out)  # replaces an empty folder; fails if anything appeared in it meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DeepmdExport(frames=sum(len(g.energies_eV) for g in groups.values()), systems=len(systems),
                        type_map=names)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk before the rename makes it visible."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in [*files, "."]:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# ----- in: DeePMD systems to structures -------------------------------------------------------

def read_deepmd(path: Path, fmt: str = "deepmd/npy", index: str = ":") -> list[Atoms]:
    """The frames of every DeePMD system at ``path`` (a system, or a folder or HDF5 file holding
    systems), in path order, selected by an ASE index string over all of them."""
    if fmt not in READ_FORMATS:
        raise DeepmdError(f"unknown DeePMD format {fmt!r}; choose from {', '.join(READ_FORMATS)}")
    dpdata = require_dpdata(f"reading DeePMD data {path}")
    frames: list[Atoms] = []
    for system in _system_names(Path(path), fmt):
        try:
            frames += dpdata.System(system, fmt=fmt).to("ase/structure")
        except Exception as exc:  # noqa: BLE001 - dpdata raises many kinds; all mean "cannot read this"
            raise DeepmdError(f"cannot read DeePMD system {system} ({fmt}): {type(exc).__name__}: {exc}") from None
    try:
        chosen = frames[string2index(index)]
    except (ValueError, IndexError) as exc:
        raise DeepmdError(f"index {index!r} of {path} ({len(frames)} frames): {exc}") from None
    chosen = chosen if isinstance(chosen, list) else [chosen]
    if not chosen:
        raise DeepmdError(f"{path} holds no frames (index {index!r})")
    return chosen


def _system_names(path: Path, fmt: str) -> list[str]:
    """The names dpdata opens, one per system: folders with a ``type.raw`` (this one, or those below
    it), or for HDF5 the file itself or ``file#group`` for each top-level group."""
    if fmt == "deepmd/hdf5":
        systems = _hdf5_systems(path)
    elif (path / _SYSTEM_MARKER).is_file():
        systems = [str(path)]
    else:
        systems = sorted(str(marker.parent) for marker in path.rglob(_SYSTEM_MARKER))
    if not systems:
        raise DeepmdError(f"{path} holds no DeePMD system (no {_SYSTEM_MARKER} in it or below it; format {fmt})")
    return systems


def _hdf5_systems(path: Path) -> list[str]:
    import h5py  # a dependency of dpdata

    try:
        with h5py.File(path, "r") as handle:
            if _SYSTEM_MARKER in handle:
                return [str(path)]
            return [f"{path}#{name}" for name in sorted(handle)
                    if isinstance(handle[name], h5py.Group) and _SYSTEM_MARKER in handle[name]]
    except OSError as exc:
        raise DeepmdError(f"cannot read DeePMD HDF5 file {path}: {exc}") from None
