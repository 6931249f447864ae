"""Cost of one vacancy hop of the slab Monte Carlo on the study's slab, local against full.

The slab: 6,912 atoms (Cr2304 S4608 on 15 Cr layers of 288 sites, 50.6 × 49.3 Å, 30 Å vacuum), a
Behler–Parrinello model with random weights (Cr, S; radial cutoff 6 Å, angular 4.5 Å, hidden (32, 32),
float64; speed does not depend on the weights), torch and the neighbour lists on one thread.

  local_s   one hop as the chain does it: the sub-system (free atoms within cutoff + 1 Å of the two
            sites, the rest fixed), FIRE for n steps on it, then the energies of the atoms whose
            environment changed
  full_s    FIRE for n steps on the whole slab (every atom free), then every atom's energy
  ratio     full_s / local_s

for each n in --steps (FIRE runs all n steps: fmax is 0). Every time is the best of --rounds; the two
sides take turns within each round. The last line printed is one JSON object with all of these.
Usage: python scripts/bench_mc_slab.py [--steps 1 20 80] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tasks.mc import slab_chain
from tasks.mc.slab_build import build_slab
from tasks.md.relax import FireSettings, fire_relax
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.phase.lattice import Lattice


def study_slab():
    return build_slab(Lattice(a_A=3.29, c_A=5.573), (16, 9), 15, 14 / 30, in_plane_strain=1 - 3.1625 / 3.29,
                      vacuum_A=30.0, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 20, 80])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = BehlerParrinello(ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=6.0,
                                                              angular_cutoff_A=4.5)), seed=1)
    slab = study_slab()
    chain = slab_chain.new_slab_chain(model, slab, seed=0)
    middle = np.flatnonzero((slab.site_layer == 7) & (chain.site_atom < 0))
    vacancy_site = middle[np.argmin(np.linalg.norm(slab.sites[middle, :2] - np.diag(slab.cell)[:2] / 2, axis=1))]
    target = next(t for t in slab.hops(vacancy_site, 1) if chain.site_atom[t] >= 0)
    vacancy = int(np.flatnonzero(chain.vacancy_site == vacancy_site)[0])
    everything = np.ones(slab.n_atoms, dtype=bool)
    results = {"atoms": slab.n_atoms, "threads": torch.get_num_threads()}
    for n in args.steps:
        relax = slab_chain.RelaxSchedule(max_steps=n, growth_steps=1e-9, fmax_eV_per_A=0.0)

        def local():
            proposal = slab_chain._hop(chain, slab, vacancy, target, 0.5, model.cutoff_A, relax.skin_A)
            slab_chain._relax(model, slab, [(chain, proposal)], relax)
            slab_chain._evaluate(model, slab, [(chain, proposal)])
            return proposal

        def full():
            relaxed = fire_relax(model, [slab.atoms(chain.positions)], FireSettings(max_steps=n, fmax_eV_per_A=0.0))
            slab_chain._atomic_energies(model, relaxed.systems, [everything])

        best = {"local": np.inf, "full": np.inf}
        for _ in range(args.rounds):
            for name, run in (("local", local), ("full", full)):
                start = time.perf_counter()
                out = run()
                best[name] = min(best[name], time.perf_counter() - start)
                if name == "local":
                    sizes = {"free": int(out.free.sum()), "centres": int(out.centre.sum()),
                             "sub_system": len(out.region), "affected": int(out.affected.sum())}
        results[f"n{n}"] = {"local_s": best["local"], "full_s": best["full"], "ratio": best["full"] / best["local"],
                            **sizes}
        print(n, results[f"n{n}"], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
