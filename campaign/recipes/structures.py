"""Structures named by a spec: read from files or generated with seeds."""

from __future__ import annotations

import ase.io

from campaign.errors import SpecError
from campaign.spec import FileSource, GenerateSource, StructureSource
from tasks.generate import bulk_crystal, monolayer_mx2, nias_bulk, perturbed_copies
from tasks.structures import Structure


def read_file_source(source: FileSource) -> list[Structure]:
    try:
        frames = ase.io.read(source.file, index=source.index, format=source.format)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds; all mean "cannot read this file"
        raise SpecError(f"cannot read structures from {source.file}: {type(exc).__name__}: {exc}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise SpecError(f"{source.file} holds no structures (index {source.index!r})")
    tag = source.tag or source.file.name
    return [Structure.from_atoms(atoms, tag) for atoms in frames]


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
    return [Structure.from_atoms(atoms, tag) for atoms in copies]


def load_structures(sources: list[StructureSource]) -> list[Structure]:
    structures: list[Structure] = []
    for source in sources:
        structures += read_file_source(source) if isinstance(source, FileSource) else generate_source(source)
    return structures
