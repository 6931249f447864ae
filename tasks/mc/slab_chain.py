"""Vacancy-diffusion Monte Carlo on a slab (the study's section 2.6): one proposal per chain and
step, a vacancy hop or a thickness move, each followed by a FIRE relaxation, then Metropolis.

Hop: a vacancy drawn uniformly trades places with the metal atom on a site one hop away
(slab_build). The direction is drawn first, in-plane with probability ``in_plane_fraction`` (the
study's ½: in-plane and vertical moves equally likely), else one of the layer offsets ±1 … ±m
uniformly; then the target uniformly among the vacancy site's hops of that offset. A proposal is
then as likely as its reverse, so Metropolis needs no Hastings factor; a vacant target, or an
offset with no layer there (at a surface), leaves the configuration as it was (``blocked``). The
atom moves onto the centre of the vacancy site's anion octahedron (the mean of its six anions'
current positions): on the ideal lattice the site itself, after thickness moves and relaxations
the site as the lattice around it now has it. FIRE then relaxes the atoms within cutoff +
``skin_A`` of the two sites (the atom's old and new place), every other atom fixed.

Thickness: every atom's z is scaled about the slab's centre by exp(ε), ε uniform in ±max_strain,
which scales the thickness (Slab.thickness_A) by exp(ε); FIRE then relaxes every atom. The
acceptance is chains.py's for cell moves, with V = area × thickness of the configurations (the
proposal's after its relaxation), N the atoms and P the pressure along z:

    ln A = −(ΔE + P ΔV) / k_B T + (N + 1) ln(V′/V)

and a hop's −ΔE / k_B T, ΔE the energy change after the relaxation. The first ``cell_only_steps``
steps propose thickness moves only.

Energies are sums of atomic energies, and a chain keeps every atom's. After a hop only the atoms
whose environment changed (within the cutoff of an atom that moved, at its old or new place) are
evaluated, in a sub-system of them and their neighbours, every chain's in one potential pass. The
hop's relaxation runs on a sub-system too: the free atoms, the centres (atoms within the cutoff of
a free atom, with ``skin_A`` to spare for the free atoms' displacements; a relaxation that moves one
further is redone with more) and the centres' neighbours; pairs are kept only from centres, so the
free atoms feel the forces of the whole slab with the other atoms fixed, and only the centres'
energies are computed.

A chain's state is plain data (``to_record``/``from_record``) and nothing outside it is carried
from one step to the next, so a chain resumed from a checkpoint takes exactly the steps of an
uninterrupted one. Chains advanced together share relaxation batches (a system's neighbour lists
are rebuilt together with the others'): resume them together to repeat them bit for bit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms
from ase.units import kB

from tasks.mc.chains import Trace
from tasks.mc.schedule import EV_PER_A3_PER_GPA, MoveSettings
from tasks.mc.slab_analysis import layer_thicknesses_A, metal_per_layer
from tasks.mc.slab_build import SLAB_PBC, Slab
from tasks.md.relax import FireSettings, fire_relax
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs

HOP, THICKNESS = 0, 1


@dataclass(frozen=True)
class RelaxSchedule:
    """FIRE after every move: ⌈max_steps (1 − exp(−(step + 1) / growth_steps))⌉ steps at MC step
    ``step`` (the study: at most 80, growing over 10⁵ steps), fewer once every force is below
    fmax. A hop frees the atoms within cutoff + ``skin_A`` of its two sites."""

    max_steps: int = 80
    growth_steps: float = 1e5
    fmax_eV_per_A: float = 0.05
    skin_A: float = 1.0

    def steps(self, step: int) -> int:
        return math.ceil(self.max_steps * -math.expm1(-(step + 1) / self.growth_steps))


@dataclass(frozen=True)
class SlabMoves:
    """``thickness`` (tasks.mc.schedule): the thickness moves' share of the steps
    (cell_move_fraction), their largest strain (max_strain) and the pressure along z
    (pressure_GPa); its strained_axes must be z alone, its swap_groups are not used (one vacancy
    hops per step)."""

    thickness: MoveSettings = MoveSettings(strained_axes=(False, False, True))
    cell_only_steps: int = 1000
    in_plane_fraction: float = 0.5
    relax: RelaxSchedule = RelaxSchedule()

    def __post_init__(self):
        if tuple(self.thickness.strained_axes) != (False, False, True):
            raise ValueError(f"thickness moves strain z alone, got strained_axes={self.thickness.strained_axes}")
        if not 0.0 <= self.in_plane_fraction <= 1.0:
            raise ValueError(f"in_plane_fraction must be in [0, 1], got {self.in_plane_fraction}")


@dataclass
class SlabChain:
    positions: np.ndarray  # (n_atoms, 3) Å
    cell: np.ndarray  # (3, 3) Å; thickness moves scale the atoms, not the cell
    site_atom: np.ndarray  # (n_sites,) atom on each metal site, −1 = vacancy
    vacancy_site: np.ndarray  # (n_vacancies,) the site each vacancy is on now
    vacancy_start_site: np.ndarray  # (n_vacancies,) its site at step 0
    atomic_energy_eV: np.ndarray  # (n_atoms,)
    seed: int
    rng: np.random.Generator
    jumps: np.ndarray  # (n_layers, 2m + 1) accepted hops by the vacancy's origin layer and layer offset −m … m
    step: int = 0
    proposed: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # hop, thickness
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    blocked: int = 0  # hop draws with no atom to trade with: the step passed unchanged

    @property
    def energy_eV(self) -> float:
        return float(self.atomic_energy_eV.sum())

    def to_record(self) -> dict:
        """Plain arrays and a JSON string: everything to continue the chain exactly."""
        arrays = ("positions", "cell", "site_atom", "vacancy_site", "vacancy_start_site", "atomic_energy_eV", "jumps",
                  "proposed", "accepted")
        return {**{name: getattr(self, name).copy() for name in arrays}, "seed": int(self.seed),
                "rng_state": json.dumps(self.rng.bit_generator.state), "step": int(self.step),
                "blocked": int(self.blocked), "energy_eV": self.energy_eV}

    @classmethod
    def from_record(cls, record: dict) -> "SlabChain":
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = json.loads(str(record["rng_state"]))
        floats = {name: np.array(record[name], dtype=np.float64) for name in ("positions", "cell", "atomic_energy_eV")}
        ints = {name: np.array(record[name], dtype=np.int64)
                for name in ("site_atom", "vacancy_site", "vacancy_start_site", "jumps", "proposed", "accepted")}
        return cls(**floats, **ints, seed=int(record["seed"]), rng=rng, step=int(record["step"]),
                   blocked=int(record["blocked"]))


def check_vacuum(slab: Slab, positions: np.ndarray, cutoff_A: float) -> None:
    """ValueError unless the vacuum keeps the slab from its periodic image along z (the cell is
    periodic there): more than the potential's cutoff and 1 Å to spare."""
    vacuum_A = slab.cell[2, 2] - np.ptp(positions[:, 2])
    if vacuum_A <= cutoff_A + 1.0:
        raise ValueError(f"the vacuum ({vacuum_A:.1f} Å) must exceed the potential's cutoff ({cutoff_A} Å) by "
                         "more than 1 Å")


def new_slab_chain(potential, slab: Slab, seed: int, site_atom: np.ndarray | None = None) -> SlabChain:
    """A chain at step 0 from the slab's built configuration, or with the slab's metal atoms put on
    the sites ``site_atom`` gives (at the ideal sites); ``seed`` alone decides its moves."""
    positions = slab.positions.copy()
    if site_atom is None:
        site_atom = slab.site_atom
    else:
        site_atom = np.asarray(site_atom, dtype=np.int64)
        if not np.array_equal(np.sort(site_atom), np.sort(slab.site_atom)):
            raise ValueError("site_atom must place the slab's metal atoms, each on one site")
        positions[site_atom[site_atom >= 0]] = slab.sites[site_atom >= 0]
    check_vacuum(slab, positions, potential.cutoff_A)
    everything = np.ones(slab.n_atoms, dtype=bool)
    (energies,) = _atomic_energies(potential, [slab.atoms(positions)], [everything])
    vacancy_site = np.flatnonzero(site_atom < 0)
    return SlabChain(positions=positions, cell=slab.cell.copy(), site_atom=site_atom.copy(), vacancy_site=vacancy_site,
                     vacancy_start_site=vacancy_site.copy(), atomic_energy_eV=energies, seed=int(seed),
                     rng=np.random.default_rng(seed), jumps=np.zeros((slab.n_layers, 2 * slab.max_offset + 1),
                                                                     dtype=np.int64))


@dataclass(frozen=True, eq=False)
class SlabTrace(Trace):
    """Per chain, every ``record_every`` steps, chains.Trace's columns (volume: area × thickness;
    proposed and accepted: hop, thickness) and the slab's; counters cumulative."""

    thickness_A: np.ndarray  # (T,)
    layer_thickness_A: np.ndarray  # (T, n_layers)
    metal_per_layer: np.ndarray  # (T, n_layers)
    blocked: np.ndarray  # (T,)
    jumps: np.ndarray  # (T, n_layers, 2m + 1)


@dataclass(frozen=True, eq=False)
class Snapshot:
    step: int
    positions: np.ndarray
    site_atom: np.ndarray


@dataclass(frozen=True, eq=False)
class SlabAdvanced:
    traces: list[SlabTrace]
    snapshots: list[list[Snapshot]]  # per chain, every ``snapshot_every`` steps


def advance(potential, slab: Slab, chains: list[SlabChain], schedule, moves: SlabMoves, n_steps: int,
            record_every: int = 100, snapshot_every: int = 0) -> SlabAdvanced:
    """Advance every chain by ``n_steps`` (not past the schedule's end) in place: every step, all
    chains' relaxations in one FIRE batch per step count and their energies in one potential pass."""
    rows: list[list[tuple]] = [[] for _ in chains]
    snapshots: list[list[Snapshot]] = [[] for _ in chains]
    for _ in range(n_steps):
        live = [k for k, c in enumerate(chains) if c.step < schedule.total_steps]
        if not live:
            break
        proposals = [_propose(chains[k], slab, moves, potential.cutoff_A) for k in live]
        moving = [(chains[k], p) for k, p in zip(live, proposals) if p.region is not None]
        _relax(potential, slab, moving, moves.relax)
        _evaluate(potential, slab, moving)
        for k, proposal in zip(live, proposals):
            chain = chains[k]
            temperature = schedule.temperature_K(chain.step)
            _decide(chain, proposal, slab, moves, temperature)
            chain.step += 1
            if chain.step % record_every == 0 or chain.step == schedule.total_steps:
                rows[k].append(_row(chain, slab, temperature))
            if snapshot_every and chain.step % snapshot_every == 0:
                snapshots[k].append(Snapshot(chain.step, chain.positions.copy(), chain.site_atom.copy()))
    return SlabAdvanced([_trace(r, slab) for r in rows], snapshots)


@dataclass(eq=False)
class _Proposal:
    kind: int
    uniform: float  # the acceptance draw
    region: np.ndarray | None = None  # atoms of the sub-system (sorted); None: a blocked hop
    free: np.ndarray | None = None  # over region: atoms the relaxation moves
    centre: np.ndarray | None = None  # over region: atoms whose energies the relaxation counts
    start: np.ndarray | None = None  # region positions after the move, before the relaxation
    after: np.ndarray | None = None  # region positions after the relaxation
    points: np.ndarray | None = None  # a hop's two sites (the atom's old and new place)
    margin_A: float = 0.0
    vacancy: int = -1
    target: int = -1  # the site the vacancy moves to
    affected: np.ndarray | None = None  # over region: atoms whose energies changed
    energies: np.ndarray | None = None  # their new energies
    delta_eV: float = 0.0


def _propose(chain: SlabChain, slab: Slab, moves: SlabMoves, cutoff_A: float) -> _Proposal:
    """Every draw of a step comes from the chain's own generator, in a fixed order: the kind, then
    ε or (vacancy, direction, target), then the acceptance draw."""
    rng = chain.rng
    thickness = rng.random() < moves.thickness.cell_move_fraction or chain.step < moves.cell_only_steps
    if thickness:
        epsilon = rng.uniform(-moves.thickness.max_strain, moves.thickness.max_strain)
        positions = chain.positions.copy()
        centre_z = 0.5 * (slab.anion_layer_z(positions)[[0, -1]].sum())
        positions[:, 2] = centre_z + (positions[:, 2] - centre_z) * math.exp(epsilon)
        everything = np.ones(slab.n_atoms, dtype=bool)
        return _Proposal(THICKNESS, float(rng.random()), region=np.arange(slab.n_atoms), free=everything,
                         centre=everything, start=positions)
    if len(chain.vacancy_site) == 0:
        return _Proposal(HOP, float(rng.random()))
    vacancy = int(rng.integers(len(chain.vacancy_site)))
    site = int(chain.vacancy_site[vacancy])
    offset = _direction(float(rng.random()), moves.in_plane_fraction, slab.max_offset)
    candidates = slab.hops(site, offset)
    target = int(candidates[rng.integers(len(candidates))]) if len(candidates) else -1
    uniform = float(rng.random())
    if target < 0 or chain.site_atom[target] < 0:
        return _Proposal(HOP, uniform)
    return _hop(chain, slab, vacancy, target, uniform, cutoff_A, moves.relax.skin_A)


def _hop(chain: SlabChain, slab: Slab, vacancy: int, target: int, uniform: float, cutoff_A: float,
         skin_A: float) -> _Proposal:
    """The vacancy ``vacancy`` trades places with the atom on site ``target``."""
    atom = chain.site_atom[target]
    positions = chain.positions.copy()
    positions[atom] = _cage_centre(slab, chain.positions, chain.vacancy_site[vacancy])
    proposal = _Proposal(HOP, uniform, points=np.stack([chain.positions[atom], positions[atom]]), margin_A=skin_A,
                         vacancy=vacancy, target=target)
    _select_region(proposal, positions, chain.cell, cutoff_A, skin_A)
    return proposal


def _direction(u: float, in_plane_fraction: float, max_offset: int) -> int:
    """The layer offset of a hop from one uniform draw: 0 below ``in_plane_fraction``, else ±1 … ±m."""
    if u < in_plane_fraction or max_offset == 0:
        return 0
    offsets = [o for o in range(-max_offset, max_offset + 1) if o != 0]
    return offsets[min(int((u - in_plane_fraction) / (1.0 - in_plane_fraction) * len(offsets)), len(offsets) - 1)]


def _cage_centre(slab: Slab, positions: np.ndarray, site: int) -> np.ndarray:
    cage = _minimum_image(positions[slab.cage[site]] - slab.sites[site], slab.cell)
    return slab.sites[site] + cage.mean(axis=0)


def _minimum_image(delta: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """In-plane minimum images of displacement vectors (the cell is rectangular; the vacuum keeps z)."""
    lengths = np.diag(cell)[:2]
    delta = np.array(delta, dtype=np.float64)
    delta[..., :2] -= np.round(delta[..., :2] / lengths) * lengths
    return delta


def _distance_to(points: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """(n,) distance of every position to the nearest of ``points``."""
    return np.min([np.linalg.norm(_minimum_image(positions - p, cell), axis=1) for p in points], axis=0)


def _select_region(proposal: _Proposal, positions: np.ndarray, cell: np.ndarray, cutoff_A: float,
                   skin_A: float) -> None:
    """Free atoms within cutoff + skin of the hop's sites; centres within a cutoff and the margin
    more; context within a cutoff of the centres."""
    distance = _distance_to(proposal.points, positions, cell)
    free_A = cutoff_A + skin_A
    centre_A = free_A + cutoff_A + proposal.margin_A
    proposal.region = np.flatnonzero(distance < centre_A + cutoff_A)
    proposal.free = distance[proposal.region] < free_A
    proposal.centre = distance[proposal.region] < centre_A
    proposal.start = positions[proposal.region]


def _relax(potential, slab: Slab, moving: list[tuple[SlabChain, _Proposal]], relax: RelaxSchedule) -> None:
    """Every proposal's relaxation, batched by step count; a hop whose free atoms moved further than
    its margin is redone with a larger one."""
    by_steps: dict[int, list[tuple[SlabChain, _Proposal]]] = {}
    for chain, proposal in moving:
        by_steps.setdefault(relax.steps(chain.step), []).append((chain, proposal))
    for n_steps, group in by_steps.items():
        while group:
            if n_steps > 0:
                systems = [Atoms(slab.numbers[p.region], p.start, cell=c.cell, pbc=SLAB_PBC) for c, p in group]
                centred = _Centred(potential, np.concatenate([p.centre for _, p in group]))
                settings = FireSettings(max_steps=n_steps, fmax_eV_per_A=relax.fmax_eV_per_A)
                result = fire_relax(centred, systems, settings, fixed=[~p.free for _, p in group])
                for (_, proposal), atoms in zip(group, result.systems):
                    proposal.after = atoms.positions
            else:
                for _, proposal in group:
                    proposal.after = proposal.start
            redo = []
            for chain, proposal in group:
                moved_A = float(np.linalg.norm(proposal.after - proposal.start, axis=1).max(initial=0.0))
                if proposal.kind == HOP and moved_A > proposal.margin_A:
                    positions = chain.positions.copy()
                    positions[proposal.region] = proposal.start
                    proposal.margin_A = moved_A + relax.skin_A
                    _select_region(proposal, positions, chain.cell, potential.cutoff_A, relax.skin_A)
                    redo.append((chain, proposal))
            group = redo


def _evaluate(potential, slab: Slab, moving: list[tuple[SlabChain, _Proposal]]) -> None:
    """New energies of the atoms whose environment changed, every proposal in one potential pass."""
    if not moving:
        return
    cutoff = potential.cutoff_A
    for chain, proposal in moving:
        if proposal.kind == THICKNESS:
            proposal.affected = np.ones(len(proposal.region), dtype=bool)
            continue
        before = chain.positions[proposal.region]
        moved = np.any(proposal.after != before, axis=1)
        affected = moved.copy()
        candidates = np.flatnonzero(proposal.centre & ~moved)  # only centres can be within a cutoff of a moved atom
        for positions in (before, proposal.after):
            near = _distance_to(positions[moved], positions[candidates], chain.cell) < cutoff
            affected[candidates[near]] = True
        proposal.affected = affected
    systems = [Atoms(slab.numbers[p.region], p.after, cell=c.cell, pbc=SLAB_PBC) for c, p in moving]
    energies = _atomic_energies(potential, systems, [p.affected for _, p in moving])
    for (chain, proposal), values in zip(moving, energies):
        proposal.energies = values
        proposal.delta_eV = float(values.sum() - chain.atomic_energy_eV[proposal.region[proposal.affected]].sum())


def _decide(chain: SlabChain, proposal: _Proposal, slab: Slab, moves: SlabMoves, temperature_K: float) -> None:
    if proposal.region is None:
        chain.blocked += 1
        return
    chain.proposed[proposal.kind] += 1
    log_accept = -proposal.delta_eV / (kB * temperature_K)
    if proposal.kind == THICKNESS:
        volume = slab.area_A2 * slab.thickness_A(chain.positions)
        new_volume = slab.area_A2 * slab.thickness_A(proposal.after)
        pressure = moves.thickness.pressure_GPa * EV_PER_A3_PER_GPA
        log_accept += (-pressure * (new_volume - volume) / (kB * temperature_K)
                       + (slab.n_atoms + 1) * math.log(new_volume / volume))
    if not math.log(proposal.uniform) < log_accept:
        return
    chain.accepted[proposal.kind] += 1
    chain.positions[proposal.region] = proposal.after
    chain.atomic_energy_eV[proposal.region[proposal.affected]] = proposal.energies
    if proposal.kind == HOP:
        site = chain.vacancy_site[proposal.vacancy]
        offset = slab.site_layer[proposal.target] - slab.site_layer[site]
        chain.jumps[slab.site_layer[site], offset + slab.max_offset] += 1
        chain.site_atom[site] = chain.site_atom[proposal.target]
        chain.site_atom[proposal.target] = -1
        chain.vacancy_site[proposal.vacancy] = proposal.target


class _Centred:
    """A potential whose neighbour pairs are kept only where the centre atom is marked: the forces
    are those of the marked atoms' energy (unmarked atoms are context with no energy terms of their
    own); the energy is theirs plus a constant (the unmarked atoms' isolated-atom energies)."""

    def __init__(self, potential, centre: np.ndarray):
        self.potential = potential
        self.centre = torch.as_tensor(centre, dtype=torch.bool, device=potential.device)
        self.everything = bool(centre.all())
        self._given: Pairs | None = None
        self._kept: Pairs | None = None

    cutoff_A = property(lambda self: self.potential.cutoff_A)
    dtype = property(lambda self: self.potential.dtype)
    device = property(lambda self: self.potential.device)

    def __call__(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                 stress: bool = False) -> dict[str, torch.Tensor]:
        pairs = pairs if pairs is not None else batch.pairs(self.cutoff_A)
        if pairs is not self._given:  # MD keeps one list over steps: filter it once
            self._given, self._kept = pairs, pairs if self.everything else _from_centres(pairs, self.centre)
        return self.potential(batch, self._kept, forces=forces, stress=stress)


def _from_centres(pairs: Pairs, centre: torch.Tensor) -> Pairs:
    keep = centre[pairs.i]
    return Pairs(i=pairs.i[keep], j=pairs.j[keep], shift=pairs.shift[keep], system=pairs.system[keep])


def _atomic_energies(potential, systems: list[Atoms], centres: list[np.ndarray]) -> list[np.ndarray]:
    """Per system, the atomic energies (eV) of its ``centres`` (bool), all systems in one pass (a
    committee: the members' mean)."""
    from tasks.potential import per_atom_energies

    batch = AtomsBatch.from_atoms(systems, dtype=potential.dtype, device=potential.device)
    centre = torch.as_tensor(np.concatenate(centres), dtype=torch.bool, device=potential.device)
    pairs = _from_centres(batch.pairs(potential.cutoff_A), centre)
    atomic = per_atom_energies(potential, batch, pairs, centre.cpu().numpy()).mean(dim=0)
    atomic = atomic.detach().cpu().numpy().astype(np.float64)
    parts = np.split(atomic, np.cumsum(batch.n_atoms)[:-1])
    return [values[c] for values, c in zip(parts, centres)]


def _row(chain: SlabChain, slab: Slab, temperature_K: float) -> tuple:
    thickness = slab.thickness_A(chain.positions)
    return (chain.step, temperature_K, chain.energy_eV, slab.area_A2 * thickness, chain.proposed.copy(),
            chain.accepted.copy(), thickness, layer_thicknesses_A(slab, chain.positions),
            metal_per_layer(slab, chain.site_atom), chain.blocked, chain.jumps.copy())


def trace_now(chain: SlabChain, slab: Slab, temperature_K: float) -> SlabTrace:
    """The chain's trace row as it stands (one row), e.g. at step 0 before any move."""
    return _trace([_row(chain, slab, temperature_K)], slab)


def _trace(rows: list[tuple], slab: Slab) -> SlabTrace:
    if not rows:
        n, width = slab.n_layers, 2 * slab.max_offset + 1
        counters = np.zeros((0, 2), np.int64)
        return SlabTrace(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), counters, counters, np.zeros(0),
                         np.zeros((0, n)), np.zeros((0, n), np.int64), np.zeros(0, np.int64),
                         np.zeros((0, n, width), np.int64))
    return SlabTrace(*(np.array(column) if np.ndim(column[0]) == 0 else np.stack(column) for column in zip(*rows)))
