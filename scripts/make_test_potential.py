"""Make tests/data/mos2_dptab_small.pt: a small DP-Tab potential (a Behler–Parrinello network
blended with ZBL below 2.0 Å) trained on tblite labels of MoS2, for the irradiation tests.

The tests need a potential that binds a monolayer about right and repels at short range, and
must not spend minutes training one on every CI run; this script is how the shipped file was
made (about 5 minutes on 2 cores):

    python3 scripts/make_test_potential.py [--out tests/data/mos2_dptab_small.pt] [--seed 0]

Frames: rattled and strained 3×3 sheets (with and without an S vacancy, with an S adatom),
dimers of every pair from 2.0 to 3.2 Å (tblite's short dimers are far off: README), isolated atoms.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed

from tasks.active.initial import dimers, isolated_atoms
from tasks.active.training import MemberJob, TrainingFrame, train_member
from tasks.generate import monolayer_mx2, strain_and_rattle
from tasks.labeling import TbliteLabeler, label_structure
from tasks.nnp.repulsion import RepulsionSettings
from tasks.nnp.train import TrainSettings
from tasks.structures import Structure

ELEMENTS = ("Mo", "S")
# forces carry most of the information of these few frames (weights as examples/al_mos2_irradiation.yaml).
# ZBL takes over from 2.0 Å inwards, where the frames end: a network left to extrapolate below its
# data made 5 eV ions gain tens of eV in a test cascade. ZBL is too soft there for quantitative
# work; these tests need a well-behaved DP-Tab potential, not an accurate one.
SETTINGS = TrainSettings(hidden=(24, 24), radial_cutoff_A=5.0, angular_cutoff_A=3.5, max_epochs=300,
                         patience_epochs=300, validation_fraction=0.1, learning_rate=2e-3,
                         lr_decay_per_epoch=0.99, energy_weight=1.0, force_weight=100.0, device="cpu",
                         repulsion=RepulsionSettings(kind="zbl", r_inner_A=1.6, r_outer_A=2.0))


def structures(rng: np.random.Generator) -> list[Atoms]:
    sheet = monolayer_mx2("MoS2", supercell=(3, 3, 1), vacuum_A=6.0)
    out = [strain_and_rattle(sheet, 0.06, rng.uniform(0.02, 0.2), rng) for _ in range(36)]
    for _ in range(10):
        vacant = sheet.copy()
        del vacant[int(rng.choice(np.flatnonzero(vacant.numbers == 16)))]
        out.append(strain_and_rattle(vacant, 0.03, rng.uniform(0.02, 0.15), rng))
    top = sheet.positions[:, 2].max()
    for _ in range(10):
        adatom = sheet.copy()
        xy = rng.random(2) @ sheet.cell.array[:2, :2]
        adatom += Atoms("S", positions=[[xy[0], xy[1], top + rng.uniform(1.8, 3.0)]])
        out.append(strain_and_rattle(adatom, 0.02, 0.05, rng))
    return out + dimers(ELEMENTS, np.round(np.arange(2.0, 3.21, 0.2), 2).tolist()) + isolated_atoms(ELEMENTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/mos2_dptab_small.pt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labeler = TbliteLabeler()
    start = time.perf_counter()
    frames = []
    for atoms in structures(np.random.default_rng(args.seed)):
        structure = Structure.from_atoms(atoms)
        try:
            label = label_structure(structure, labeler)
        except CalculationFailed as error:  # a rare SCF that does not converge: one frame less
            print(f"skipped {atoms.get_chemical_formula()}: {error}")
            continue
        frames.append(TrainingFrame(structure, label.energy_eV, label.forces_eV_per_A))
    print(f"{len(frames)} frames labeled in {time.perf_counter() - start:.0f} s")
    result = train_member(MemberJob(args.seed, frames), ELEMENTS, SETTINGS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(result["model"])
    report = result["report"]
    print(f"trained in {report['wall_s']:.0f} s: held-out energy {report['validation_energy_rmse_meV_per_atom']:.1f} "
          f"meV/atom, forces {report['validation_force_rmse_eV_per_A']:.3f} eV/Å → {args.out}")


if __name__ == "__main__":
    main()
