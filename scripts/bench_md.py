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

Every rate and time is the best of --rounds runs (timeit's rule: on a shared machine other load only
ever adds time, so the least disturbed run is the measurement); the two sides of a ratio take turns
within each round, so that they meet the same load.
The last line printed is one JSON object with all of these.
Usage: python scripts/bench_md.py [--steps 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from typing import Callable

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


def best_times(jobs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Seconds of each job: its fastest of ``rounds`` runs, the jobs taking turns within each round
    (the measurement rule of the module docstring)."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


class MDWindows:
    """Successive windows of ``steps`` steps of one batched MD run (a call runs the next window)."""

    def __init__(self, state, step, steps: int):
        self.state, _ = run(state, step, 2, observe_every=10)  # warm-up
        self.step, self.steps = step, steps
        self.atom_steps = steps * state.batch.positions.shape[0]

    def __call__(self) -> None:
        self.state, _ = run(self.state, self.step, self.steps, observe_every=10)
        if self.state.batch.device.type == "cuda":
            torch.cuda.synchronize()


def langevin_windows(m, systems, steps: int) -> MDWindows:
    state = initial_state(m, systems, temperature_K=300, seed=2)
    step = partial(langevin_step, model=m, timestep_fs=1.0, temperature_K=300.0, friction_per_fs=0.01,
                   generator=torch.Generator(device=m.device).manual_seed(3))
    return MDWindows(state, step, steps)


def ase_md(m, systems, steps: int) -> Callable[[], None]:
    """Every cell for ``steps`` steps of ASE's Langevin, one after another."""
    def job() -> None:
        for atoms in systems:
            atoms = atoms.copy()
            atoms.calc = NNPCalculator(m)
            Langevin(atoms, timestep=1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                     rng=np.random.default_rng(4)).run(steps)
    return job


def batched_vs_ase(m, cells, ase_cells, steps: int, rounds: int) -> tuple[float, float]:
    """Atom-steps/s of the batched run and of ASE one cell at a time, in alternating rounds."""
    batched, ase = langevin_windows(m, cells, steps), ase_md(m, ase_cells, steps)
    times = best_times({"batched": batched, "ase": ase}, rounds)
    return batched.atom_steps / times["batched"], steps * sum(len(a) for a in ase_cells) / times["ase"]


def evaluations(potential, batch, repeats: int = 20) -> Callable[[], None]:
    pairs = batch.pairs(potential.cutoff_A)
    potential(batch, pairs)

    def job() -> None:
        for _ in range(repeats):
            potential(batch, pairs)
    return job


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
    # ten cells suffice for the one-at-a-time rate
    batched, ase_rate = batched_vs_ase(m, cells, cells[:10], args.steps, args.rounds)
    results.update(batched_atom_steps_per_s=batched, ase_atom_steps_per_s=ase_rate, batched_vs_ase=batched / ase_rate)
    print(f"(a) {args.cells} x ~24-atom Cr(1-x)S Langevin, one thread: batched {batched:.3g} atom-steps/s, ASE one "
          f"cell at a time {ase_rate:.3g}, ratio {batched / ase_rate:.1f} (goal >= 10)")
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    batched_all, ase_all = batched_vs_ase(m, cells, cells[:10], args.steps, args.rounds)
    torch.set_num_threads(1)
    results.update(cores=cores, batched_all_cores_atom_steps_per_s=batched_all, ase_all_cores_atom_steps_per_s=ase_all,
                   batched_vs_ase_all_cores=batched_all / ase_all)
    print(f"    the same on all {cores} cores: batched {batched_all:.3g}, ASE {ase_all:.3g}, ratio "
          f"{batched_all / ase_all:.1f}")

    sheet = mx2("MoS2", size=(10, 10, 1), vacuum=7.5)
    nve = MDWindows(initial_state(m, [sheet], temperature_K=300, seed=5),
                    partial(velocity_verlet_step, model=m, timestep_fs=1.0), args.steps)
    rate = nve.atom_steps / best_times({"nve": nve}, args.rounds)["nve"]
    results["mos2_300_atom_steps_per_s_per_thread"] = rate
    print(f"(b) 300-atom MoS2 NVE on one thread: {rate:.3g} atom-steps/s (goal >= 1e5)")

    batch = AtomsBatch.from_atoms([sheet], dtype=torch.float32)
    repeats = 20
    times = best_times({"single": evaluations(m, batch, repeats),
                        "committee": evaluations(Committee([model(seed=s) for s in range(4)]), batch, repeats)},
                       rounds=max(7, args.rounds))
    single, committee = times["single"] / repeats, times["committee"] / repeats
    results["committee4_vs_single"] = committee / single
    print(f"(c) committee of 4: {committee * 1e3:.1f} ms vs one model {single * 1e3:.1f} ms per 300-atom "
          f"evaluation, ratio {committee / single:.2f} (goal <= 1.5)")

    if torch.cuda.is_available():
        gpu = model(device="cuda")
        sheets = [mx2("MoS2", size=(24, 24, 1), vacuum=7.5) for _ in range(100)]
        windows = langevin_windows(gpu, sheets, args.steps)
        rate = windows.atom_steps / best_times({"gpu": windows}, args.rounds)["gpu"]
        results.update(gpu_mos2_atom_steps_per_s=rate, device=torch.cuda.get_device_name())
        print(f"(d) 100 x 1,728-atom MoS2 on {torch.cuda.get_device_name()}: {rate:.3g} atom-steps/s (goal >= 1e6)")
    else:
        results.update(gpu_mos2_atom_steps_per_s=None, device="cpu")
        print("(d) no CUDA device: GPU figure not measured")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
