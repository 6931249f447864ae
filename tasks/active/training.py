"""Committee members trained as independent tasks: labeled frames in, model file bytes out."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from tasks.nnp.model import BehlerParrinello
from tasks.nnp.train import TrainSettings, prepare, train_model
from tasks.outcome import Outcome, run_each
from tasks.structures import Structure


@dataclasses.dataclass(frozen=True)
class TrainingFrame:
    structure: Structure
    energy_eV: float
    forces_eV_per_A: np.ndarray


@dataclasses.dataclass(frozen=True)
class MemberJob:
    seed: int
    frames: Sequence[TrainingFrame]
    warm_start: bytes | None = None  # the member's model of the previous iteration


def resolve_device(device: str) -> str:
    """"auto" takes the worker's GPU when it has one (SLURM jobs with gres), else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def train_member(job: MemberJob, elements: Sequence[str], settings: TrainSettings) -> dict[str, Any]:
    settings = dataclasses.replace(settings, device=resolve_device(settings.device))
    frames = []
    for f in job.frames:
        atoms = f.structure.to_atoms()
        atoms.calc = SinglePointCalculator(atoms, energy=f.energy_eV, forces=f.forces_eV_per_A)
        frames.append(atoms)
    dtype = getattr(torch, settings.dtype)
    data = prepare(frames, elements, max(settings.radial_cutoff_A, settings.angular_cutoff_A), dtype,
                   settings.device)
    warm = BehlerParrinello.from_bytes(job.warm_start, dtype, settings.device) if job.warm_start else None
    model, report = train_model(data, settings, job.seed, warm_start=warm)
    out = dataclasses.asdict(report)
    out.pop("history")
    return {"model": model.to_bytes(), "report": out, "device": settings.device}


def train_batch(keys: list[str], jobs: list[MemberJob], elements: Sequence[str],
                settings: TrainSettings) -> list[Outcome]:
    return run_each(train_member, keys, jobs, elements, settings)
