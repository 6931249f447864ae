"""Vacancy-diffusion Monte Carlo on a slab as keyed tasks: a group of chains advanced by one segment
per task, from the checkpoints the previous segment left (tasks.mc.slab_chain).

A segment's outcome carries each chain's checkpoint (SlabChain.to_record), its trace and its
snapshots; the driver commits them, and the next segment starts from those checkpoints, on this
launch or a later one. The first segment also records every chain's start (step 0): its trace row
and, when snapshots are taken, its snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np

from tasks.mc.schedule import ConstantTemperature
from tasks.mc.slab_build import Slab
from tasks.mc.slab_chain import SlabChain, SlabMoves, SlabTrace, Snapshot, advance, new_slab_chain, trace_now
from tasks.outcome import Outcome, run_each
from tasks.potential import PotentialFiles


@dataclass(frozen=True, eq=False)
class SlabStart:
    """A chain to start: its name, replica and seed (the seed draws its start and its moves)."""

    name: str
    replica: int
    seed: int


@dataclass(frozen=True, eq=False)
class SlabSegmentJob:
    """One task: a group of chains and the segment they run now. ``records``: their checkpoints
    after the previous segment, None for the first one."""

    chains: tuple[SlabStart, ...]
    segment: int
    records: tuple[dict, ...] | None


@dataclass(frozen=True)
class SlabSegmentSettings:
    schedule: ConstantTemperature
    moves: SlabMoves
    steps_per_segment: int
    record_every: int
    snapshot_every: int  # 0: none
    random_start: bool  # each chain draws its own Cr/vacancy arrangement; else the slab's own

    @property
    def n_segments(self) -> int:
        return -(-self.schedule.total_steps // self.steps_per_segment)


@dataclass(frozen=True, eq=False)
class SlabSegmentResult:
    records: list[dict]
    traces: list[SlabTrace]
    snapshots: list[list[Snapshot]]
    seconds: float


def start_site_atom(slab: Slab, start: SlabStart) -> np.ndarray:
    """A chain's random start: the slab's metal atoms shuffled over its sites, drawn from its seed."""
    return np.random.default_rng([start.seed, 1]).permutation(slab.site_atom)


def layer_vdw_fraction(slab: Slab, metal_per_layer: np.ndarray) -> np.ndarray:
    """slab_analysis.vdw_fraction from metal atoms per layer (..., n_layers): the vdW sites are whole
    layers, so the atoms on them follow from the layers' counts."""
    share = np.stack([np.bincount(slab.site_layer, weights=sites, minlength=slab.n_layers)
                      for sites in slab.vdw_sites()]) / np.bincount(slab.site_layer, minlength=slab.n_layers)
    counts = np.asarray(metal_per_layer, dtype=np.float64)
    return (counts @ share.T).max(axis=-1) / np.maximum(counts.sum(axis=-1), 1)


def slab_segments(keys: list[str], jobs: list[SlabSegmentJob], slab: Slab, potential: PotentialFiles,
                  settings: SlabSegmentSettings) -> list[Outcome]:
    model = potential.load()
    return run_each(_segment, keys, jobs, slab, model, settings)


def _segment(job: SlabSegmentJob, slab: Slab, model, settings: SlabSegmentSettings) -> SlabSegmentResult:
    begin = time.perf_counter()
    if job.records is None:
        chains = [new_slab_chain(model, slab, c.seed, start_site_atom(slab, c) if settings.random_start else None)
                  for c in job.chains]
        starts = [trace_now(c, slab, settings.schedule.temperature_K(0)) for c in chains]
        first_snapshots = [[Snapshot(0, c.positions.copy(), c.site_atom.copy())] if settings.snapshot_every else []
                           for c in chains]
    else:
        chains = [SlabChain.from_record(r) for r in job.records]
        starts, first_snapshots = None, [[] for _ in chains]
    expected = job.segment * settings.steps_per_segment
    if any(c.step != expected for c in chains):
        raise ValueError(f"segment {job.segment} starts at step {expected}, the checkpoints are at "
                         f"{sorted({c.step for c in chains})}")
    advanced = advance(model, slab, chains, settings.schedule, settings.moves, settings.steps_per_segment,
                       settings.record_every, settings.snapshot_every)
    traces = advanced.traces if starts is None else [_joined(a, b) for a, b in zip(starts, advanced.traces)]
    snapshots = [first + later for first, later in zip(first_snapshots, advanced.snapshots)]
    return SlabSegmentResult([c.to_record() for c in chains], traces, snapshots, time.perf_counter() - begin)


def _joined(first: SlabTrace, then: SlabTrace) -> SlabTrace:
    return SlabTrace(**{f.name: np.concatenate([getattr(first, f.name), getattr(then, f.name)])
                        for f in fields(SlabTrace)})
