"""Monte Carlo speed, measured side by side in one run.

Figures:
  slab_atoms                  atoms of the study's CrS2 slab (tasks.mc.slab; 6,912)
  slab_local_swap_ms          one swap's energy change by the local update (site energies of the
                              atoms within the cutoff of the two moved sites, new configuration)
  slab_full_ms                the same change by a full evaluation of the new slab
  slab_local_vs_full          their ratio (goal >= 50)
  anneal_sites, anneal_chains the study's annealing cell (NiAs 4 × 2√3 × 3: 192 sites, x = 3/8) and
                              the chains advanced (16)
  anneal_batched_steps_per_s  chain-steps per second, all chains in one batched state
  anneal_single_steps_per_s   chain-steps per second, one chain at a time (same chains, same steps)
  anneal_batched_vs_single    their ratio (goal >= 5 on a CPU with 16 chains)
  threads                     torch threads (the machine's cores unless --threads)

The potential is a Behler–Parrinello committee of two networks (Cr/S, hidden (32, 32), radial
cutoff 6 Å, angular 4.5 Å, float64; speed does not depend on the weights, so they are untrained).
Every time is the best of --rounds runs (on a shared machine other load only adds time); the two
sides of each ratio take turns within each round. The last line printed is one JSON object.
Usage: python scripts/bench_mc.py [--steps 100] [--swaps 20] [--rounds 3] [--threads N]
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

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

from tasks.mc.anneal import ChainStart, anneal_cell, start_occupation  # noqa: E402
from tasks.mc.chains import advance, new_chain  # noqa: E402
from tasks.mc.energy import EnergyRequest, PotentialEnergy  # noqa: E402
from tasks.mc.schedule import GeometricCycles, MoveSettings  # noqa: E402
from tasks.mc.sites import SiteLattice, site_pairs  # noqa: E402
from tasks.nnp.batch import AtomsBatch  # noqa: E402
from tasks.nnp.committee import Committee  # noqa: E402
from tasks.nnp.descriptors import DescriptorSettings  # noqa: E402
from tasks.nnp.model import BehlerParrinello, ModelSettings  # noqa: E402
from tasks.phase.lattice import Lattice  # noqa: E402

STUDY_SUPERCELL = [[4, 0, 0], [2, 4, 0], [0, 0, 3]]


def committee() -> Committee:
    settings = ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=6.0, angular_cutoff_A=4.5),
                             hidden=(32, 32))
    return Committee([BehlerParrinello(settings, seed=s) for s in (1, 2)])


def best_of(rounds: int, *sides) -> list[float]:
    """Best time of each side over ``rounds``, the sides taking turns within a round."""
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

    batched_s, single_s = best_of(rounds, batched, single)
    return {"anneal_sites": cell.sites.n_sites, "anneal_chains": n_chains,
            "anneal_batched_steps_per_s": n_chains * steps / batched_s,
            "anneal_single_steps_per_s": n_chains * steps / single_s,
            "anneal_batched_vs_single": single_s / batched_s}


def slab_figures(potential, swaps: int, rounds: int) -> dict:
    from tasks.mc.slab import study_slab

    slab = study_slab()
    lattice = SiteLattice(slab.fractional, (True, True, False), slab.metal_site)
    model = PotentialEnergy(potential)
    pairs = site_pairs(lattice, slab.cell, model.cutoff_A, skin_A=1.0)
    rng = np.random.default_rng(0)
    metal = np.flatnonzero(slab.metal_site)
    moves = []
    for _ in range(swaps):
        occupied = metal[slab.occupation[metal] != 0]
        vacant = metal[slab.occupation[metal] == 0]
        leave, arrive = rng.choice(occupied), rng.choice(vacant)
        new = slab.occupation.copy()
        new[arrive], new[leave] = new[leave], 0
        moves.append((new, pairs.within_cutoff(np.array([leave, arrive]), slab.cell)))

    def local():
        for new, touched in moves:
            model.site_energies(lattice, [EnergyRequest(new, slab.cell, pairs, touched)])

    def full():
        for new, _ in moves:
            keep = new != 0
            atoms = slab.atoms_for(new)
            potential(AtomsBatch.from_atoms([atoms]), forces=False)
            assert keep.sum() == len(atoms)

    local_s, full_s = best_of(rounds, local, full)
    return {"slab_atoms": int(np.count_nonzero(slab.occupation)), "slab_local_swap_ms": 1000 * local_s / swaps,
            "slab_full_ms": 1000 * full_s / swaps, "slab_local_vs_full": full_s / local_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="annealing steps per chain and side")
    parser.add_argument("--swaps", type=int, default=20, help="slab swaps per side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    potential = committee()
    figures = {"threads": args.threads}
    figures.update(slab_figures(potential, args.swaps, args.rounds))
    print(f"slab: {figures['slab_atoms']} atoms, local swap {figures['slab_local_swap_ms']:.1f} ms, full "
          f"{figures['slab_full_ms']:.1f} ms: {figures['slab_local_vs_full']:.1f}x", flush=True)
    figures.update(anneal_figures(potential, args.steps, args.rounds))
    print(f"anneal: {figures['anneal_chains']} chains on {figures['anneal_sites']} sites, batched "
          f"{figures['anneal_batched_steps_per_s']:.0f} steps/s, one at a time {figures['anneal_single_steps_per_s']:.0f}"
          f" steps/s: {figures['anneal_batched_vs_single']:.2f}x", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
