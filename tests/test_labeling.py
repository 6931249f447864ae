"""Labeling and the labeler's relaxations share one set-up: a file-based calculator runs in the
structure's own folder under the labeler's workdir, never in the worker's working directory."""

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from tasks.active.initial import relaxation_path
from tasks.labeling import AseLabeler, label_structure, structure_digest
from tasks.structures import Structure

LOG = "calculations.txt"


class SpringCalculator(Calculator):
    """Harmonic springs between all atom pairs, E = Σ k/2 (d − d0)², that works like a file-based
    code: each calculation writes a line into its ``directory``, created if needed."""

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {"d0_A": 2.4, "k_eV_per_A2": 5.0}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOG, "a") as log:
            log.write(f"{len(self.atoms)} atoms\n")
        positions, k, d0 = self.atoms.positions, self.parameters["k_eV_per_A2"], self.parameters["d0_A"]
        energy, forces = 0.0, np.zeros_like(positions)
        for i in range(len(positions)):
            for j in range(i + 1, len(positions)):
                v = positions[j] - positions[i]
                d = float(np.linalg.norm(v))
                energy += 0.5 * k * (d - d0) ** 2
                push = k * (d - d0) * v / d  # −dE/dr_j
                forces[i] += push
                forces[j] -= push
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def test_relaxation_and_label_run_the_calculator_in_the_structures_workdir(tmp_path, monkeypatch):
    worker_cwd = tmp_path / "worker"
    worker_cwd.mkdir()
    monkeypatch.chdir(worker_cwd)
    labeler = AseLabeler(calculator_class="tests.test_labeling:SpringCalculator", parameters={"d0_A": 2.4},
                         workdir=str(tmp_path / "scratch"))
    dimer = Atoms("MoS", positions=[[5.0, 5.0, 5.0], [5.0, 5.0, 7.0]], cell=[10.0] * 3, pbc=False)
    structure = Structure.from_atoms(dimer, tag="dimer")
    path = relaxation_path(structure, labeler, max_steps=30, fmax_eV_per_A=0.01, keep_fraction=1.0)

    folder = tmp_path / "scratch" / f"dimer-{structure_digest(structure)}"
    calls = (folder / LOG).read_text().splitlines()
    assert len(path) >= 2 and len(calls) >= len(path), (len(path), calls)
    final = path[-1]["positions_A"]
    assert abs(np.linalg.norm(final[1] - final[0]) - 2.4) < 0.01, "the relaxation used the labeler's calculator"
    assert list(worker_cwd.iterdir()) == []

    label = label_structure(structure, labeler)
    assert len((folder / LOG).read_text().splitlines()) == len(calls) + 1
    assert abs(label.energy_eV - 0.5 * 5.0 * 0.4 ** 2) < 1e-12
    assert list(worker_cwd.iterdir()) == []
    assert [p.name for p in (tmp_path / "scratch").iterdir()] == [folder.name]
