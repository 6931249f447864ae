"""A real tblite labeler that takes its time on some structures (the long tail of DFT jobs)."""

import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from tblite.ase import TBLite


class SometimesSlowTBLite(Calculator):
    """GFN1-xTB; sleeps ``delay_s`` first for structures whose position checksum is ≡ 0 mod ``every``;
    with ``fail_every``, fails (as a DFT code that does not converge) for those ≡ 1 mod ``fail_every``."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, delay_s: float = 10.0, every: int = 2, fail_every: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.every, self.fail_every = delay_s, every, fail_every

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if is_slow(self.atoms, self.every):
            time.sleep(self.delay_s)
        if self.fail_every and checksum(self.atoms) % self.fail_every == 1:
            raise RuntimeError("SCF did not converge (tests.slow_labeler fails this structure on purpose)")
        inner = TBLite(method="GFN1-xTB", verbosity=0)
        atoms = self.atoms.copy()
        atoms.calc = inner
        self.results = {"energy": atoms.get_potential_energy(), "free_energy": atoms.get_potential_energy(),
                        "forces": atoms.get_forces()}
        if atoms.pbc.any():
            self.results["stress"] = atoms.get_stress()


def checksum(atoms) -> int:
    return int(np.round(np.abs(atoms.positions).sum() * 1e3))


def is_slow(atoms, every: int) -> bool:
    return checksum(atoms) % every == 0
