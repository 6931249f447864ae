"""The phase-diagram recipe's two costly steps, measured side by side in one run.

Figures:
  enumeration_cells            cells enumerated (NiAs Cr/X, up to --max-cells primitive cells, x = 1/4 and 3/8)
  enumeration_1_worker_s       their enumeration on a LocalCluster of 1 worker (1 thread), the recipe's groups
                               in the recipe's order (costliest first), after one untimed round
  enumeration_2_workers_s      the same groups on 2 workers (1 thread each)
  enumeration_efficiency       1-worker time / (2 × 2-worker time) (goal >= 0.8)
  ranking_cells, max_atoms     enumerated cells of 9, 10 and 12 primitive cells (36–48 sites) ranked
  supercells                   the supercells they come from (at most 12 cells each)
  batched_cells_per_s          their energies by the batched potential as the ranking task runs it (energies
                               per atom over each supercell's pairs, taken from the primitive cell's neighbour
                               vectors once per supercell; the cells of a supercell as one block, <= 16,384
                               atoms a pass)
  ase_cells_per_s              the same model through its ASE calculator (NNPCalculator), one cell at a time
  batched_vs_ase               their ratio, both on one thread, both from the same structures (goal >= 10)
  ranking_task_cells_per_s     the recipe's ranking task from the compact rows (rebuilding each cell with
                               icet's placement and Niggli reduction, then the batched potential)
  cores

The model is a Behler–Parrinello network (Cr/S, hidden (32, 32), radial cutoff 5.5 Å, angular 4.0 Å,
float32; speed does not depend on the weights, so it is untrained). Every time is the best of
--rounds runs (on a shared machine other load only adds time); the two sides of each ratio take
turns within each round. The last line printed is one JSON object with all of these.
Usage: python scripts/bench_phase.py [--max-cells 8] [--ranking-cells 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from distributed import Client, LocalCluster

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

from campaign.recipes.phase_diagram import _enumerate_group  # noqa: E402
from tasks.nnp.calculator import NNPCalculator  # noqa: E402
from tasks.nnp.descriptors import DescriptorSettings  # noqa: E402
from tasks.nnp.model import BehlerParrinello, ModelSettings  # noqa: E402
from tasks.phase.cells import without_vacancies  # noqa: E402
from tasks.phase.enumeration import (EnumerationGroup, costliest_first, enumerate_batch,  # noqa: E402
                                     enumeration_groups, enumeration_tasks, snf_labelings)
from tasks.phase.lattice import Lattice  # noqa: E402
from tasks.phase.ranking import (CellChunk, decoration_energies_per_atom, potential_energies,  # noqa: E402
                                 rank_chunk)

FRACTIONS = ("1/4", "3/8")
HNFS_PER_TASK = 16  # the recipe's default (enumeration.hnfs_per_task)
MAX_ATOMS = 16384


def enumerate_on(client: Client, lattice: Lattice, work: list[EnumerationGroup]) -> tuple[float, int]:
    start = time.perf_counter()
    # every group one task, in the recipe's order (costliest first)
    futures = client.map(_enumerate_group, work, lattice=lattice, pure=False)
    cells = sum(len(f.result()) for f in futures)
    return time.perf_counter() - start, cells


def cluster(workers: int) -> tuple[LocalCluster, Client]:
    c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                     env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": REPO})
    return c, Client(c)


def ranking_cells(lattice: Lattice, n: int, per_supercell: int = 12) -> list:
    """Cells of 9, 10 and 12 primitive cells (36 to 48 sites), at most ``per_supercell`` of each
    supercell, from as many supercells as it takes (a ranking chunk of the recipe mixes supercells
    too); enumerating these sizes whole takes minutes."""
    primitive, symbols = lattice.primitive(), lattice.chemical_symbols()
    picked = []
    for ncells, fraction in ((12, "1/4"), (10, "1/4"), (9, "1/3")):
        wanted, labelings = len(picked) + n // 3, {}
        for task in enumeration_tasks(primitive, [ncells]):
            if task.snf not in labelings:
                labelings[task.snf] = snf_labelings(primitive, symbols, task.snf, species_fractions={"X": [fraction]})
            found = enumerate_batch([task], primitive, symbols, {task.snf: labelings[task.snf]})
            picked += [(found.hnf[k], int(found.ncells[k]), found.sites(k), float(Fraction(fraction)))
                       for k in range(min(len(found), per_supercell, wanted - len(picked)))]
            if len(picked) >= wanted:
                break
    return picked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-cells", type=int, default=8)
    parser.add_argument("--ranking-cells", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lattice = Lattice()

    # the recipe's groups: one per (size, Smith form, fraction) of HNFS_PER_TASK supercells at most
    work = costliest_first(enumeration_groups(lattice.primitive(), lattice.chemical_symbols(),
                                              range(1, args.max_cells + 1), FRACTIONS, HNFS_PER_TASK),
                           lattice.chemical_symbols())
    one, two = cluster(1), cluster(2)
    t1 = t2 = float("inf")
    cells = 0
    try:
        for _, client in (one, two):  # untimed: the workers' first task imports icet
            enumerate_on(client, lattice, work)
        for _ in range(args.rounds):
            dt, cells = enumerate_on(one[1], lattice, work)
            t1 = min(t1, dt)
            dt, cells2 = enumerate_on(two[1], lattice, work)
            t2 = min(t2, dt)
            assert cells2 == cells
    finally:
        for c, client in (one, two):
            client.close()
            c.close()

    model = BehlerParrinello(ModelSettings(DescriptorSettings(elements=("S", "Cr"), radial_cutoff_A=5.5,
                                                              angular_cutoff_A=4.0), hidden=(32, 32)),
                             seed=0).to(dtype=torch.float32)
    picked = ranking_cells(lattice, args.ranking_cells)
    chunk = CellChunk(np.arange(len(picked)), np.array([p[3] for p in picked]), np.array([p[1] for p in picked]),
                      np.array([p[0] for p in picked]), [p[2] for p in picked])
    ideal = [lattice.cell_atoms(*p[:3]) for p in picked]
    structures = [without_vacancies(a) for a in ideal]
    whole, _ = potential_energies(model, structures, MAX_ATOMS)  # every structure with its own neighbour list
    calculator = NNPCalculator(model)
    batched = ase = task = float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        energy, _ = decoration_energies_per_atom(model, chunk, ideal, MAX_ATOMS, lattice)
        batched = min(batched, time.perf_counter() - start)
        start = time.perf_counter()
        reference = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calculator
            reference.append(atoms.get_potential_energy() / len(atoms))
        ase = min(ase, time.perf_counter() - start)
        start = time.perf_counter()
        ranked = rank_chunk(chunk, lattice, model, None, MAX_ATOMS)
        task = min(task, time.perf_counter() - start)
        assert np.allclose(energy, reference, atol=1e-4) and np.allclose(whole, reference, atol=1e-4)
        assert np.allclose(ranked.energy_eV_per_atom, reference, atol=1e-4)

    result = {
        "enumeration_cells": cells, "enumeration_1_worker_s": round(t1, 2), "enumeration_2_workers_s": round(t2, 2),
        "enumeration_efficiency": round(t1 / (2 * t2), 3),
        "ranking_cells": len(picked), "supercells": len({(p[1], tuple(p[0])) for p in picked}),
        "max_atoms": max(len(s) for s in structures),
        "batched_cells_per_s": round(len(picked) / batched, 1), "ase_cells_per_s": round(len(picked) / ase, 1),
        "batched_vs_ase": round(ase / batched, 2), "ranking_task_cells_per_s": round(len(picked) / task, 1),
        "cores": os.cpu_count()}
    print(f"enumeration: {cells} cells, 1 worker {t1:.1f} s, 2 workers {t2:.1f} s")
    print(f"ranking: {len(picked)} cells, batched {result['batched_cells_per_s']}/s, ASE {result['ase_cells_per_s']}/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
