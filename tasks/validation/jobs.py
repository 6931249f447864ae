"""The validation's work: one job per (source, step), a source being a potential or the labeler.

Every source goes through the same arithmetic with its own ASE calculator. The ``structure`` step
relaxes the reference cell; every other step starts from the cell its source relaxed, so each
column of the table is that source's own prediction (Table II of the MoS2 study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from tasks.outcome import Outcome, run_each
from tasks.potential import PotentialFiles
from tasks.structures import Structure
from tasks.validation.elastic import DEFAULT_STRAINS
from tasks.validation.phonons import HEXAGONAL_PATH
from tasks.validation.relax import CalculatorFactory, relaxed, shortest_distances
from tasks.validation.threshold import ThresholdSettings

STEPS = ("structure", "elastic", "eos", "strain", "phonons", "defects", "dimers", "thresholds")


@dataclass(frozen=True)
class Source:
    """A column of the table: a potential (its files) or the labeler (its settings object)."""

    name: str
    potential: PotentialFiles | None = None
    labeler: Any = None

    def calculators(self) -> CalculatorFactory:
        if self.labeler is not None:
            from tasks.labeling import labeler_calculator

            return lambda atoms: labeler_calculator(atoms, self.labeler, "validate")
        from tasks.nnp.calculator import NNPCalculator

        model = self.potential.load()
        return lambda atoms: NNPCalculator(model)

    def model(self, elements=()):
        """The source as a batched potential (MD): the labeler's calculator one system at a time."""
        if self.labeler is None:
            return self.potential.load()
        from tasks.ase_potential import AseCalculatorPotential

        return AseCalculatorPotential.of_factory(self.calculators(), elements)


@dataclass(frozen=True)
class DefectCase:
    name: str  # e.g. V_S, V_Mo, V_S2, S_Mo
    kind: str  # vacancy | antisite
    species: str
    count: int = 1
    replacement: str | None = None


@dataclass(frozen=True)
class ValidationSettings:
    sheet: bool
    repeat: tuple[int, int, int]
    fmax_eV_per_A: float = 0.01
    max_steps: int = 1000
    elastic_strains: tuple[float, ...] = DEFAULT_STRAINS
    relax_ions: bool = True
    eos_scales: tuple[float, ...] = tuple(np.round(np.arange(0.70, 1.3001, 0.05), 10))  # of V0 (a sheet: A0)
    curve_strains: tuple[float, ...] = tuple(np.round(np.arange(-0.15, 0.1501, 0.01), 10))
    phonon_supercell: tuple[int, int, int] = (1, 1, 1)
    phonon_distance_A: float = 0.01
    phonon_path: tuple = HEXAGONAL_PATH
    phonon_points: int = 51
    defects: tuple[DefectCase, ...] = ()
    defect_repeat: tuple[int, int, int] = (1, 1, 1)
    references: tuple[tuple[str, dict], ...] = ()  # (element, Structure.canonical() of its crystal)
    dimer_distances_A: tuple[float, ...] = tuple(np.round(np.arange(0.5, 5.0001, 0.1), 10))
    box_A: float = 14.0  # isolated atoms and dimers, as the active-learning recipe labels them
    threshold_species: tuple[str, ...] = ()
    threshold_directions: int = 16
    threshold: ThresholdSettings = ThresholdSettings()
    threshold_repeat: tuple[int, int, int] = (1, 1, 1)
    seed: int = 0


# What each step's result depends on besides its source and cell: a task key holds these alone, so
# changing one step's settings redoes that step only
STEP_SETTINGS = {
    "structure": ("sheet", "repeat", "fmax_eV_per_A", "max_steps"),
    "elastic": ("sheet", "elastic_strains", "relax_ions", "fmax_eV_per_A", "max_steps"),
    "eos": ("sheet", "eos_scales"),
    "strain": ("sheet", "curve_strains"),
    "phonons": ("repeat", "phonon_supercell", "phonon_distance_A", "phonon_path", "phonon_points"),
    "defects": ("defects", "defect_repeat", "references", "fmax_eV_per_A", "max_steps", "box_A", "seed"),
    "dimers": ("dimer_distances_A", "box_A"),
    "thresholds": ("threshold_species", "threshold_directions", "threshold", "threshold_repeat"),
    "forces": (),  # one displaced cell of the labeler's phonons: the cell is the whole input
}


def step_settings(settings: ValidationSettings, step: str) -> dict:
    from dataclasses import asdict

    everything = asdict(settings)
    return {name: everything[name] for name in STEP_SETTINGS[step]}


@dataclass(frozen=True)
class Value:
    name: str
    unit: str
    value: float


@dataclass(frozen=True)
class Curve:
    name: str
    x_unit: str
    y_unit: str
    x: np.ndarray
    y: np.ndarray  # (points,) or (points, series)


@dataclass(frozen=True)
class ValidationResult:
    values: list[Value] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    structure: Atoms | None = None  # the relaxed cell (structure step)
    forces: np.ndarray | None = None  # (n_atoms, 3) eV/Å (forces step)


@dataclass(frozen=True, eq=False)
class ValidationJob:
    source: Source
    step: str
    structure: Structure  # structure step: the reference cell; forces: a displaced cell; the others: the
    # source's relaxed cell
    displaced_forces: np.ndarray | None = None  # phonons: forces on phonopy's displaced cells, computed
    # as forces tasks (the labeler's); None: the phonons task computes them


def validate_batch(keys: list[str], jobs: list[ValidationJob], settings: ValidationSettings) -> list[Outcome]:
    return run_each(_run, keys, jobs, settings)


def _run(job: ValidationJob, settings: ValidationSettings) -> ValidationResult:
    atoms = job.structure.to_atoms()
    if job.step == "thresholds":
        return _thresholds(atoms, job.source.model(sorted(set(atoms.get_chemical_symbols()))), settings)
    if job.step == "phonons":
        return _phonons(atoms, job.source.calculators(), settings, job.displaced_forces)
    return _STEPS[job.step](atoms, job.source.calculators(), settings)


def _forces(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    atoms.calc = calculator(atoms)
    return ValidationResult(forces=atoms.get_forces())


def _structure(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    out = relaxed(atoms, calculator, "in_plane" if s.sheet else "full", s.fmax_eV_per_A, s.max_steps)
    lengths = out.cell.lengths() / np.array(s.repeat)
    values = [Value(name, "Å", float(v)) for name, v in zip("abc", lengths) if not (s.sheet and name == "c")]
    values += [Value(f"d({a}-{b})", "Å", d) for (a, b), d in shortest_distances(out).items()]
    values.append(Value("E/atom", "eV/atom", out.get_potential_energy() / len(out)))
    return ValidationResult(values, [], out)


def _elastic(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    from tasks.validation.elastic import bulk_elastic_GPa, sheet_elastic

    if s.sheet:
        c = sheet_elastic(atoms, calculator, s.elastic_strains, s.relax_ions, s.fmax_eV_per_A, s.max_steps)
        return ValidationResult([Value("C11", "N/m", c.c11_N_per_m), Value("C12", "N/m", c.c12_N_per_m),
                                 Value("C66", "N/m", c.c66_N_per_m), Value("Y", "N/m", c.young_N_per_m),
                                 Value("nu", "", c.poisson)])
    c = bulk_elastic_GPa(atoms, calculator, s.elastic_strains, s.relax_ions, s.fmax_eV_per_A, s.max_steps)
    return ValidationResult([Value(f"C{i + 1}{j + 1}", "GPa", float(c[i, j])) for i in range(6) for j in range(i, 6)])


def _eos(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    """Bulk: E(V) with every lattice vector scaled alike to V/V0 = each of ``eos_scales``. A sheet:
    E(area) with both in-plane vectors scaled to A/A0 (its vacuum is not part of its volume)."""
    from tasks.validation.eos import biaxial_cells, energies_per_atom, scaled_cells

    scales = np.array(s.eos_scales)
    cells = (biaxial_cells(atoms, scales ** (1 / 2) - 1) if s.sheet
             else scaled_cells(atoms, scales ** (1 / 3) - 1))
    energies = energies_per_atom(cells, calculator)
    if s.sheet:
        x = np.array([np.linalg.norm(np.cross(c.cell[0], c.cell[1])) / len(c) for c in cells])
        return ValidationResult([], [Curve("eos", "Å²/atom", "eV/atom", x, energies)])
    x = np.array([c.get_volume() / len(c) for c in cells])
    return ValidationResult([], [Curve("eos", "Å³/atom", "eV/atom", x, energies)])


def _strain(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    """Energy–strain curves, static: uniaxial along each periodic direction, and biaxial for a sheet."""
    from tasks.validation.eos import biaxial_cells, energies_per_atom, uniaxial_cells

    strains = np.array(s.curve_strains)
    curves = [Curve(f"uniaxial {axis}", "strain", "eV/atom", strains,
                    energies_per_atom(uniaxial_cells(atoms, k, strains), calculator))
              for k, axis in enumerate("xyz") if not (s.sheet and axis == "z")]
    if s.sheet:
        curves.append(Curve("biaxial", "strain", "eV/atom", strains,
                            energies_per_atom(biaxial_cells(atoms, strains), calculator)))
    return ValidationResult([], curves)


def unit_cell(atoms: Atoms, repeat: tuple[int, int, int]) -> Atoms:
    """The first unit of a cell built by ``unit.repeat(repeat)`` (ASE keeps the unit's atoms
    first), in its own cell: the unit cell phonopy needs, at the relaxed lattice."""
    n = len(atoms) // int(np.prod(repeat))
    unit = atoms[:n].copy()
    unit.set_cell(atoms.cell.array / np.array(repeat)[:, None], scale_atoms=False)
    unit.wrap()
    return unit


def phonon_displacements(relaxed_cell: Atoms, s: ValidationSettings):
    """phonopy's object on the unit cell of a source's relaxed cell, and its displaced supercells."""
    from tasks.validation.phonons import displaced_cells, phonopy_of

    unit = unit_cell(relaxed_cell, s.repeat)
    phonon = phonopy_of(unit, s.phonon_supercell, s.phonon_distance_A)
    return phonon, displaced_cells(phonon, tuple(unit.pbc))


def _phonons(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings,
             forces: np.ndarray | None = None) -> ValidationResult:
    from tasks.validation.phonons import band_structure, forces_of, frequencies_THz, with_forces

    phonon, cells = phonon_displacements(atoms, s)
    with_forces(phonon, forces_of(cells, calculator) if forces is None else forces)
    gamma = frequencies_THz(phonon, [[0.0, 0.0, 0.0]])[0]
    distances, frequencies, labels = band_structure(phonon, s.phonon_path, s.phonon_points)
    corners = distances[np.r_[0, np.arange(1, len(labels)) * s.phonon_points - 1]]
    values = [Value(f"ω_Γ{k + 1}", "THz", float(f)) for k, f in enumerate(gamma)]
    return ValidationResult(values, [Curve("phonon bands", "1/Å", "THz", distances, frequencies),
                                     Curve("phonon path corners: " + " ".join(labels), "1/Å", "", corners,
                                           np.zeros(len(corners)))])


def _isolated(symbols, calculator: CalculatorFactory, box_A: float) -> dict[str, float]:
    from tasks.validation.defects import isolated_atom_energy_eV

    return {symbol: isolated_atom_energy_eV(symbol, calculator, box_A) for symbol in sorted(set(symbols))}


def _defects(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    """Formation energies with isolated atoms as chemical potentials (the MoS2 study's choice), and
    with the elemental references' where the spec names them (``E_f(...) vs references``)."""
    from tasks.active.initial import antisite, vacancy
    from tasks.validation.defects import elemental_chemical_potentials_eV, formation_energy_eV, relaxed_energy_eV

    perfect = atoms.repeat(s.defect_repeat)
    work = perfect.copy()
    work.calc = calculator(work)
    perfect_energy = work.get_potential_energy()
    symbols = set(perfect.get_chemical_symbols()) | {d.replacement for d in s.defects if d.replacement}
    isolated = _isolated(symbols, calculator, s.box_A)
    references = elemental_chemical_potentials_eV(
        {element: Atoms(numbers=c["numbers"], positions=c["positions_A"], cell=c["cell_A"], pbc=c["pbc"])
         for element, c in s.references}, calculator, s.fmax_eV_per_A, s.max_steps)
    values = [Value(f"E({symbol} atom)", "eV", e) for symbol, e in isolated.items()]
    values += [Value(f"μ({element}) reference", "eV/atom", mu) for element, mu in references.items()]
    for k, case in enumerate(s.defects):
        rng = np.random.default_rng([s.seed, k])
        if case.kind == "vacancy":
            defect, exchange = vacancy(perfect, case.species, case.count, rng), {case.species: case.count}
        else:
            defect, exchange = antisite(perfect, case.species, case.replacement, rng), {case.species: 1,
                                                                                          case.replacement: -1}
        energy = relaxed_energy_eV(defect, calculator, "none", s.fmax_eV_per_A, s.max_steps)
        values.append(Value(f"E_f({case.name})", "eV", formation_energy_eV(energy, perfect_energy, exchange, isolated)))
        if all(element in references for element in exchange):
            values.append(Value(f"E_f({case.name}) vs references", "eV",
                                formation_energy_eV(energy, perfect_energy, exchange, references)))
    return ValidationResult(values)


def _dimers(atoms: Atoms, calculator: CalculatorFactory, s: ValidationSettings) -> ValidationResult:
    """E(r) of every pair of the structure's elements, minus the two isolated atoms."""
    from tasks.validation.dimer import dimer_curves_eV

    r = np.array(s.dimer_distances_A)
    curves = dimer_curves_eV(atoms.get_chemical_symbols(), r, calculator, s.box_A)
    return ValidationResult([], [Curve(f"dimer {a}-{b}", "Å", "eV", r, e) for (a, b), e in curves.items()])


def _thresholds(atoms: Atoms, model, s: ValidationSettings) -> ValidationResult:
    """Per PKA species: the average over the hemisphere's directions (equal-area points, so the
    plain mean is the solid-angle average) of each direction's bracket midpoint, the least, how
    many directions lie outside the bracket (counted at its ends), and every direction's bracket."""
    from tasks.validation.threshold import fibonacci_hemisphere, first_atom_of, threshold_energies

    cell = atoms.repeat(s.threshold_repeat)
    directions = fibonacci_hemisphere(s.threshold_directions)
    polar = np.degrees(np.arccos(directions[:, 2]))
    azimuth = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
    values, curves = [], []
    for symbol in s.threshold_species:
        found = threshold_energies(model, cell, first_atom_of(cell, symbol), directions, s.threshold)
        middle = (found.threshold_eV + found.below_eV) / 2
        outside = int(np.count_nonzero(found.threshold_eV == found.below_eV))
        values += [Value(f"E_d({symbol})", "eV", float(middle.mean())),
                   Value(f"E_d({symbol}) least", "eV", float(middle.min())),
                   Value(f"E_d({symbol}) directions outside the bracket", "", float(outside))]
        curves.append(Curve(f"E_d({symbol}) by direction: threshold, below, polar, azimuth", "direction",
                            "eV, eV, deg, deg", np.arange(len(directions), dtype=float),
                            np.stack([found.threshold_eV, found.below_eV, polar, azimuth], axis=1)))
    return ValidationResult(values, curves)


_STEPS = {"structure": _structure, "elastic": _elastic, "eos": _eos, "strain": _strain, "defects": _defects,
          "dimers": _dimers, "forces": _forces}
