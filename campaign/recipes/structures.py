"""Structures named by a spec: read from files or DeePMD data, or generated with seeds."""

from __future__ import annotations

import ase.io
import numpy as np

from campaign.deepmd import DeepmdError, read_deepmd
from campaign.errors import SpecError
from campaign.spec import DeepmdSource, FileSource, GenerateSource, StructureSource
from tasks.generate import bulk_crystal, monolayer_mx2, nias_bulk, perturbed_copies
from tasks.structures import Structure


# A periodic cell vector shorter than this, or periodic vectors spanning less than this fraction
# of the volume (area) of a box with their lengths, is no crystal: the labeler would loop over
# images forever or fail, and a relaunch would try it again.
MIN_PERIODIC_LENGTH_A = 0.1
MIN_VOLUME_FRACTION = 1e-3


def check_structure(structure: Structure, where: str) -> None:
    """SpecError naming ``where`` if positions or cell are not finite or the periodic cell is degenerate."""
    bad = ~np.isfinite(structure.positions_A).all(axis=1)
    if bad.any():
        raise SpecError(f"{where}: positions are not finite (atom {int(np.argmax(bad))}: "
                        f"{structure.positions_A[np.argmax(bad)].tolist()}; {int(bad.sum())} such atoms)")
    if not np.isfinite(structure.cell_A).all():
        raise SpecError(f"{where}: the cell is not finite: {structure.cell_A.tolist()}")
    periodic = structure.cell_A[structure.pbc]
    if not len(periodic):
        return
    lengths = np.linalg.norm(periodic, axis=1)
    if lengths.min() < MIN_PERIODIC_LENGTH_A:
        axis = int(np.flatnonzero(structure.pbc)[np.argmin(lengths)])
        raise SpecError(f"{where}: degenerate cell: periodic cell vector {axis} is {lengths.min():.3g} Å long "
                        f"(cell {structure.cell_A.tolist()}, pbc {structure.pbc.tolist()})")
    # Volume (area, length) spanned by the periodic vectors: the square root of their Gram determinant.
    volume = float(np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0)))
    if volume < MIN_VOLUME_FRACTION * float(np.prod(lengths)):
        raise SpecError(f"{where}: degenerate cell: the periodic cell vectors span (almost) no volume "
                        f"({volume:.3g} Å^{len(periodic)}; cell {structure.cell_A.tolist()}, "
                        f"pbc {structure.pbc.tolist()})")


def read_file_source(source: FileSource) -> list[Structure]:
    try:
        frames = ase.io.read(source.file, index=source.index, format=source.format)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds; all mean "cannot read this file"
        raise SpecError(f"cannot read structures from {source.file}: {type(exc).__name__}: {exc}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise SpecError(f"{source.file} holds no structures (index {source.index!r})")
    return _checked_frames(frames, source.tag or source.file.name, f"{source.file}", source.index)


def read_deepmd_source(source: DeepmdSource) -> list[Structure]:
    try:
        frames = read_deepmd(source.deepmd, source.format, source.index)
    except DeepmdError as exc:
        raise SpecError(str(exc)) from None
    return _checked_frames(frames, source.tag or source.deepmd.name, f"{source.deepmd}", source.index)


def _checked_frames(frames: list, tag: str, where: str, index: str) -> list[Structure]:
    structures = [Structure.from_atoms(atoms, tag) for atoms in frames]
    for i, structure in enumerate(structures):
        check_structure(structure, f"{where} frame {i} (index {index!r})")
    return structures


def generate_source(source: GenerateSource) -> list[Structure]:
    try:
        if source.prototype == "mx2":
            base = monolayer_mx2(source.formula, source.a_A, source.thickness_A, source.supercell, source.vacuum_A)
        elif source.prototype == "nias":
            base = nias_bulk(source.formula, source.a_A, source.c_A, source.supercell)
        else:
            base = bulk_crystal(source.formula, source.crystalstructure, source.a_A, source.c_A, source.supercell)
        copies = perturbed_copies(base, source.count, seed=source.seed, max_strain=source.max_strain,
                                  rattle_A=source.rattle_A, vacancy_species=source.vacancy_species,
                                  vacancy_fractions=source.vacancy_fractions)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SpecError(f"cannot generate {source.prototype} {source.formula}: {exc}") from None
    tag = source.tag or f"{source.prototype}-{source.formula}"
    structures = [Structure.from_atoms(atoms, tag) for atoms in copies]
    for i, structure in enumerate(structures):
        check_structure(structure, f"generated {source.prototype} {source.formula} (tag {tag}) copy {i}")
    return structures


_READERS = {FileSource: read_file_source, DeepmdSource: read_deepmd_source, GenerateSource: generate_source}


def load_structures(sources: list[StructureSource]) -> list[Structure]:
    structures: list[Structure] = []
    for source in sources:
        structures += _READERS[type(source)](source)
    return structures
