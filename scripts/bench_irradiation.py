"""Ion impacts batched in one MD state against the same impacts run one at a time.

    python3 scripts/bench_irradiation.py [--impacts 100] [--repeat 10] [--end-time-ps 0.1] [--rounds 2]
                                         [--potential tests/data/mos2_dptab_small.pt] [--cuda-repeat 24]

The impacts: S and Mo ions of 30–1000 eV at random points of the unit cell of an n×n MoS2 sheet
(repeat 10: 300 atoms) at 0 K, so the systems take different time steps and lose atoms at
different times. Batched and serial runs integrate the same trajectories (an impact does not
depend on its batch), so both do the same atom-steps; they take turns, ``--rounds`` times, and
each side's best time counts. CPU figures run on one thread.

The last line is one JSON object:
  batched_vs_serial                       serial time / batched time, same impacts, one thread
                                          (goal ≥ 1.0)
  batched_atom_steps_per_s_per_thread     Σ over impacts of steps × atoms, per second of the batched run
                                          (goal ≥ 1e5, as MD)
  serial_atom_steps_per_s_per_thread      the same for one impact at a time
  atom_steps                              the atom-steps both sides did
  impacts, sheet_atoms, end_time_ps       the set-up
  cuda_atom_steps_per_s                   on a CUDA device: the impacts on a repeat-``--cuda-repeat`` sheet
                                          (24: 1,728 atoms) in one batch (goal ≥ 1e6); null without CUDA
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.irradiation.impact import ImpactJob, ImpactSettings, run_trajectories  # noqa: E402
from tasks.irradiation.target import monolayer_target  # noqa: E402
from tasks.potential import load_potential  # noqa: E402


def jobs(n: int, seed: int = 0) -> list[ImpactJob]:
    rng = np.random.default_rng(seed)
    return [ImpactJob(str(rng.choice(["S", "Mo"])), float(np.exp(rng.uniform(np.log(30), np.log(1000)))),
                      tuple(rng.random(2)), 0.0, 0.0, seed=seed * 100_000 + k, index=k) for k in range(n)]


def atom_steps(runs) -> int:
    """Steps × atoms at the start of each impact (atoms that leave count until the end: both sides alike)."""
    return sum(f.steps * (len(f.numbers) + len(flights)) for f, flights in zip(runs.finished, runs.escapes))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impacts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--end-time-ps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--potential", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data"
                        / "mos2_dptab_small.pt")
    parser.add_argument("--cuda-repeat", type=int, default=24)
    args = parser.parse_args()

    torch.set_num_threads(1)
    potential = load_potential(args.potential)
    target = monolayer_target(repeat=args.repeat)
    settings = ImpactSettings(end_time_ps=args.end_time_ps)
    work = jobs(args.impacts)
    best = {"batched": np.inf, "serial": np.inf}
    steps = {}
    for r in range(args.rounds):
        elapsed, runs = timed(lambda: run_trajectories(potential, target, work, settings))
        best["batched"] = min(best["batched"], elapsed)
        steps["batched"] = atom_steps(runs)
        print(f"round {r}: batched {elapsed:.1f} s", flush=True)
        start = time.perf_counter()
        serial = [run_trajectories(potential, target, [job], settings) for job in work]
        elapsed = time.perf_counter() - start
        best["serial"] = min(best["serial"], elapsed)
        steps["serial"] = sum(atom_steps(s) for s in serial)
        print(f"round {r}: serial {elapsed:.1f} s", flush=True)
    if steps["batched"] != steps["serial"]:
        print(f"warning: batched and serial atom-steps differ: {steps}", file=sys.stderr)

    cuda = None
    if torch.cuda.is_available():
        gpu_potential = load_potential(args.potential, device="cuda")
        big = monolayer_target(repeat=args.cuda_repeat)
        run_trajectories(gpu_potential, big, work[:4], ImpactSettings(end_time_ps=0.01))  # warm-up
        torch.cuda.synchronize()
        elapsed, runs = timed(lambda: run_trajectories(gpu_potential, big, work, settings))
        torch.cuda.synchronize()
        cuda = atom_steps(runs) / elapsed
    print(json.dumps({
        "batched_vs_serial": round(best["serial"] / best["batched"], 3),
        "batched_atom_steps_per_s_per_thread": round(steps["batched"] / best["batched"]),
        "serial_atom_steps_per_s_per_thread": round(steps["serial"] / best["serial"]),
        "atom_steps": steps["batched"], "impacts": args.impacts, "sheet_atoms": len(target.atoms),
        "end_time_ps": args.end_time_ps, "cuda_atom_steps_per_s": None if cuda is None else round(cuda),
    }))


if __name__ == "__main__":
    main()
