"""Batched MD and committee cost, measured side by side in one run.

Figures (all with the same Behler–Parrinello model: S/Cr/Mo, hidden (32, 32), radial cutoff
5.5 Å, angular 4.0 Å, float32; speed does not depend on the weights, so the model is untrained):

  batched_atom_steps_per_s     Langevin MD of 200 Cr(1-x)S cells of ~24 atoms as one batched state
  ase_atom_steps_per_s         ASE's Langevin with the same model (NNPCalculator), one cell at a time
  batched_vs_ase               their ratio, both on one thread (goal >= 10 on CPU)
  batched_all_cores_atom_steps_per_s, ase_all_cores_atom_steps_per_s, batched_vs_ase_all_cores
                               the same two runs with torch (and the compiled kernels) on every core:
                               a batch splits its centre atoms between threads, one small cell cannot
  mos2_300_atom_steps_per_s_per_thread   NVE of a 300-atom MoS2 sheet with torch on one thread (goal >= 1e5)
  committee4_vs_single         time of a committee of 4 / one model on the same 300-atom batch (goal <= 1.5)
  gpu_mos2_atom_steps_per_s    100 x 1,728-atom MoS2 sheets batched on CUDA (goal >= 1e6); null without a GPU
  threads (for the one-thread figures), cores, device

Every rate and time is the best of --rounds windows (timeit's rule: on a shared machine other load
only ever adds time, so the least disturbed window is the measurement), for both sides of a ratio.
The last line printed is one JSON object with all of these.
Usage: python scripts/bench_md.py [--steps 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

import numpy as np
import torch
from ase import units
from ase.build import mx2
from ase.md.langevin import Langevin

from tasks.generate import nias_bulk, perturbed_copies
from tasks.md.integrators import langevin_step, velocity_verlet_step
from tasks.md.run import run
from tasks.md.state import initial_state
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.calculator import NNPCalculator
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings

SETTINGS = ModelSettings(DescriptorSettings(elements=("S", "Cr", "Mo"), radial_cutoff_A=5.5, angular_cutoff_A=4.0),
                         hidden=(32, 32))


def model(seed: int = 0, dtype=torch.float32, device="cpu") -> BehlerParrinello:
    return BehlerParrinello(SETTINGS, seed=seed).to(dtype=dtype, device=device)


def crs_cells(n: int):
    base = nias_bulk("CrS", 3.45, 5.75, (3, 2, 1))  # 24 atoms
    return perturbed_copies(base, n, seed=1, max_strain=0.02, rattle_A=0.03, vacancy_species="Cr",
                            vacancy_fractions=[0.0, 1 / 12])


def md_rate(state, step, steps: int, rounds: int) -> float:
    """Atom-steps per second of ``rounds`` consecutive windows of ``steps`` steps: the best one."""
    state, _ = run(state, step, 2, observe_every=10)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        if state.batch.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        state, _ = run(state, step, steps, observe_every=10)
        if state.batch.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return steps * state.batch.positions.shape[0] / best


def batched_md(m, systems, steps: int, rounds: int) -> float:
    state = initial_state(m, systems, temperature_K=300, seed=2)
    step = partial(langevin_step, model=m, timestep_fs=1.0, temperature_K=300.0, friction_per_fs=0.01,
                   generator=torch.Generator(device=m.device).manual_seed(3))
    return md_rate(state, step, steps, rounds)


def ase_md(m, systems, steps: int, rounds: int) -> float:
    """Each round runs every cell for ``steps`` steps, one after another; the best round."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for atoms in systems:
            atoms = atoms.copy()
            atoms.calc = NNPCalculator(m)
            Langevin(atoms, timestep=1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                     rng=np.random.default_rng(4)).run(steps)
        best = min(best, time.perf_counter() - start)
    return steps * sum(len(a) for a in systems) / best


def nve_rate(m, systems, steps: int, rounds: int) -> float:
    state = initial_state(m, systems, temperature_K=300, seed=5)
    return md_rate(state, partial(velocity_verlet_step, model=m, timestep_fs=1.0), steps, rounds)


def eval_time(potential, batch, repeats: int = 20, rounds: int = 5) -> float:
    """Seconds per evaluation: the best of ``rounds`` means over ``repeats`` calls (timeit's rule:
    the least disturbed round; this shared machine's other load only ever adds time)."""
    pairs = batch.pairs(potential.cutoff_A)
    potential(batch, pairs)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            potential(batch, pairs)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, object] = {"threads": torch.get_num_threads()}

    m = model()
    cells = crs_cells(args.cells)
    batched = batched_md(m, cells, args.steps, args.rounds)
    ase_rate = ase_md(m, cells[:10], args.steps, args.rounds)  # ten cells suffice for the one-at-a-time rate
    results.update(batched_atom_steps_per_s=batched, ase_atom_steps_per_s=ase_rate, batched_vs_ase=batched / ase_rate)
    print(f"(a) {args.cells} x ~24-atom Cr(1-x)S Langevin, one thread: batched {batched:.3g} atom-steps/s, ASE one "
          f"cell at a time {ase_rate:.3g}, ratio {batched / ase_rate:.1f} (goal >= 10)")
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    batched_all = batched_md(m, cells, args.steps, args.rounds)
    ase_all = ase_md(m, cells[:10], args.steps, args.rounds)
    torch.set_num_threads(1)
    results.update(cores=cores, batched_all_cores_atom_steps_per_s=batched_all, ase_all_cores_atom_steps_per_s=ase_all,
                   batched_vs_ase_all_cores=batched_all / ase_all)
    print(f"    the same on all {cores} cores: batched {batched_all:.3g}, ASE {ase_all:.3g}, ratio "
          f"{batched_all / ase_all:.1f}")

    sheet = mx2("MoS2", size=(10, 10, 1), vacuum=7.5)
    rate = nve_rate(m, [sheet], args.steps, args.rounds)
    results["mos2_300_atom_steps_per_s_per_thread"] = rate
    print(f"(b) 300-atom MoS2 NVE on one thread: {rate:.3g} atom-steps/s (goal >= 1e5)")

    batch = AtomsBatch.from_atoms([sheet], dtype=torch.float32)
    single = eval_time(m, batch, rounds=max(5, args.rounds))
    committee = eval_time(Committee([model(seed=s) for s in range(4)]), batch, rounds=max(5, args.rounds))
    results["committee4_vs_single"] = committee / single
    print(f"(c) committee of 4: {committee * 1e3:.1f} ms vs one model {single * 1e3:.1f} ms per 300-atom "
          f"evaluation, ratio {committee / single:.2f} (goal <= 1.5)")

    if torch.cuda.is_available():
        gpu = model(device="cuda")
        sheets = [mx2("MoS2", size=(24, 24, 1), vacuum=7.5) for _ in range(100)]
        rate = batched_md(gpu, sheets, args.steps, args.rounds)
        results.update(gpu_mos2_atom_steps_per_s=rate, device=torch.cuda.get_device_name())
        print(f"(d) 100 x 1,728-atom MoS2 on {torch.cuda.get_device_name()}: {rate:.3g} atom-steps/s (goal >= 1e6)")
    else:
        results.update(gpu_mos2_atom_steps_per_s=None, device="cpu")
        print("(d) no CUDA device: GPU figure not measured")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
