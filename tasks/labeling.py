"""Label structures (energy, forces, stress) with a quantum-chemistry or DFT code through ASE.

A labeler is a frozen settings object; ``calculator()`` builds the ASE calculator on the
worker, so nothing heavy or unpicklable crosses the network.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import (BaseCalculator, Calculator, CalculatorSetupError,
                                        PropertyNotImplementedError)
from pydantic import Field, field_validator

from tasks.outcome import Outcome, run_each
from tasks.settings import StrictModel
from tasks.structures import Structure


class TbliteLabeler(StrictModel):
    """GFN-xTB tight binding through tblite: real quantum chemistry, about a second per small cell."""

    kind: Literal["tblite"] = "tblite"
    method: Literal["GFN1-xTB", "GFN2-xTB"] = "GFN1-xTB"
    accuracy: float = Field(1.0, gt=0)
    electronic_temperature_K: float = Field(300.0, gt=0)
    max_iterations: int = Field(250, gt=0)
    # Closer pairs are not chemistry: refuse them before the SCF returns a meaningless number.
    min_distance_A: float = Field(0.5, ge=0)

    def calculator(self, workdir: Path | None = None) -> Calculator:
        from tblite.ase import TBLite

        return TBLite(method=self.method, accuracy=self.accuracy,
                      electronic_temperature=self.electronic_temperature_K,
                      max_iterations=self.max_iterations, verbosity=0)


class GpawLabeler(StrictModel):
    """Plane-wave DFT with GPAW (pip install -e .[gpaw]); setups come from the gpaw-data package."""

    kind: Literal["gpaw"] = "gpaw"
    xc: str = "PBE"
    ecut_eV: float = Field(400.0, gt=0)
    kpts: tuple[int, int, int] = (1, 1, 1)
    smearing_eV: float = Field(0.1, ge=0)
    spinpol: bool = False
    initial_magmoms: dict[str, float] = Field(default_factory=dict)
    max_iterations: int = Field(333, gt=0)
    min_distance_A: float = Field(0.5, ge=0)

    def calculator(self, workdir: Path | None = None) -> Calculator:
        from gpaw import GPAW, PW, FermiDirac

        return GPAW(mode=PW(self.ecut_eV), xc=self.xc, kpts=self.kpts, spinpol=self.spinpol,
                    occupations=FermiDirac(self.smearing_eV), maxiter=self.max_iterations, txt=None)

    def prepare(self, atoms: Atoms) -> None:
        if self.initial_magmoms:
            atoms.set_initial_magnetic_moments([self.initial_magmoms.get(s, 0.0) for s in atoms.get_chemical_symbols()])


class AseLabeler(StrictModel):
    """Any ASE calculator by import path, e.g. ``ase.calculators.vasp.Vasp`` with its keywords.

    File-based codes (VASP, Quantum ESPRESSO, CP2K) run in ``workdir/<structure digest>``, which
    should be on the nodes' scratch or shared file system.
    """

    kind: Literal["ase"] = "ase"
    calculator_class: str = Field(..., min_length=3)
    parameters: dict[str, Any] = Field(default_factory=dict)
    workdir: str | None = None
    min_distance_A: float = Field(0.5, ge=0)

    @field_validator("calculator_class")
    @classmethod
    def _an_ase_calculator(cls, path: str) -> str:
        """Imported where the spec is read: anything else (``subprocess.Popen``) is refused before it runs."""
        try:
            calculator_class(path)
        except CalculatorSetupError as exc:
            raise ValueError(str(exc)) from None
        return path

    def calculator(self, workdir: Path | None = None) -> Calculator:
        cls = calculator_class(self.calculator_class)
        kwargs = dict(self.parameters)
        if workdir is not None:
            kwargs.setdefault("directory", str(workdir))
        return cls(**kwargs)


Labeler = Annotated[Union[TbliteLabeler, GpawLabeler, AseLabeler], Field(discriminator="kind")]


def import_object(path: str) -> Any:
    """``'package.module.Name'`` or ``'package.module:Name'`` → the object, with a clear error."""
    module_name, _, name = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CalculatorSetupError(f"cannot import calculator {path!r}: {exc}") from exc


def calculator_class(path: str) -> type:
    """The ASE calculator class at ``path`` ('module.Name' or 'module:Name'); anything else (say
    ``subprocess.Popen``, which a spec or a potential file could name) is refused before it is
    called. ASE's file-based codes (Espresso) derive from BaseCalculator, not Calculator."""
    obj = import_object(path)
    if not (isinstance(obj, type) and issubclass(obj, BaseCalculator)):
        raise CalculatorSetupError(f"{path!r} is not an ASE calculator class (a subclass of "
                                   "ase.calculators.calculator.BaseCalculator)")
    return obj


def labeler_settings_json(labeler: Any) -> str:
    return json.dumps(labeler.model_dump(mode="json"), sort_keys=True)


@dataclass(frozen=True, eq=False)
class Label:
    energy_eV: float
    forces_eV_per_A: np.ndarray  # (n, 3)
    stress_eV_per_A3: np.ndarray  # (6,) Voigt xx yy zz yz xz xy; NaN where the code gives none


def structure_digest(structure: Structure) -> str:
    return hashlib.sha256(json.dumps(structure.canonical(), sort_keys=True).encode()).hexdigest()[:16]


def check_min_distance(structure: Structure, min_distance_A: float) -> None:
    """Raise CalculatorSetupError naming the closest pair if it is closer than min_distance_A."""
    if min_distance_A <= 0 or structure.n_atoms < 2:
        return
    from vesin import NeighborList

    pbc = structure.pbc
    box = structure.cell_A if pbc.any() else np.zeros((3, 3))
    i, j, d = NeighborList(cutoff=min_distance_A, full_list=False).compute(
        points=structure.positions_A, box=box, periodic=pbc, quantities="ijd")
    if len(d):
        k = int(np.argmin(d))
        raise CalculatorSetupError(
            f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart, closer than min_distance_A={min_distance_A}")


def structure_workdir(structure: Structure, labeler: Any) -> Path | None:
    """Where a file-based calculator runs for this structure: ``workdir/<tag>-<digest>``, a folder
    of its own, never the worker's working directory; None for labelers without a workdir."""
    if not getattr(labeler, "workdir", None):
        return None
    return Path(labeler.workdir) / f"{structure.tag or 'structure'}-{structure_digest(structure)}"


def labeler_atoms(structure: Structure, labeler: Any) -> Atoms:
    """The structure as Atoms with the labeler's calculator attached, ready for any calculation
    (single point or relaxation): the distance check, the labeler's own preparation (initial
    magnetic moments) and its per-structure workdir."""
    atoms = structure.to_atoms()
    atoms.calc = labeler_calculator(atoms, labeler, structure.tag)
    return atoms


def labeler_calculator(atoms: Atoms, labeler: Any, tag: str = "") -> Calculator:
    """The labeler's calculator for ``atoms`` (not attached): the distance check, the labeler's
    preparation of ``atoms`` in place (initial magnetic moments) and a workdir of their own."""
    structure = Structure.from_atoms(atoms, tag)
    check_min_distance(structure, labeler.min_distance_A)
    if hasattr(labeler, "prepare"):
        labeler.prepare(atoms)
    return labeler.calculator(structure_workdir(structure, labeler))


def label_structure(structure: Structure, labeler: Any) -> Label:
    """One single-point calculation: energy, forces and, for periodic cells, stress."""
    atoms = labeler_atoms(structure, labeler)
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    stress = np.full(6, np.nan)
    if atoms.pbc.any():
        try:
            stress = np.asarray(atoms.get_stress(voigt=True), dtype=np.float64)
        except PropertyNotImplementedError:
            pass
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise RuntimeError(f"labeler returned non-finite energy or forces (energy={energy})")
    return Label(energy_eV=energy, forces_eV_per_A=forces, stress_eV_per_A3=stress)


def label_batch(keys: list[str], structures: list[Structure], labeler: Any) -> list[Outcome]:
    """Label several structures in one task (work units of seconds, not milliseconds)."""
    return run_each(label_structure, keys, structures, labeler)
