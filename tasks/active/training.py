"""Committee members trained as independent tasks: labeled frames in, model file bytes out."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from tasks.nnp.repulsion import PairTable
from tasks.nnp.train import TrainSettings, pair_cutoff_A, prepare, train_model
from tasks.outcome import Outcome, run_each
from tasks.potential import load_potential, resolve_device
from tasks.structures import Structure

__all__ = ["MemberJob", "TrainingFrame", "resolve_device", "train_batch", "train_member"]


@dataclasses.dataclass(frozen=True)
class TrainingFrame:
    structure: Structure
    energy_eV: float
    forces_eV_per_A: np.ndarray


@dataclasses.dataclass(frozen=True)
class MemberJob:
    seed: int
    frames: Sequence[TrainingFrame]
    warm_start: bytes | None = None  # the member's model file of the previous iteration


def train_member(job: MemberJob, elements: Sequence[str], settings: TrainSettings,
                 table: PairTable | None = None) -> dict[str, Any]:
    """``table``: the dimer scans' PairTable, needed when settings.repulsion.kind is dimer_table.
    The model file is the blend's when settings.repulsion is set (or the warm start is one)."""
    settings = settings.model_copy(update={"device": resolve_device(settings.device)})
    frames = []
    for f in job.frames:
        atoms = f.structure.to_atoms()
        atoms.calc = SinglePointCalculator(atoms, energy=f.energy_eV, forces=f.forces_eV_per_A)
        frames.append(atoms)
    dtype = getattr(torch, settings.dtype)
    data = prepare(frames, elements, pair_cutoff_A(settings), dtype, settings.device)
    warm = load_potential(job.warm_start, dtype, settings.device) if job.warm_start else None
    model, report = train_model(data, settings, job.seed, warm_start=warm, table=table)
    out = dataclasses.asdict(report)
    out.pop("history")
    return {"model": model.to_bytes(), "report": out, "device": settings.device}


def train_batch(keys: list[str], jobs: list[MemberJob], elements: Sequence[str], settings: TrainSettings,
                table: PairTable | None = None) -> list[Outcome]:
    return run_each(train_member, keys, jobs, elements, settings, table)
