"""A real tblite labeler that takes its time on some structures (the long tail of DFT jobs)."""

import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from tblite.ase import TBLite


class SometimesSlowTBLite(Calculator):
    """GFN1-xTB; sleeps ``delay_s`` first for structures whose position checksum is ≡ 0 mod ``every``."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, delay_s: float = 10.0, every: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.every = delay_s, every

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if is_slow(self.atoms, self.every):
            time.sleep(self.delay_s)
        inner = TBLite(method="GFN1-xTB", verbosity=0)
        atoms = self.atoms.copy()
        atoms.calc = inner
        self.results = {"energy": atoms.get_potential_energy(), "free_energy": atoms.get_potential_energy(),
                        "forces": atoms.get_forces()}
        if atoms.pbc.any():
            self.results["stress"] = atoms.get_stress()


def is_slow(atoms, every: int) -> bool:
    return int(np.round(np.abs(atoms.positions).sum() * 1e3)) % every == 0
