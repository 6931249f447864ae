"""An ASE calculator over any potential (tasks/potential.py); a committee's deviations land in ``results``."""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, all_changes

from tasks.nnp.batch import AtomsBatch


class NNPCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: torch.nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = AtomsBatch.from_atoms([self.atoms], dtype=self.model.dtype, device=self.model.device)
        want_stress = "stress" in properties and bool(self.atoms.pbc.all())
        out = self.model(batch, stress=want_stress)
        energy = float(out["energy"][0].detach())
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": out["forces"].detach().cpu().numpy()}
        if want_stress:
            self.results["stress"] = out["stress"][0].detach().cpu().numpy()
        if "force_deviation" in out:
            self.results["force_deviation"] = float(out["force_deviation"][0])
            self.results["energy_deviation_per_atom"] = float(out["energy_deviation_per_atom"][0])
