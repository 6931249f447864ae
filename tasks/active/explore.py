"""Exploration with the committee: batched Langevin NVT of strained cells, and fixed-cell FIRE
relaxations of them; every frame comes back with the committee's force deviation."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from pydantic import Field

from tasks.md.integrators import langevin_step
from tasks.md.relax import FireSettings, fire_relax
from tasks.md.run import run
from tasks.md.state import initial_state
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.outcome import Outcome, run_each
from tasks.potential import load_potential
from tasks.settings import StrictModel
from tasks.structures import Structure


class ExploreSettings(StrictModel):
    """How each exploration run goes (the campaign's explore spec derives from it); the committee's
    dtype and device travel with its files (CommitteeFiles)."""

    steps: int = Field(200, ge=1)
    frame_every: int = Field(10, ge=1)
    timestep_fs: float = Field(1.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0)
    relax_steps: int = Field(100, ge=1, description="FIRE steps of the fixed-cell relaxations")


@dataclasses.dataclass(frozen=True)
class ExploreJob:
    """One batched run: every structure at every strain, at one temperature (None: relaxation)."""

    structures: Sequence[Structure]
    strains: Sequence[float]
    temperature_K: float | None
    seed: int


@dataclasses.dataclass(frozen=True)
class ExploredFrames:
    """Frames of one job, flattened over (snapshot, system); per-atom arrays are concatenated."""

    condition: list[str]  # e.g. "T=600K strain=+0.05 mx2-MoS2#0"
    trajectory: np.ndarray  # (F,) index of the system within the job
    step: np.ndarray  # (F,)
    deviation_eV_per_A: np.ndarray  # (F,)
    structures: list[Structure]


def strained(structure: Structure, strain: float) -> Atoms:
    """Isotropic strain of the periodic directions (a monolayer's vacuum is left alone)."""
    atoms = structure.to_atoms()
    scale = np.where(atoms.pbc, 1.0 + strain, 1.0)
    atoms.set_cell(atoms.cell.array * scale[:, None], scale_atoms=True)
    return atoms


@dataclasses.dataclass(frozen=True, eq=False)
class CommitteeFiles:
    """The members' potential files (any format load_potential reads) and the numbers they run
    with, as one object (Dask would read a bare list argument as tasks). device "auto": the
    worker's GPU when it has one."""

    models: tuple[bytes, ...]
    dtype: str = "float64"
    device: str = "auto"

    def load(self) -> Committee:
        return Committee([load_potential(m, self.dtype, self.device) for m in self.models])


def explore(job: ExploreJob, committee_files: CommitteeFiles, settings: ExploreSettings) -> ExploredFrames:
    committee = committee_files.load()
    dtype, device = committee.dtype, committee.device
    systems, names = [], []
    for s_index, structure in enumerate(job.structures):
        for strain in job.strains:
            systems.append(strained(structure, strain))
            names.append(f"{structure.tag}#{s_index} strain={strain:+.3f}")
    if job.temperature_K is None:
        result = fire_relax(committee, systems, FireSettings(max_steps=settings.relax_steps))
        out = committee(AtomsBatch.from_atoms(result.systems, dtype=dtype, device=device))
        deviation = out["force_deviation"].cpu().numpy()
        return ExploredFrames([f"relax {n}" for n in names], np.arange(len(systems)),
                              np.full(len(systems), result.steps), deviation,
                              [Structure.from_atoms(a, "explore-relax") for a in result.systems])
    state = initial_state(committee, systems, temperature_K=job.temperature_K, seed=job.seed)
    step = partial(langevin_step, model=committee, timestep_fs=settings.timestep_fs,
                   temperature_K=job.temperature_K, friction_per_fs=settings.friction_per_fs,
                   generator=torch.Generator(device=device).manual_seed(job.seed))
    _, trajectory = run(state, step, settings.steps, observe_every=settings.frame_every, keep_positions=True)
    starts = np.concatenate([[0], np.cumsum([len(a) for a in systems])])
    tag = f"explore-T{job.temperature_K:g}"
    cells = [Structure.from_atoms(a, tag) for a in systems]  # numbers, cell, pbc of each system
    condition, index, steps, deviation, structures = [], [], [], [], []
    for f in range(1, len(trajectory.step)):  # snapshot 0 is the starting cell itself
        for b, cell in enumerate(cells):
            condition.append(f"T={job.temperature_K:g}K {names[b]}")
            index.append(b)
            steps.append(int(trajectory.step[f]))
            deviation.append(float(trajectory.force_deviation_eV_per_A[f, b]))
            structures.append(dataclasses.replace(cell, positions_A=trajectory.positions_A[f, starts[b]:starts[b + 1]]))
    return ExploredFrames(condition, np.array(index), np.array(steps), np.array(deviation), structures)


def explore_batch(keys: list[str], jobs: list[ExploreJob], committee_files: CommitteeFiles,
                  settings: ExploreSettings) -> list[Outcome]:
    return run_each(explore, keys, jobs, committee_files, settings)
