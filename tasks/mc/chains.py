"""Many Monte Carlo chains advanced together: one proposal per chain per step, the energies of
every chain's proposal in one call of the energy model.

Moves: a swap exchanges a group of occupied and vacant mobile sites (static energies, sites at
their lattice positions); a cell move scales each strained lattice vector by exp(ε), ε uniform in
±max_strain, fractional coordinates kept. Metropolis acceptance of a cell move at pressure P:

    ln A = −(ΔE + P ΔV) / k_B T + (N + 1) ln(V′/V)       (N = atoms, vacancies not counted)

N ln(V′/V) is the Jacobian of scaled coordinates (the study's term); the extra ln(V′/V) is the
ratio of the reverse and forward proposal densities of log-uniform strains, which makes the chain
sample the NPT distribution exactly (one atom's worth out of hundreds in the study's cells).

A chain's state (occupation, cell, energy, step, RNG state, counters, the best structure of the
current cycle) is plain data: ``to_record``/``from_record`` checkpoint it, and a chain resumed
from a checkpoint follows exactly the steps an uninterrupted chain takes. ``advance`` builds the
site pairs afresh from each chain's cell at its start, so a run split into segments does the same
arithmetic whether or not it was interrupted between them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from ase.units import kB

from tasks.mc.energy import EnergyModel, EnergyRequest, has_site_energies
from tasks.mc.schedule import EV_PER_A3_PER_GPA, MoveSettings
from tasks.mc.site_features import SwapRequest, site_features_of
from tasks.mc.sites import SiteLattice, site_pairs

SWAP, CELL = 0, 1


@dataclass
class ChainState:
    occupation: np.ndarray  # (n_sites,) atomic numbers, 0 = vacancy
    cell: np.ndarray  # (3, 3) Å
    energy_eV: float
    seed: int
    rng: np.random.Generator
    step: int = 0
    proposed: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # swap, cell
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    best_energy_eV: float = np.inf  # lowest energy of the current cycle, and its structure
    best_occupation: np.ndarray | None = None
    best_cell: np.ndarray | None = None
    best_step: int = -1

    @property
    def n_atoms(self) -> int:
        return int(np.count_nonzero(self.occupation))

    def to_record(self) -> dict:
        """Plain arrays and a JSON string: everything to continue the chain exactly."""
        return {"occupation": self.occupation.copy(), "cell": self.cell.copy(), "energy_eV": float(self.energy_eV),
                "seed": int(self.seed), "rng_state": json.dumps(self.rng.bit_generator.state),
                "step": int(self.step), "proposed": self.proposed.copy(), "accepted": self.accepted.copy(),
                "best_energy_eV": float(self.best_energy_eV), "best_occupation": _or_copy(self.best_occupation,
                                                                                          self.occupation),
                "best_cell": _or_copy(self.best_cell, self.cell), "best_step": int(self.best_step)}

    @classmethod
    def from_record(cls, record: dict) -> "ChainState":
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = json.loads(str(record["rng_state"]))
        has_best = int(record["best_step"]) >= 0
        return cls(occupation=np.array(record["occupation"], dtype=np.int64),
                   cell=np.array(record["cell"], dtype=np.float64), energy_eV=float(record["energy_eV"]),
                   seed=int(record["seed"]), rng=rng, step=int(record["step"]),
                   proposed=np.array(record["proposed"], dtype=np.int64),
                   accepted=np.array(record["accepted"], dtype=np.int64),
                   best_energy_eV=float(record["best_energy_eV"]) if has_best else np.inf,
                   best_occupation=np.array(record["best_occupation"], dtype=np.int64) if has_best else None,
                   best_cell=np.array(record["best_cell"], dtype=np.float64) if has_best else None,
                   best_step=int(record["best_step"]))


def _or_copy(value: np.ndarray | None, fallback: np.ndarray) -> np.ndarray:
    return (fallback if value is None else value).copy()


def new_chain(model: EnergyModel, lattice: SiteLattice, occupation: np.ndarray, cell: np.ndarray,
              seed: int) -> ChainState:
    """A chain at step 0 with its energy computed; ``seed`` alone decides its moves."""
    occupation = np.asarray(occupation, dtype=np.int64)
    cell = np.asarray(cell, dtype=np.float64)
    pairs = site_pairs(lattice, cell, model.cutoff_A, skin_A=0.0)
    energy = float(model.energies(lattice, [EnergyRequest(occupation, cell, pairs)])[0])
    return ChainState(occupation=occupation.copy(), cell=cell.copy(), energy_eV=energy, seed=int(seed),
                      rng=np.random.default_rng(seed))


@dataclass(frozen=True, eq=False)
class Minimum:
    """The lowest structure one chain met during one cycle."""

    cycle: int
    step: int
    energy_eV: float
    occupation: np.ndarray
    cell: np.ndarray


@dataclass(frozen=True, eq=False)
class Trace:
    """Per chain, every ``record_every`` steps: step, temperature, energy, volume, counters."""

    step: np.ndarray  # (T,)
    temperature_K: np.ndarray
    energy_eV: np.ndarray
    volume_A3: np.ndarray
    proposed: np.ndarray  # (T, 2) swap, cell; cumulative
    accepted: np.ndarray  # (T, 2)


@dataclass(frozen=True, eq=False)
class Advanced:
    minima: list[list[Minimum]]  # per chain, the cycles that ended during this call
    traces: list[Trace]


def advance(model: EnergyModel, lattice: SiteLattice, chains: list[ChainState], schedule, moves: MoveSettings,
            n_steps: int, record_every: int = 100, skin_A: float = 1.0) -> Advanced:
    """Advance every chain by ``n_steps`` (not past the schedule's end) in place.

    With a model that gives site energies, every chain's site energies are kept (computed afresh
    here, at the start of the call): a swap then costs one evaluation, of the atoms within the
    cutoff of the moved sites in the new configuration, against their kept energies. Where the
    model's potential allows it (tasks.mc.site_features) the atoms' features are kept too, and a
    swap computes only the descriptor terms it changes."""
    pairs = [site_pairs(lattice, c.cell, model.cutoff_A, skin_A) for c in chains]
    features = site_features_of(model)
    kept = features is not None or has_site_energies(model)
    site_energy = state = None
    if chains and features is not None:
        state = features.whole(lattice, [EnergyRequest(c.occupation, c.cell, p) for c, p in zip(chains, pairs)])
        site_energy = [s.energies for s in state]
    elif chains and kept:
        site_energy = model.site_energies(lattice, [EnergyRequest(c.occupation, c.cell, p)
                                                    for c, p in zip(chains, pairs)])
    minima: list[list[Minimum]] = [[] for _ in chains]
    rows: list[list[tuple]] = [[] for _ in chains]
    pressure = moves.pressure_GPa * EV_PER_A3_PER_GPA
    mobile = np.flatnonzero(lattice.mobile)
    for _ in range(n_steps):
        live = [k for k, c in enumerate(chains) if c.step < schedule.total_steps]
        if not live:
            break
        for k in live:
            _close_cycle_if_due(chains[k], schedule, minima[k])
        proposals = [_propose(chains[k], schedule, moves, mobile) for k in live]
        requests: list[EnergyRequest] = []
        swaps: list[SwapRequest] = []
        plans: list[tuple] = []
        cell_pairs = {}
        for k, proposal in zip(live, proposals):
            chain = chains[k]
            if proposal.kind == CELL:
                # pairs found for the proposed cell replace the chain's only if the move is accepted:
                # they need not hold every pair of the current cell
                cell_pairs[k] = (pairs[k] if pairs[k].valid_for(proposal.cell)
                                 else site_pairs(lattice, proposal.cell, model.cutoff_A, skin_A))
                plans.append(("whole", len(requests), None))
                requests.append(EnergyRequest(chain.occupation, proposal.cell, cell_pairs[k]))
                continue
            touched = pairs[k].within_cutoff(proposal.sites, chain.cell)
            if features is not None:
                plans.append(("features", len(swaps), touched))
                swaps.append(SwapRequest(state[k], chain.occupation, proposal.occupation, proposal.sites, touched))
            elif kept:
                plans.append(("kept", len(requests), touched))
                requests.append(EnergyRequest(proposal.occupation, chain.cell, pairs[k], touched))
            elif 2 * np.count_nonzero(chain.occupation[touched]) > chain.n_atoms:
                # the move reaches most atoms (a small cell, a large group): one evaluation of the
                # whole new structure costs less than two of nearly all of it
                plans.append(("whole", len(requests), None))
                requests.append(EnergyRequest(proposal.occupation, chain.cell, pairs[k]))
            else:
                plans.append(("pair", len(requests), touched))
                requests.append(EnergyRequest(chain.occupation, chain.cell, pairs[k], touched))
                requests.append(EnergyRequest(proposal.occupation, chain.cell, pairs[k], touched))
        if features is not None:
            wholes = features.whole(lattice, requests) if requests else []
            swapped = features.swaps(swaps)
            sums = [w.energies.sum() for w in wholes]
        else:
            values = model.site_energies(lattice, requests) if kept else None
            sums = values.sum(axis=1) if kept else model.energies(lattice, requests)
        for k, proposal, (plan, first, touched) in zip(live, proposals, plans):
            chain = chains[k]
            temperature = schedule.temperature_K(chain.step)
            if plan == "whole":
                delta = float(sums[first]) - chain.energy_eV
            elif plan == "features":
                delta = float(swapped[first][1].sum() - site_energy[k][touched].sum())
            elif plan == "kept":
                delta = float(sums[first] - site_energy[k][touched].sum())
            else:
                delta = float(sums[first + 1] - sums[first])
            if proposal.kind == CELL:
                volume, new_volume = abs(np.linalg.det(chain.cell)), abs(np.linalg.det(proposal.cell))
                log_accept = (-(delta + pressure * (new_volume - volume)) / (kB * temperature)
                              + (chain.n_atoms + 1) * np.log(new_volume / volume))
            else:
                log_accept = -delta / (kB * temperature)
            chain.proposed[proposal.kind] += 1
            if np.log(proposal.uniform) < log_accept:
                chain.accepted[proposal.kind] += 1
                chain.energy_eV += delta
                if features is not None and plan == "whole":
                    state[k] = wholes[first]
                    site_energy[k] = state[k].energies
                elif plan == "features":
                    state[k].features[touched], site_energy[k][touched] = swapped[first]
                elif kept and plan == "whole":
                    site_energy[k] = values[first]
                elif kept:
                    site_energy[k][touched] = values[first][touched]
                if proposal.kind == CELL:
                    chain.cell, pairs[k] = proposal.cell, cell_pairs[k]
                else:
                    chain.occupation = proposal.occupation
            chain.step += 1
            if chain.energy_eV < chain.best_energy_eV:
                chain.best_energy_eV, chain.best_step = chain.energy_eV, chain.step
                chain.best_occupation, chain.best_cell = chain.occupation.copy(), chain.cell.copy()
            if chain.step % record_every == 0 or chain.step == schedule.total_steps:
                rows[k].append((chain.step, temperature, chain.energy_eV, abs(np.linalg.det(chain.cell)),
                                chain.proposed.copy(), chain.accepted.copy()))
    for k, chain in enumerate(chains):
        if chain.step == schedule.total_steps:
            _close_cycle_if_due(chain, schedule, minima[k])
    return Advanced(minima, [_trace(r) for r in rows])


def _close_cycle_if_due(chain: ChainState, schedule, minima: list[Minimum]) -> None:
    """At the first step of a cycle (and at the end), hand over the finished cycle's minimum."""
    ended = chain.step > 0 and (schedule.step_in_cycle(chain.step) == 0 or chain.step == schedule.total_steps)
    if ended and chain.best_step >= 0:
        minima.append(Minimum(schedule.cycle(chain.step - 1), chain.best_step, chain.best_energy_eV,
                              chain.best_occupation, chain.best_cell))
        chain.best_energy_eV, chain.best_step, chain.best_occupation, chain.best_cell = np.inf, -1, None, None


def _trace(rows: list[tuple]) -> Trace:
    if not rows:
        empty, counters = np.zeros(0), np.zeros((0, 2), np.int64)
        return Trace(empty.astype(np.int64), empty, empty, empty, counters, counters)
    step, temperature, energy, volume, proposed, accepted = zip(*rows)
    return Trace(np.array(step, dtype=np.int64), np.array(temperature), np.array(energy), np.array(volume),
                 np.stack(proposed), np.stack(accepted))


@dataclass(frozen=True, eq=False)
class Proposal:
    kind: int
    uniform: float  # the acceptance draw
    cell: np.ndarray | None = None
    occupation: np.ndarray | None = None
    sites: np.ndarray | None = None  # the swapped sites


def _propose(chain: ChainState, schedule, moves: MoveSettings, mobile: np.ndarray) -> Proposal:
    """Every draw of a step comes from the chain's own generator, in a fixed order."""
    rng = chain.rng
    if rng.random() < moves.cell_move_fraction:
        strain = rng.uniform(-moves.max_strain, moves.max_strain, 3) * np.asarray(moves.strained_axes, dtype=float)
        return Proposal(CELL, rng.random(), cell=chain.cell * np.exp(strain)[:, None])
    occupied = mobile[chain.occupation[mobile] != 0]
    vacant = mobile[chain.occupation[mobile] == 0]
    largest = min(moves.largest_group(schedule.step_in_cycle(chain.step)), len(occupied), len(vacant))
    if largest == 0:  # nothing to swap: propose the unchanged configuration
        return Proposal(SWAP, rng.random(), occupation=chain.occupation, sites=np.zeros(0, dtype=np.int64))
    size = int(rng.integers(1, largest + 1))
    leaving = rng.choice(occupied, size, replace=False)
    arriving = rng.choice(vacant, size, replace=False)
    occupation = chain.occupation.copy()
    occupation[arriving] = chain.occupation[leaving]
    occupation[leaving] = 0
    return Proposal(SWAP, rng.random(), occupation=occupation, sites=np.concatenate([leaving, arriving]))
