"""Ion impacts on a sheet: settings, one job per impact, and the batched run of many jobs.

``run_impacts`` builds one system per job (the sheet plus the ion above it), thermalises the
sheets if asked, then launches every ion and advances all systems together (tasks.irradiation
.cascade) until each reaches its end time. Each job carries its own seed: its aim point, its
thermal velocities and its thermostat noise come from it alone, so an impact is the same whether
it runs alone or in a batch.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from pydantic import Field

from tasks.irradiation.cascade import (ION, Cascade, Escape, Finished, border_kinetic_eV,
                                       finite_systems, remove_escaped, remove_sheet_drift, step,
                                       take_finished)
from tasks.irradiation.damage import (IonFate, detached, interstitials, ion_fate, origin_labels, sheet_planes_A,
                                      vacancies_by_origin, wigner_seitz)
from tasks.irradiation.target import Target, direction, ion_speed, with_ion
from tasks.md.integrators import adaptive_timestep_fs
from tasks.md.state import KB_EV_PER_K, initial_state
from tasks.outcome import Outcome, worker_name
from tasks.potential import PotentialFiles
from tasks.settings import StrictModel


class ImpactSettings(StrictModel):
    """How one impact is simulated (every field enters the impact's key)."""

    temperature_K: float = Field(0.0, ge=0, description="sheet temperature before impact and of the border bath")
    thermalise_ps: float = Field(0.2, ge=0, description="Langevin thermalisation of the sheet before impact "
                                 "(skipped at 0 K)")
    thermalise_timestep_fs: float = Field(1.0, gt=0, le=2.0)
    end_time_ps: float = Field(1.0, gt=0, description="simulated time after the ion starts")
    max_displacement_A: float = Field(0.05, gt=0, le=0.2, description="largest move of any atom in one step")
    max_energy_step_eV: float | None = Field(None, gt=0, description="also: no atom's force does more work "
                                             "than this over its move (LAMMPS's emax); tighter energy conservation "
                                             "at several times the steps")
    min_timestep_fs: float = Field(1e-3, gt=0)
    max_timestep_fs: float = Field(1.0, gt=0, le=1.0)
    border_width_A: float = Field(4.0, ge=0, description="Langevin strip along the lateral cell borders")
    border_friction_per_fs: float = Field(0.05, ge=0)
    start_height_A: float = Field(1.0, gt=0, description="ion start above the top plane, beyond the cutoff")
    escape_margin_A: float = Field(2.0, gt=0, description="beyond cutoff + this from the sheet's outer "
                                   "planes, an atom moving away has left")
    remove_drift: bool = Field(True, description="remove the sheet's centre-of-mass velocity every step")
    bond_cutoff_A: float = Field(3.0, gt=0, description="atoms further apart are not bonded: at the end, "
                                 "atoms not connected to the sheet are sputtered")
    drift_bound_eV: float = Field(1.0, gt=0, description="health: |energy drift| of the NVE core above this "
                                  "flags the impact")
    border_alert_eV: float = Field(1.0, gt=0, description="health: a border atom this hot flags the impact")


@dataclass(frozen=True)
class ImpactJob:
    ion: str
    energy_eV: float
    aim_fraction: tuple[float, float]
    polar_deg: float
    azimuth_deg: float
    seed: int
    index: int = 0  # the impact's number within its (ion, energy)


@dataclass(frozen=True)
class Trajectories:
    """What the dynamics left of each job, by job position: its end state and its escapes."""

    finished: list[Finished]
    escapes: list[list[Escape]]


# the sheet's thermalisation, before impact: explore's default friction (100 fs), weak enough not
# to damp the phonons the equilibrium needs
THERMALISE_FRICTION_PER_FS = 0.01


def thermal_velocities(masses: np.ndarray, temperature_K: float, rng: np.random.Generator) -> np.ndarray:
    """Maxwell–Boltzmann velocities (ASE units) with no centre-of-mass motion."""
    if temperature_K <= 0:
        return np.zeros((len(masses), 3))
    v = rng.normal(size=(len(masses), 3)) * np.sqrt(KB_EV_PER_K * temperature_K / masses)[:, None]
    return v - (masses[:, None] * v).sum(0) / masses.sum()


def in_border(target: Target, width_A: float) -> np.ndarray:
    """(n_sheet,) bool: atoms within ``width_A`` of the lateral faces of the cell."""
    cell = target.atoms.cell.array
    fractions = target.atoms.get_scaled_positions(wrap=True)[:, :2]
    normal = np.cross(cell[2], cell[[1, 0]] * np.array([[1], [-1]]))  # faces spanned by (a2, c) and (c, a1)
    widths = np.abs(np.einsum("ij,ij->i", cell[:2], normal / np.linalg.norm(normal, axis=1)[:, None]))
    distance = np.minimum(fractions, 1 - fractions) * widths
    return (distance < width_A).any(axis=1)


def _generators(seeds: Sequence[int], stream: int) -> tuple[torch.Generator, ...]:
    return tuple(torch.Generator().manual_seed(int(np.random.default_rng([s, stream]).integers(2 ** 62)))
                 for s in seeds)


def launch(model, target: Target, jobs: Sequence[ImpactJob], settings: ImpactSettings) -> Cascade:
    """Systems at the moment their ions start: thermalised sheets (if T > 0), ions moving."""
    origins = origin_labels(target.atoms)
    n_sheet = len(target.atoms)
    height = model.cutoff_A + settings.start_height_A
    systems = []
    for job in jobs:
        atoms = with_ion(target, job.ion, np.asarray(job.aim_fraction), height, job.polar_deg, job.azimuth_deg)
        velocities = np.zeros((len(atoms), 3))
        velocities[:n_sheet] = thermal_velocities(atoms.get_masses()[:n_sheet], settings.temperature_K,
                                                  np.random.default_rng([job.seed, 2]))
        atoms.set_velocities(velocities)
        systems.append(atoms)
    ion_fixed = [np.arange(len(a)) == n_sheet for a in systems]
    md = initial_state(model, systems, seed=0, fixed=ion_fixed, skin_A=1.0)
    n = len(jobs)
    dtype, device = md.energy.dtype, md.energy.device
    origin = torch.as_tensor(np.tile(np.append(origins, ION), n), device=device)
    zeros = torch.zeros(n, dtype=dtype, device=device)
    top, bottom = target.atoms.positions[:, 2].max(), target.atoms.positions[:, 2].min()
    cascade = Cascade(md=md, origin=origin, index=torch.as_tensor(np.tile(np.arange(n_sheet + 1), n), device=device),
                      bath=origin != ION, impact=torch.arange(n, device=device),
                      top_z_A=zeros + top, bottom_z_A=zeros + bottom,
                      end_fs=zeros + settings.end_time_ps * 1000, exchanged_eV=zeros, start_energy_eV=zeros,
                      max_drift_eV=zeros, border_max_kinetic_eV=zeros,
                      steps=torch.zeros(n, dtype=torch.long, device=device),
                      generators=_generators([j.seed for j in jobs], 3))
    if settings.temperature_K > 0 and settings.thermalise_ps > 0:
        dt = zeros + settings.thermalise_timestep_fs
        kT = zeros + settings.temperature_K
        for _ in range(int(round(settings.thermalise_ps * 1000 / settings.thermalise_timestep_fs))):
            cascade = step(cascade, model, dt, kT, THERMALISE_FRICTION_PER_FS)
        cascade = remove_sheet_drift(cascade)
    # the ions start: free, at their speed; the bath shrinks to the border strip; clocks restart
    md = cascade.md
    velocities = md.velocities.clone()
    ions = torch.nonzero(origin == ION).squeeze(1)
    for row, job in zip(ions.tolist(), jobs):
        velocities[row] = torch.as_tensor(ion_speed(job.ion, job.energy_eV)
                                          * direction(job.polar_deg, job.azimuth_deg), dtype=dtype)
    md = replace(md, velocities=velocities, fixed=torch.zeros_like(md.fixed), time_fs=zeros.clone(), step=0)
    border = torch.as_tensor(np.tile(np.append(in_border(target, settings.border_width_A), False), n), device=device)
    cascade = replace(cascade, md=md, bath=border, steps=torch.zeros_like(cascade.steps), exchanged_eV=zeros.clone())
    return replace(cascade, start_energy_eV=cascade.total_energy_eV().detach().clone())


def advance(model, cascade: Cascade, settings: ImpactSettings,
            on_step=None) -> tuple[list[Finished], list[Escape]]:
    """Run every system to its end time; ``on_step(cascade)``, if given, sees each step."""
    finished, escapes = [], []
    escape_distance = model.cutoff_A + settings.escape_margin_A
    bath_T = settings.temperature_K
    while cascade.n_systems:
        dt = adaptive_timestep_fs(cascade.md, max_displacement_A=settings.max_displacement_A,
                                  min_timestep_fs=settings.min_timestep_fs, max_timestep_fs=settings.max_timestep_fs,
                                  max_energy_step_eV=settings.max_energy_step_eV)
        dt = torch.minimum(dt, torch.clamp(cascade.end_fs - cascade.md.time_fs, min=settings.min_timestep_fs))
        cascade = step(cascade, model, dt, torch.full_like(dt, bath_T), settings.border_friction_per_fs)
        if settings.remove_drift:
            cascade = remove_sheet_drift(cascade)
        cascade, gone = remove_escaped(cascade, model, escape_distance)
        escapes += gone
        drift = cascade.drift_eV().detach().abs()
        cascade = replace(cascade, max_drift_eV=torch.maximum(cascade.max_drift_eV, torch.nan_to_num(drift, nan=np.inf)),
                          border_max_kinetic_eV=torch.maximum(cascade.border_max_kinetic_eV, border_kinetic_eV(cascade)))
        if on_step is not None:
            on_step(cascade)
        finite = finite_systems(cascade)
        done = (cascade.md.time_fs >= cascade.end_fs - 1e-9) | ~finite
        cascade, ended = take_finished(cascade, done, finite)
        finished += ended
    return finished, escapes


def run_trajectories(model, target: Target, jobs: Sequence[ImpactJob], settings: ImpactSettings) -> Trajectories:
    """The dynamics of every job, batched; results by job position."""
    cascade = launch(model, target, jobs, settings)
    finished, escapes = advance(model, cascade, settings)
    by_impact = {f.impact: f for f in finished}
    flights: list[list[Escape]] = [[] for _ in jobs]
    for e in escapes:
        flights[e.impact].append(e)
    return Trajectories([by_impact[i] for i in range(len(jobs))], flights)


# -- what each impact did ------------------------------------------------------------------------
@dataclass(frozen=True)
class SputteredAtom:
    index: int  # in the pristine sheet
    number: int
    origin: int  # damage.Origin
    position_A: np.ndarray
    velocity_A_per_fs: np.ndarray
    time_fs: float
    in_flight: bool  # left during the run (else: found detached at the end)


@dataclass(frozen=True)
class ImpactResult:
    job: ImpactJob
    aim_A: np.ndarray  # (2,) x, y of the aim point
    sputtered: list[SputteredAtom]
    vacancies_by_origin: np.ndarray  # (3,) top, metal, bottom sites left empty
    interstitials: int
    ion_fate: str
    steps: int
    time_fs: float
    energy_drift_eV: float
    max_energy_drift_eV: float
    border_max_kinetic_eV: float
    flags: tuple[str, ...]  # "non-finite", "energy-drift", "border-hot"
    end_numbers: np.ndarray
    end_positions_A: np.ndarray
    end_index: np.ndarray  # each end atom's index in the pristine sheet; the sheet's size for the ion
    end_cell_A: np.ndarray
    end_pbc: np.ndarray
    sheet_elements: tuple[str, ...]

    def sputtered_by_origin(self) -> np.ndarray:
        """(3,) sputtered sheet atoms from the top, metal and bottom layers."""
        return np.bincount([s.origin for s in self.sputtered if s.origin != ION], minlength=3)[:3]


def summarise(target: Target, job: ImpactJob, end: Finished, flights: Sequence[Escape],
              settings: ImpactSettings) -> ImpactResult:
    """Sputtered atoms (in flight, and detached from the sheet at the end), vacancies by
    Wigner–Seitz against the pristine sheet, the ion's fate and the health flags."""
    sheet_origins = origin_labels(target.atoms)
    if not end.finite:  # positions may be NaN: nothing to analyse, the flag says why
        return _result(target, job, end, [], np.zeros(3, int), 0, "unknown", ("non-finite",))
    end_atoms = Atoms(numbers=end.numbers, positions=end.positions_A, cell=end.cell_A, pbc=end.pbc)
    loose = detached(end_atoms, settings.bond_cutoff_A) if len(end_atoms) else np.zeros(0, bool)
    sputtered = [SputteredAtom(e.index, e.number, e.origin, e.position_A, e.velocity_A_per_fs, e.time_fs, True)
                 for e in flights if e.origin != ION]
    sputtered += [SputteredAtom(int(end.index[a]), int(end.numbers[a]), int(end.origin[a]), end.positions_A[a],
                                end.velocities_A_per_fs[a], end.time_fs, False)
                  for a in np.flatnonzero(loose) if end.origin[a] != ION]
    bonded = ~loose
    occupancy = wigner_seitz(target.atoms.positions, target.atoms.cell.array, target.atoms.pbc,
                             end.positions_A[bonded])
    top, bottom = sheet_planes_A(target.atoms.positions, sheet_origins)
    fate = ion_fate_of(end, flights, loose, top, bottom)
    flags = []
    if end.max_energy_drift_eV > settings.drift_bound_eV:
        flags.append("energy-drift")
    if end.border_max_kinetic_eV > settings.border_alert_eV:
        flags.append("border-hot")
    return _result(target, job, end, sputtered, vacancies_by_origin(occupancy, sheet_origins)[:3],
                   interstitials(occupancy), fate, tuple(flags))


def _result(target: Target, job: ImpactJob, end: Finished, sputtered: list[SputteredAtom], vacancies: np.ndarray,
            n_interstitials: int, fate: str, flags: tuple[str, ...]) -> ImpactResult:
    return ImpactResult(job=job, aim_A=target.aim_point_A(np.asarray(job.aim_fraction))[:2], sputtered=sputtered,
                        vacancies_by_origin=vacancies, interstitials=n_interstitials, ion_fate=fate, steps=end.steps,
                        time_fs=end.time_fs, energy_drift_eV=end.energy_drift_eV,
                        max_energy_drift_eV=end.max_energy_drift_eV, border_max_kinetic_eV=end.border_max_kinetic_eV,
                        flags=flags, end_numbers=end.numbers, end_positions_A=end.positions_A, end_index=end.index,
                        end_cell_A=end.cell_A, end_pbc=end.pbc,
                        sheet_elements=tuple(sorted(set(target.atoms.get_chemical_symbols()))))


def ion_fate_of(end: Finished, flights: Sequence[Escape], loose: np.ndarray, top_z_A: float,
                bottom_z_A: float) -> str:
    for e in flights:
        if e.origin == ION:
            return (IonFate.REFLECTED if e.upward else IonFate.TRANSMITTED).value
    ion = np.flatnonzero(end.origin == ION)
    if not len(ion):  # never: an ion is either in flight or in the end state
        raise RuntimeError("the ion is neither in the end state nor among the escaped atoms")
    a = int(ion[0])
    return ion_fate(float(end.positions_A[a, 2]), bool(loose[a]), top_z_A, bottom_z_A).value


def run_impacts(model, target: Target, jobs: Sequence[ImpactJob], settings: ImpactSettings) -> list[ImpactResult]:
    """Every job's impact, batched, summarised; in job order."""
    runs = run_trajectories(model, target, jobs, settings)
    return [summarise(target, job, end, flights, settings)
            for job, end, flights in zip(jobs, runs.finished, runs.escapes)]


# -- one task: a batch of impacts ----------------------------------------------------------------
def impact_batch(keys: list[str], jobs: list[ImpactJob], target: Target, potential: PotentialFiles,
                 settings: ImpactSettings) -> list[Outcome]:
    """All ``jobs`` as one batched state; an impact that goes wrong numerically is returned with
    its health flags, an exception fails the whole batch (each item carries it to the ledger)."""
    start = time.perf_counter()
    where = worker_name()
    try:
        results = run_impacts(potential.load(), target, jobs, settings)
    except Exception as exc:  # noqa: BLE001 - recorded per item; a later launch retries them
        text = traceback.format_exc()
        return [Outcome(key, error=f"{type(exc).__name__}: {exc}", error_kind="calculation", traceback=text,
                        duration_s=time.perf_counter() - start, worker=where) for key in keys]
    share = (time.perf_counter() - start) / max(len(jobs), 1)
    return [Outcome(key, value=result, duration_s=share, worker=where) for key, result in zip(keys, results)]
