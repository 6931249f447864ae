"""Any ASE calculator as a potential, so a user can explore, relax or rank with a calculator of
their own. It is built from an import path and parameters (not an instance), so it saves to a
file and loads again like any other potential, and a worker builds its own calculator."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from tasks.labeling import calculator_class as ase_calculator_class
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs
from tasks.potential import SavedAsPayload

FORMAT = "campaign-ase-calculator-1"


class AseCalculatorPotential(torch.nn.Module, SavedAsPayload):
    """Evaluates system by system with ``calculator_class(**parameters)``.

    ``calculator_class`` is "module:Class" (``"tblite.ase:TBLite"``); ``parameters`` must be plain
    data (numbers, strings, lists, dicts) as they are saved with the potential. ``elements`` are
    those the user means it for (the calculator may know more). A calculator sees whole systems,
    so ``cutoff_A`` is 0: callers' neighbour lists are not needed. Stress is NaN for systems that
    are not periodic in all three directions (there is no cell to strain)."""

    def __init__(self, calculator_class: str, parameters: dict[str, Any] | None = None,
                 elements: Sequence[str] = (), dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        super().__init__()
        module, _, name = calculator_class.partition(":")
        if not name:
            raise ValueError(f"calculator_class must be 'module:Class', got {calculator_class!r}")
        self.calculator_class, self.parameters = calculator_class, dict(parameters or {})
        self._elements = tuple(elements)
        self._dtype, self._device = dtype, torch.device(device)
        # an ASE calculator class or nothing: a potential file naming `subprocess:Popen` runs nothing
        self._make = ase_calculator_class(calculator_class)
        self._factory = None  # of_factory: calculators from factory(atoms)

    @classmethod
    def of_factory(cls, factory, elements: Sequence[str] = (), dtype: torch.dtype = torch.float64,
                   device: str | torch.device = "cpu") -> "AseCalculatorPotential":
        """A potential over calculators from ``factory(atoms)`` (a labeler's, which prepares each
        system), for MD on a worker; it has no import path, so it is not saved."""
        potential = cls("ase.calculators.calculator:Calculator", {}, elements, dtype, device)
        potential.calculator_class, potential._factory = "", factory
        return potential

    @property
    def cutoff_A(self) -> float:
        return 0.0

    @property
    def elements(self) -> tuple[str, ...]:
        return self._elements

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def _apply(self, fn, recurse=True):  # .to(dtype/device): keep what was asked, outputs follow it
        probe = fn(torch.zeros((), dtype=self._dtype, device=self._device))
        self._dtype, self._device = probe.dtype, probe.device
        return self

    def calculator(self):
        """A fresh calculator: one kept between systems would start an SCF from the last system's
        solution, and results would then depend on what was evaluated before (batched ≠ one by one)."""
        return self._make(**self.parameters)

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                stress: bool = False) -> dict[str, torch.Tensor]:
        energies, all_forces, stresses = [], [], []
        for atoms in batch.to_atoms():
            atoms.calc = self.calculator() if self._factory is None else self._factory(atoms)
            energies.append(atoms.get_potential_energy())
            if forces:
                all_forces.append(atoms.get_forces())
            if stress:
                stresses.append(atoms.get_stress(voigt=True) if atoms.pbc.all() else np.full(6, np.nan))
            atoms.calc = None
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=self.dtype, device=self.device)
        out = {"energy": tensor(energies)}
        if forces:
            out["forces"] = tensor(np.concatenate(all_forces).reshape(-1, 3))
        if stress:
            out["stress"] = tensor(np.stack(stresses))
        return out

    # -- persistence --------------------------------------------------------------------------
    def to_payload(self) -> dict:
        if not self.calculator_class:
            raise ValueError("a potential over a calculator factory (of_factory) cannot be saved")
        return {"format": FORMAT, "calculator_class": self.calculator_class, "parameters": self.parameters,
                "elements": list(self._elements)}

    @classmethod
    def from_payload(cls, payload: dict, dtype: torch.dtype = torch.float64,
                     device: str | torch.device = "cpu") -> "AseCalculatorPotential":
        return cls(payload["calculator_class"], payload["parameters"], payload["elements"], dtype, device)
