"""The validation's property functions (tasks/validation) against references that share no code
with them: ase.eos fits, energy second derivatives written out, phonopy driven directly, brute-force
distance loops, the Lennard-Jones formula, scipy's quadrature."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, mx2
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.eos import EquationOfState
from ase.optimize import BFGS
from ase.units import GPa

from tasks.validation.defects import elemental_chemical_potentials_eV, formation_energy_eV, relaxed_energy_eV
from tasks.validation.dimer import dimer_curves_eV
from tasks.validation.elastic import (EV_PER_A2_IN_N_PER_M, bulk_elastic_GPa, sheet_elastic, strain_matrix,
                                      strained)
from tasks.validation.eos import delta_eV_per_atom, energies_per_atom, scaled_cells
from tasks.validation.phonons import (band_structure, displaced_cells, forces_of, frequencies_THz,
                                      gamma_frequencies_THz, phonopy_of, with_forces)
from tasks.validation.relax import relaxed, shortest_distances

STRAINS = (-0.002, -0.001, 0.001, 0.002)


def emt(atoms: Atoms) -> EMT:
    return EMT()


def energy(atoms: Atoms) -> float:
    work = atoms.copy()
    work.calc = EMT()
    return work.get_potential_energy()


@pytest.fixture(scope="module")
def copper() -> Atoms:
    """fcc Cu (EMT) at the minimum of its equation of state, found by ase.eos."""
    volumes, energies = [], []
    for a in np.linspace(3.55, 3.65, 11):
        atoms = bulk("Cu", "fcc", a=a)
        volumes.append(atoms.get_volume())
        energies.append(energy(atoms))
    v0, _, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return bulk("Cu", "fcc", a=(4 * v0) ** (1 / 3))


def test_a_relaxed_cell_sits_at_the_minimum_of_the_equation_of_state(copper):
    out = relaxed(bulk("Cu", "fcc", a=3.7), emt, "full", fmax_eV_per_A=1e-5)
    assert out.get_volume() == pytest.approx(copper.get_volume(), rel=2e-4)
    assert np.abs(out.get_stress()).max() < 1e-5


def test_a_sheet_relaxes_in_its_plane_only():
    triangle = Atoms("Cu", cell=[[2.7, 0, 0], [-1.35, 2.7 * 3 ** 0.5 / 2, 0], [0, 0, 14.0]], pbc=True)
    out = relaxed(triangle, emt, "in_plane", fmax_eV_per_A=1e-5)
    assert out.cell[2, 2] == pytest.approx(14.0, abs=1e-12), "the vacuum keeps its height"
    assert out.cell.lengths()[0] != pytest.approx(2.7, abs=1e-3)
    stress = out.get_stress()
    assert abs(stress[0]) < 1e-5 and abs(stress[1]) < 1e-5 and abs(stress[5]) < 1e-5


def test_shortest_distances_match_loops_over_images():
    sheet = mx2("MoS2", a=3.18, thickness=3.12, vacuum=8.0)
    ours = shortest_distances(sheet)
    symbols = sheet.get_chemical_symbols()
    expected: dict = {}
    for (i, a), (j, b) in itertools.product(enumerate(symbols), repeat=2):
        for n1, n2 in itertools.product(range(-2, 3), repeat=2):
            d = np.linalg.norm(sheet.positions[j] + n1 * sheet.cell[0] + n2 * sheet.cell[1] - sheet.positions[i])
            if d > 1e-8:
                key = tuple(sorted((a, b)))
                expected[key] = min(expected.get(key, np.inf), d)
    assert ours.keys() == expected.keys()
    for key in ours:
        assert ours[key] == pytest.approx(expected[key], abs=1e-10)
    assert ours[("S", "S")] == pytest.approx(3.12, abs=1e-10), "the sheet's S–S height, below a0"


def test_bulk_elastic_constants_are_the_energy_curvatures(copper):
    c = bulk_elastic_GPa(copper, emt, STRAINS)
    volume, h = copper.get_volume(), 1e-3

    def curvature(eps: np.ndarray) -> float:  # d²(E/V)/dh² by central differences, in GPa
        e = [energy(strained(copper, k * h * eps)) for k in (-1, 0, 1)]
        return (e[0] - 2 * e[1] + e[2]) / h ** 2 / volume / GPa

    c11 = curvature(np.diag([1.0, 0, 0]))
    c12 = (curvature(np.diag([1.0, 1.0, 0])) - 2 * c11) / 2
    c44 = curvature(strain_matrix(3, 1.0))
    assert c[0, 0] == pytest.approx(c11, rel=2e-3)
    assert c[0, 1] == pytest.approx(c12, rel=2e-3)
    assert c[3, 3] == pytest.approx(c44, rel=2e-3)
    cubic = np.diag([c[0, 0]] * 3 + [c[3, 3]] * 3)
    cubic[:3, :3] += (1 - np.eye(3)) * c[0, 1]
    assert np.abs(c - cubic).max() < 1e-3 * c[0, 0], "cubic symmetry"


def test_sheet_elastic_constants_are_the_energy_curvatures_per_area():
    start = Atoms("Cu", cell=[[2.7, 0, 0], [-1.35, 2.7 * 3 ** 0.5 / 2, 0], [0, 0, 14.0]], pbc=True)
    sheet = relaxed(start, emt, "in_plane", fmax_eV_per_A=1e-6)
    ours = sheet_elastic(sheet, emt, STRAINS)
    area, h = np.linalg.norm(np.cross(sheet.cell[0], sheet.cell[1])), 1e-3

    def curvature(eps: np.ndarray) -> float:  # d²(E/A)/dh² in N/m
        e = [energy(strained(sheet, k * h * eps)) for k in (-1, 0, 1)]
        return (e[0] - 2 * e[1] + e[2]) / h ** 2 / area * EV_PER_A2_IN_N_PER_M

    c11 = curvature(np.diag([1.0, 0, 0]))
    c12 = (curvature(np.diag([1.0, 1.0, 0])) - 2 * c11) / 2
    c66 = curvature(strain_matrix(5, 1.0))
    assert ours.c11_N_per_m == pytest.approx(c11, rel=2e-3)
    assert ours.c12_N_per_m == pytest.approx(c12, rel=5e-3)
    assert ours.c66_N_per_m == pytest.approx(c66, rel=2e-3)
    assert ours.c66_N_per_m == pytest.approx((ours.c11_N_per_m - ours.c12_N_per_m) / 2, rel=5e-3), \
        "a triangular sheet is isotropic in its plane"
    assert ours.young_N_per_m == pytest.approx((c11 ** 2 - c12 ** 2) / c11, rel=5e-3)
    assert ours.poisson == pytest.approx(c12 / c11, rel=5e-3)


def test_delta_is_the_mean_absolute_difference_of_the_sixth_order_fits():
    from scipy.integrate import quad

    rng = np.random.default_rng(7)
    v = np.linspace(0.9 ** 3, 1.2 ** 3, 16) * 20.0
    base = 0.02 * (v - 20.0) ** 2 / 20.0 - 4.0
    a = base + rng.normal(0, 2e-3, v.size)
    b = base + 0.004 * np.sin(v) + rng.normal(0, 2e-3, v.size)
    fit_a, fit_b = np.polyfit(v, a, 6), np.polyfit(v, b, 6)
    expected = quad(lambda x: abs(np.polyval(fit_a, x) - np.polyval(fit_b, x)), v[0], v[-1], limit=200)[0]
    assert delta_eV_per_atom(v, a, v, b) == pytest.approx(expected / (v[-1] - v[0]), rel=1e-6)
    assert delta_eV_per_atom(v, a, v, a + 0.003) == pytest.approx(0.003, rel=1e-9)
    assert delta_eV_per_atom(v, a, v, a) == pytest.approx(0.0, abs=1e-12)


def test_scaled_cells_scale_the_volume_by_the_cube(copper):
    cells = scaled_cells(copper, [-0.1, 0.0, 0.2])
    assert [c.get_volume() / copper.get_volume() for c in cells] == pytest.approx([0.9 ** 3, 1.0, 1.2 ** 3])
    assert energies_per_atom(cells[1:2], emt)[0] == pytest.approx(energy(copper) / len(copper))


@pytest.fixture(scope="module")
def hcp_copper() -> Atoms:
    return bulk("Cu", "hcp", a=2.55, c=2.55 * (8 / 3) ** 0.5)


def test_gamma_frequencies_are_phonopys_and_keep_the_acoustic_sum_rule(hcp_copper):
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    ours = gamma_frequencies_THz(hcp_copper, emt, (3, 3, 2))

    unit = PhonopyAtoms(symbols=hcp_copper.get_chemical_symbols(), cell=hcp_copper.cell[:],
                        scaled_positions=hcp_copper.get_scaled_positions())
    direct = Phonopy(unit, supercell_matrix=[[3, 0, 0], [0, 3, 0], [0, 0, 2]])
    direct.generate_displacements(distance=0.01)
    forces = []
    for cell in direct.supercells_with_displacements:
        atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    direct.forces = forces
    direct.produce_force_constants()
    direct.run_qpoints([[0, 0, 0]])
    expected = direct.qpoints.frequencies[0]
    assert ours == pytest.approx(expected, abs=1e-10)
    assert np.sort(np.abs(ours))[:3] == pytest.approx([0, 0, 0], abs=0.05), "three acoustic modes at Γ"
    assert np.sort(ours)[3:].min() > 1.0, "the optical modes of hcp are finite"


def test_the_band_path_starts_and_ends_at_gamma(hcp_copper):
    phonon = phonopy_of(hcp_copper, (3, 3, 2))
    with_forces(phonon, forces_of(displaced_cells(phonon), emt))
    distances, frequencies, labels = band_structure(phonon, points_per_segment=11)
    assert labels == ["Γ", "M", "K", "Γ"] and frequencies.shape == (33, 6)
    assert np.all(np.diff(distances) >= -1e-12)
    gamma = frequencies_THz(phonon, [[0, 0, 0]])[0]
    assert frequencies[0] == pytest.approx(gamma, abs=1e-8) and frequencies[-1] == pytest.approx(gamma, abs=1e-8)


def test_a_vacancy_formation_energy_is_that_of_ases_own_relaxation(copper):
    perfect = copper.repeat(3)
    e_perfect = energy(perfect)
    mu = elemental_chemical_potentials_eV({"Cu": bulk("Cu", "fcc", a=3.7)}, emt, fmax_eV_per_A=1e-5)
    assert mu["Cu"] == pytest.approx(e_perfect / len(perfect), abs=1e-6), "the crystal relaxes to the EOS minimum"
    defect = perfect.copy()
    del defect[4]
    ours = formation_energy_eV(relaxed_energy_eV(defect, emt, "none", 1e-3), e_perfect, {"Cu": 1}, mu)
    reference = defect.copy()
    reference.calc = EMT()
    BFGS(reference, logfile=None).run(fmax=1e-4)
    assert ours == pytest.approx(reference.get_potential_energy() - e_perfect + mu["Cu"], abs=2e-4)
    assert ours > 0
    with pytest.raises(ValueError, match="the reference of Cu holds"):
        elemental_chemical_potentials_eV({"Cu": bulk("CuAu", "rocksalt", a=4.0)}, emt)


def test_the_defects_step_reports_both_chemical_potentials(copper):
    from tasks.labeling import AseLabeler
    from tasks.structures import Structure
    from tasks.validation.jobs import DefectCase, Source, ValidationJob, ValidationSettings, validate_batch

    crystal = Structure.from_atoms(bulk("Cu", "fcc", a=3.7)).canonical()
    settings = ValidationSettings(sheet=False, repeat=(1, 1, 1), defects=(DefectCase("V_Cu", "vacancy", "Cu"),),
                                  defect_repeat=(3, 3, 3), references=(("Cu", crystal),), fmax_eV_per_A=1e-3)
    source = Source("emt", labeler=AseLabeler(calculator_class="ase.calculators.emt.EMT"))
    [outcome] = validate_batch(["k"], [ValidationJob(source, "defects", Structure.from_atoms(copper))], settings)
    assert outcome.ok, outcome.traceback
    values = {v.name: v.value for v in outcome.value.values}
    shift = values["E(Cu atom)"] - values["μ(Cu) reference"]  # one Cu leaves: E_f moves by the μ difference
    assert values["E_f(V_Cu)"] - values["E_f(V_Cu) vs references"] == pytest.approx(shift, abs=1e-9)
    assert values["μ(Cu) reference"] == pytest.approx(energy(copper) / len(copper), abs=1e-5)
    assert 0 < values["E_f(V_Cu) vs references"] < 3


def test_dimer_curves_are_the_pair_formula():
    distances = np.linspace(0.9, 2.9, 9)
    curves = dimer_curves_eV(["Ar"], distances, lambda atoms: LennardJones(sigma=1.0, epsilon=1.0, rc=9.0))
    lj = lambda r: 4 * (r ** -12 - r ** -6)  # noqa: E731
    assert list(curves) == [("Ar", "Ar")]
    assert curves[("Ar", "Ar")] == pytest.approx(lj(distances) - lj(9.0), abs=1e-9)


def test_a_dimer_point_the_calculator_cannot_do_is_a_gap():
    from tasks.labeling import AseLabeler, labeler_calculator

    labeler = AseLabeler(calculator_class="ase.calculators.lj.LennardJones", parameters={"rc": 9.0},
                         min_distance_A=0.95)
    curves = dimer_curves_eV(["Ar"], [0.9, 1.0, 1.5], lambda atoms: labeler_calculator(atoms, labeler))
    assert np.isnan(curves[("Ar", "Ar")][0]) and np.isfinite(curves[("Ar", "Ar")][1:]).all()
