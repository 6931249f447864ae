"""Monte Carlo speed, measured side by side in one run.

Figures:
  slab_atoms                  atoms of the study's CrS2 slab (tasks.mc.slab; 6,912)
  slab_local_swap_ms          one swap's energy change by the local update (site energies of the
                              atoms within the cutoff of the two moved sites, new configuration)
  slab_full_ms                the same change by a full evaluation of the new slab
  slab_local_vs_full          their ratio (goal >= 50)
  slab_max_error_eV           largest difference of the two energy changes (checked < 1e-6)
  slab_hop_local_s            one relaxed hop as the slab chain does it (tasks.mc.slab_chain): FIRE for
                              --relax-steps steps on the atoms within cutoff + 1 Å of the two sites, the rest
                              fixed, then the energies of the atoms whose environment changed
  slab_hop_full_s             FIRE for as many steps on the whole slab, then every atom's energy
  slab_hop_local_vs_full      their ratio
  anneal_sites, anneal_chains the study's annealing cell (NiAs 4 × 2√3 × 3: 192 sites, x = 3/8) and
                              the chains advanced (16)
  anneal_batched_steps_per_s  chain-steps per second, all chains in one batched state
  anneal_single_steps_per_s   chain-steps per second, one chain at a time (same chains, same steps)
  anneal_batched_vs_single    their ratio (goal >= 5 on a CPU with 16 chains)
  anneal_step_fixed_ms        the two sides split as t = fixed + chains × per_chain per step (one chain:
  anneal_step_per_chain_ms    fixed + per_chain; 16 chains: fixed / 16 + per_chain per chain-step)
  anneal_full_cell_ms         one chain's whole cell evaluated (every atom; what a cell move costs), in a
                              batch of all chains' cells
  anneal_swap_networks_ms     the committee's networks alone on the atoms whose environment a one-pair swap
                              changes (features given), per chain, in a batch of all chains: what any swap
                              costs at least, however its features are found
  anneal_bound_free_features  the ratio batching could reach if features cost nothing: per_chain at least
                              the cell moves' whole cells and the swaps' networks,
                              f × anneal_full_cell_ms + (1 − f) × anneal_swap_networks_ms (f = cell moves'
                              share of steps), against the measured fixed part
  threads                     torch threads (--threads, default 1: both sides of every ratio on one core)

The potential is a Behler–Parrinello committee of two networks (Cr/S, hidden (32, 32), radial
cutoff 6 Å, angular 4.5 Å, float64; speed does not depend on the weights, so they are untrained).
Every time is the best of --rounds runs (on a shared machine other load only adds time); the two
sides of each ratio take turns within each round. The last line printed is one JSON object.
Usage: python scripts/bench_mc.py [--steps 100] [--swaps 20] [--relax-steps 20] [--rounds 3] [--threads 1]
                                  [--parts slab,hop,anneal]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

from tasks.mc.anneal import ChainStart, anneal_cell, start_occupation  # noqa: E402
from tasks.mc.chains import advance, new_chain  # noqa: E402
from tasks.mc.energy import EnergyRequest, PotentialEnergy  # noqa: E402
from tasks.mc.schedule import GeometricCycles, MoveSettings  # noqa: E402
from tasks.mc.site_features import site_features_of  # noqa: E402
from tasks.mc.sites import SiteLattice, site_pairs  # noqa: E402
from tasks.nnp.batch import AtomsBatch  # noqa: E402
from tasks.nnp.committee import Committee  # noqa: E402
from tasks.nnp.descriptors import DescriptorSettings  # noqa: E402
from tasks.nnp.model import BehlerParrinello, ModelSettings  # noqa: E402
from tasks.nnp.stacked import stacked_networks  # noqa: E402
from tasks.phase.lattice import Lattice  # noqa: E402

STUDY_SUPERCELL = [[4, 0, 0], [2, 4, 0], [0, 0, 3]]


def committee() -> Committee:
    settings = ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=6.0, angular_cutoff_A=4.5),
                             hidden=(32, 32))
    return Committee([BehlerParrinello(settings, seed=s) for s in (1, 2)])


def best_of(rounds: int, *sides) -> list[float]:
    """Best time of each side over ``rounds``, the sides taking turns within a round (after one
    untimed call of each: the first loads the compiled kernels)."""
    for side in sides:
        side()
    best = [np.inf] * len(sides)
    for _ in range(rounds):
        for k, side in enumerate(sides):
            start = time.perf_counter()
            side()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def anneal_figures(potential, steps: int, rounds: int, n_chains: int = 16) -> dict:
    cell = anneal_cell(Lattice(), STUDY_SUPERCELL)
    model = PotentialEnergy(potential)
    schedule = GeometricCycles((20_000.0,), 50_000)
    moves = MoveSettings()
    starts = [ChainStart(f"c{k}", 0.375, k, 1000 + k) for k in range(n_chains)]
    first = [new_chain(model, cell.sites, start_occupation(cell, s), cell.cell, s.seed) for s in starts]
    records = [c.to_record() for c in first]

    def fresh():
        from tasks.mc.chains import ChainState

        return [ChainState.from_record(r) for r in records]

    def batched():
        advance(model, cell.sites, fresh(), schedule, moves, steps)

    def single():
        for chain in fresh():
            advance(model, cell.sites, [chain], schedule, moves, steps)

    whole_cells = [EnergyRequest(c.occupation, c.cell, site_pairs(cell.sites, c.cell, model.cutoff_A, 1.0))
                   for c in first]

    features = site_features_of(model)  # the engine's path for whole cells, if it keeps features

    def full_cells():
        features.whole(cell.sites, whole_cells) if features is not None else model.energies(cell.sites, whole_cells)

    rng = np.random.default_rng(0)
    touched_numbers = []  # per chain, the atomic numbers of the atoms a one-pair swap reaches
    for chain, request in zip(first, whole_cells):
        mobile = np.flatnonzero(cell.sites.mobile)
        moved = [rng.choice(mobile[chain.occupation[mobile] != 0]), rng.choice(mobile[chain.occupation[mobile] == 0])]
        near = request.pairs.within_cutoff(np.array(moved), chain.cell)
        touched_numbers.append(chain.occupation[near[chain.occupation[near] != 0]])
    numbers = np.concatenate(touched_numbers)
    stacks = stacked_networks([member.atomic for member in potential.members])
    blocks = [torch.rand((int(np.count_nonzero(numbers == atomic_numbers[e])), stack.first_weight.shape[0]),
                         dtype=torch.float64) for e, stack in zip(potential.elements, stacks)]

    def swap_networks():
        with torch.no_grad():
            for stack, block in zip(stacks, blocks):
                stack.energies(block)

    batched_s, single_s, full_s, networks_s = best_of(rounds, batched, single, full_cells, swap_networks)
    single_step, batched_chain_step = single_s / (n_chains * steps), batched_s / (n_chains * steps)
    fixed = (single_step - batched_chain_step) * n_chains / (n_chains - 1)
    per_chain = batched_chain_step - fixed / n_chains
    cell_share = moves.cell_move_fraction
    floor = (cell_share * full_s + (1 - cell_share) * networks_s) / n_chains
    return {"anneal_sites": cell.sites.n_sites, "anneal_chains": n_chains,
            "anneal_batched_steps_per_s": 1 / batched_chain_step, "anneal_single_steps_per_s": 1 / single_step,
            "anneal_batched_vs_single": single_s / batched_s, "anneal_step_fixed_ms": 1000 * fixed,
            "anneal_step_per_chain_ms": 1000 * per_chain, "anneal_full_cell_ms": 1000 * full_s / n_chains,
            "anneal_swap_networks_ms": 1000 * networks_s / n_chains,
            "anneal_bound_free_features": (fixed + floor) / (fixed / n_chains + floor)}


def study_slab():
    """The study's slab: CrS2 on 15 Cr layers of 288 sites (6,912 atoms), 50.6 × 49.3 Å in-plane after
    the compressive strain, 41.8 Å thick, 30 Å of vacuum (tasks.mc.slab_build)."""
    from tasks.mc.slab_build import build_slab

    return build_slab(Lattice(a_A=3.29, c_A=5.573), (16, 9), 15, 14 / 30, in_plane_strain=1 - 3.1625 / 3.29,
                      vacuum_A=30.0, seed=0)


def slab_figures(potential, swaps: int, rounds: int) -> dict:
    """A swap's energy change on the slab's static structure: its atoms and vacant metal sites as one
    site lattice, a metal atom moved to a vacant site of a neighbouring layer."""
    slab = study_slab()
    anions = np.flatnonzero(slab.anion_layer >= 0)
    points = np.concatenate([slab.positions[anions], slab.sites])
    occupation = np.concatenate([slab.numbers[anions], np.where(slab.site_atom >= 0, 24, 0)])
    metal = np.arange(len(anions), len(points))
    lattice = SiteLattice(points @ np.linalg.inv(slab.cell), (True, True, True),
                          np.isin(np.arange(len(points)), metal))
    model = PotentialEnergy(potential)
    pairs = site_pairs(lattice, slab.cell, model.cutoff_A, skin_A=1.0)
    rng = np.random.default_rng(0)
    moves = []
    while len(moves) < swaps:
        site = rng.choice(np.flatnonzero(slab.site_atom < 0))
        target = rng.choice(slab.hop_site[slab.hop_segment[site]:slab.hop_segment[site + 1]])
        if slab.site_atom[target] < 0:
            continue
        leave, arrive = metal[target], metal[site]
        new = occupation.copy()
        new[arrive], new[leave] = new[leave], 0
        moves.append((new, pairs.within_cutoff(np.array([leave, arrive]), slab.cell)))
    local_delta, full_delta = [], []

    def local():
        local_delta.clear()
        for new, touched in moves:
            local_delta.append(model.site_energies(lattice, [EnergyRequest(new, slab.cell, pairs, touched)]).sum())

    def full():
        full_delta.clear()
        for new, _ in moves:
            keep = new != 0
            atoms = Atoms(numbers=new[keep], scaled_positions=lattice.fractional[keep], cell=slab.cell, pbc=True)
            full_delta.append(float(potential(AtomsBatch.from_atoms([atoms]), forces=False)["energy"][0]))

    local_s, full_s = best_of(rounds, local, full)
    # the local sums are the new energies near the move; their changes must be the full changes
    reference = model.site_energies(lattice, [EnergyRequest(occupation, slab.cell, pairs, touched)
                                              for _, touched in moves]).sum(axis=1)
    full_before = float(potential(AtomsBatch.from_atoms([slab.atoms(slab.positions)]), forces=False)["energy"][0])
    error = np.abs((np.array(local_delta) - reference) - (np.array(full_delta) - full_before)).max()
    assert error < 1e-6, f"local and full energy changes differ by {error} eV"
    return {"slab_atoms": int(np.count_nonzero(occupation)), "slab_local_swap_ms": 1000 * local_s / swaps,
            "slab_full_ms": 1000 * full_s / swaps, "slab_local_vs_full": full_s / local_s,
            "slab_max_error_eV": float(error)}


def relaxed_hop_figures(potential, relax_steps: int, rounds: int) -> dict:
    from tasks.mc import slab_chain
    from tasks.md.relax import FireSettings, fire_relax

    slab = study_slab()
    chain = slab_chain.new_slab_chain(potential, slab, seed=0)
    middle = np.flatnonzero((slab.site_layer == 7) & (chain.site_atom < 0))
    vacancy_site = middle[np.argmin(np.linalg.norm(slab.sites[middle, :2] - np.diag(slab.cell)[:2] / 2, axis=1))]
    target = next(t for t in slab.hops(vacancy_site, 1) if chain.site_atom[t] >= 0)
    vacancy = int(np.flatnonzero(chain.vacancy_site == vacancy_site)[0])
    everything = np.ones(slab.n_atoms, dtype=bool)
    relax = slab_chain.RelaxSchedule(max_steps=relax_steps, growth_steps=1e-9, fmax_eV_per_A=0.0)

    def local():
        proposal = slab_chain._hop(chain, slab, vacancy, target, 0.5, potential.cutoff_A, relax.skin_A)
        slab_chain._relax(potential, slab, [(chain, proposal)], relax)
        slab_chain._evaluate(potential, slab, [(chain, proposal)])

    def full():
        relaxed = fire_relax(potential, [slab.atoms(chain.positions)],
                             FireSettings(max_steps=relax_steps, fmax_eV_per_A=0.0))
        slab_chain._atomic_energies(potential, relaxed.systems, [everything])

    local_s, full_s = best_of(rounds, local, full)
    return {"slab_hop_local_s": local_s, "slab_hop_full_s": full_s, "slab_hop_local_vs_full": full_s / local_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="annealing steps per chain and side")
    parser.add_argument("--swaps", type=int, default=20, help="slab swaps per side")
    parser.add_argument("--relax-steps", type=int, default=20, help="FIRE steps of the relaxed hop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine has "
                        f"{os.cpu_count()})")
    parser.add_argument("--parts", default="slab,hop,anneal", help="which figures to measure (comma-separated)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"slab", "hop", "anneal"}:
        parser.error(f"--parts: unknown {sorted(parts - {'slab', 'hop', 'anneal'})}; choose from slab, hop, anneal")
    torch.set_num_threads(args.threads)
    potential = committee()
    figures = {"threads": args.threads}
    if "slab" in parts:
        figures.update(slab_figures(potential, args.swaps, args.rounds))
        print(f"slab: {figures['slab_atoms']} atoms, local swap {figures['slab_local_swap_ms']:.1f} ms, full "
              f"{figures['slab_full_ms']:.1f} ms: {figures['slab_local_vs_full']:.1f}x", flush=True)
    if "hop" in parts:
        figures.update(relaxed_hop_figures(potential, args.relax_steps, min(args.rounds, 2)))
        print(f"relaxed hop ({args.relax_steps} FIRE steps): local {figures['slab_hop_local_s']:.2f} s, full "
              f"{figures['slab_hop_full_s']:.2f} s: {figures['slab_hop_local_vs_full']:.1f}x", flush=True)
    if "anneal" in parts:
        figures.update(anneal_figures(potential, args.steps, args.rounds))
        print(f"anneal: {figures['anneal_chains']} chains on {figures['anneal_sites']} sites, batched "
              f"{figures['anneal_batched_steps_per_s']:.0f} steps/s, one at a time "
              f"{figures['anneal_single_steps_per_s']:.0f} steps/s: {figures['anneal_batched_vs_single']:.2f}x; "
              f"per step {figures['anneal_step_fixed_ms']:.2f} ms + {figures['anneal_step_per_chain_ms']:.2f} ms "
              f"per chain; a whole cell {figures['anneal_full_cell_ms']:.2f} ms, a swap's networks "
              f"{figures['anneal_swap_networks_ms']:.3f} ms: at most {figures['anneal_bound_free_features']:.2f}x "
              "if features were free", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
