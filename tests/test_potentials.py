"""The conformance suite every potential runs (tasks/potential.py): the Behler–Parrinello model, a
committee, the DP-Tab blend and an ASE calculator (tblite) behind the adapter.

To add a potential: give it a fixture entry in POTENTIALS (a builder and its tolerances); every
test below then runs on it. A property that cannot hold for a physical reason is skipped for
that potential with the reason written here.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import mx2
from ase.calculators.fd import calculate_numerical_stress

from tasks.ase_potential import AseCalculatorPotential
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.calculator import NNPCalculator
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.nnp.repulsion import Blended, PairRepulsion, PairTable, zbl_energy_eV
from tasks.potential import Potential, load_potential, per_atom_energies

SETTINGS = ModelSettings(DescriptorSettings(elements=("Mo", "S"), radial_cutoff_A=4.0, angular_cutoff_A=3.5),
                         hidden=(8, 8))
TBLITE = ("tblite.ase:TBLite", {"method": "GFN1-xTB", "verbosity": 0})


def bp(seed: int = 0) -> BehlerParrinello:
    model = BehlerParrinello(SETTINGS, seed=seed)
    with torch.no_grad():  # non-trivial normalisation and references, as after training
        model.atomic.feature_std.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(seed))
        model.atomic.reference_energy_eV.copy_(torch.tensor([-1.5, -3.0]))  # S, Mo
    return model


def zbl_table() -> PairTable:
    """A pair table (S-S, S-Mo, Mo-Mo) of ZBL values on a grid: a table without a labeler."""
    grid = np.linspace(0.5, 2.5, 41)
    rows = [zbl_energy_eV(grid, za, zb) for za, zb in ((16, 16), (16, 42), (42, 42))]
    return PairTable(("S", "Mo"), grid, np.stack(rows))


def blend() -> Blended:
    return Blended(bp(1), PairRepulsion(("S", "Mo"), zbl_table()), r_inner_A=1.0, r_outer_A=1.2)


# name → (builder, relative force tolerance, stress tolerance eV/Å³, finite-difference step Å).
# tblite converges its SCF to a tolerance, so its finite differences take a larger step and bound.
POTENTIALS = {
    "behler_parrinello": (bp, 1e-7, 1e-8, 1e-5),
    "committee": (lambda: Committee([bp(0), bp(2)]), 1e-7, 1e-8, 1e-5),
    "dp_tab_blend": (blend, 1e-7, 1e-8, 1e-5),
    "ase_tblite": (lambda: AseCalculatorPotential(*TBLITE, elements=("Mo", "S")), 1e-4, 1e-4, 1e-3),
}
# finite-difference components checked: (atom, direction) for forces, Voigt indices for stress.
# A periodic tblite evaluation costs about a second, so tblite gets two of each.
FORCE_COMPONENTS = {"ase_tblite": [(1, 2), (2, 0)]}
STRESS_COMPONENTS = {"ase_tblite": [0, 3]}


@pytest.fixture(scope="module", params=list(POTENTIALS))
def case(request):
    build, force_tol, stress_tol, h = POTENTIALS[request.param]
    return request.param, build(), force_tol, stress_tol, h


def cluster_for(name: str) -> Atoms:
    # GFN1-xTB's SCF does not converge reliably with a 1.1 Å S–S contact (nor is it meant for
    # one: that is what the blend's table is for), so tblite gets a molecule at ordinary distances
    return gentle_cluster() if name == "ase_tblite" else cluster()


def periodic_cell() -> Atoms:
    """MoS2 sheets stacked 6.2 Å apart, periodic in 3D, rattled (3 atoms: cheap for tblite)."""
    atoms = mx2("MoS2", size=(1, 1, 1), vacuum=1.5)
    atoms.pbc = True
    atoms.rattle(0.08, seed=1)
    return atoms


def cluster() -> Atoms:
    """A free MoS2 molecule with one short S–S contact inside the blend's switch (1.1 Å)."""
    return Atoms("MoS2", positions=[[5.0, 5.0, 5.0], [6.6, 5.9, 5.2], [6.9, 5.2, 6.1]], cell=[12.0] * 3, pbc=False)


def gentle_cluster() -> Atoms:
    return Atoms("MoS2", positions=[[5.0, 5.0, 5.0], [7.0, 5.9, 5.2], [5.4, 7.2, 6.1]], cell=[12.0] * 3, pbc=False)


def energy(potential, atoms: Atoms) -> float:
    return float(potential(AtomsBatch.from_atoms([atoms], dtype=potential.dtype), forces=False)["energy"][0])


def test_every_case_is_a_potential(case):
    _, potential, *_ = case
    assert isinstance(potential, Potential)
    assert set(potential.elements) == {"Mo", "S"} and potential.dtype == torch.float64


@pytest.mark.parametrize("periodic", [True, False])
def test_forces_are_minus_the_energy_gradient(case, periodic):
    name, potential, force_tol, _, h = case
    atoms = periodic_cell() if periodic else cluster_for(name)
    forces = potential(AtomsBatch.from_atoms([atoms]))["forces"].numpy()
    for i, x in FORCE_COMPONENTS.get(name, [(0, 0), (1, 2), (2, 1)]):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, x] += h
        minus.positions[i, x] -= h
        numeric = -(energy(potential, plus) - energy(potential, minus)) / (2 * h)
        # relative: the finite difference's own error grows with the curvature, large at short range
        assert abs(numeric - forces[i, x]) < force_tol * max(1.0, abs(forces[i, x])), (i, x, numeric, forces[i, x])
    assert np.abs(forces).max() > 1e-4, "the test needs non-zero forces"


def strain_derivative(potential, atoms: Atoms, voigt: int, eps: float) -> float:
    """dE/dε_ab / V by central differences of a homogeneous strain of cell and positions."""
    a, b = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)][voigt]
    energies = []
    for sign in (1, -1):
        strain = np.eye(3)
        strain[a, b] += sign * eps / (1 if a == b else 2)
        strain[b, a] = strain[a, b]
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        energies.append(energy(potential, strained))
    return (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume()


def test_stress_is_the_strain_derivative(case):
    name, potential, _, stress_tol, h = case
    atoms = periodic_cell()
    analytic = potential(AtomsBatch.from_atoms([atoms]), stress=True)["stress"][0].numpy()
    for voigt in STRESS_COMPONENTS.get(name, range(6)):
        assert abs(strain_derivative(potential, atoms, voigt, h / 10) - analytic[voigt]) < stress_tol, voigt
    # and by ASE's own finite differences, through the ASE calculator, where that is cheap
    if name not in STRESS_COMPONENTS:
        atoms.calc = NNPCalculator(potential)
        np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=h / 10), atol=stress_tol)
    assert np.abs(analytic).max() > 1e-5, "the test needs a non-zero stress"


def test_batched_equals_one_by_one(case):
    name, potential, *_ = case
    systems = [periodic_cell(), cluster_for(name), periodic_cell().repeat((2, 1, 1))]
    batched = potential(AtomsBatch.from_atoms(systems), stress=True)
    start = 0
    for b, atoms in enumerate(systems):
        one = potential(AtomsBatch.from_atoms([atoms]), stress=True)
        for key in set(batched) & {"energy", "stress", "force_deviation", "energy_deviation_per_atom"}:
            torch.testing.assert_close(batched[key][b], one[key][0], rtol=0, atol=1e-10, equal_nan=True)
        torch.testing.assert_close(batched["forces"][start:start + len(atoms)], one["forces"], rtol=0, atol=1e-10)
        start += len(atoms)


def test_energy_is_invariant_to_translation_rotation_and_permutation(case):
    name, potential, force_tol, *_ = case
    atoms = cluster_for(name)
    e0 = energy(potential, atoms)
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), center="COM")
    moved.translate((0.3, -1.1, 0.7))
    permuted = atoms[[2, 0, 1]]
    for other in (moved, permuted):
        assert abs(energy(potential, other) - e0) < 1e-7 * max(1.0, abs(e0))
    # forces rotate with the structure and follow the permutation
    f0 = potential(AtomsBatch.from_atoms([atoms]))["forces"].numpy()
    rotated = atoms.copy()
    rotated.rotate(90, "z", center="COM")
    f_rot = potential(AtomsBatch.from_atoms([rotated]))["forces"].numpy()
    tolerance = 1e-3 * force_tol * max(1.0, np.abs(f0).max())
    np.testing.assert_allclose(f_rot, f0 @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]), rtol=0, atol=tolerance)
    np.testing.assert_allclose(potential(AtomsBatch.from_atoms([permuted]))["forces"].numpy(), f0[[2, 0, 1]],
                               rtol=0, atol=tolerance)


def test_periodic_images_give_the_supercell_energy_per_atom(case):
    name, potential, *_ = case
    if name == "ase_tblite":
        pytest.skip("tblite samples the Brillouin zone at Γ only: a 3-atom cell and its 2x2x1 supercell are "
                    "different k-point samplings of the crystal, so their energies per atom differ")
    cell = periodic_cell()
    supercell = cell.repeat((2, 2, 1))
    out = potential(AtomsBatch.from_atoms([cell, supercell]))
    per_atom = out["energy"].numpy() / np.array([len(cell), len(supercell)])
    assert abs(per_atom[0] - per_atom[1]) < 1e-10
    np.testing.assert_allclose(out["forces"][len(cell):].numpy(), np.tile(out["forces"][:len(cell)].numpy(), (4, 1)),
                               atol=1e-10)


def test_isolated_atoms(case):
    """An atom alone has no force, and its energy depends neither on where it sits nor on the box;
    two atoms far apart have the sum of their isolated energies."""
    name, potential, *_ = case
    single = {e: Atoms(e, positions=[[4.0, 4.0, 4.0]], cell=[8.0] * 3, pbc=False) for e in ("Mo", "S")}
    for e, atoms in single.items():
        out = potential(AtomsBatch.from_atoms([atoms]))
        assert torch.all(out["forces"] == 0)
        elsewhere = Atoms(e, positions=[[1.0, 7.0, 2.5]], cell=[15.0] * 3, pbc=False)
        assert abs(energy(potential, elsewhere) - float(out["energy"][0])) < 1e-9
    pairs = ["SS", "MoS"]
    tolerance = 1e-9
    if name == "ase_tblite":
        # GFN1-xTB's electrostatics and dispersion have no cutoff: at 12 Å a small remainder is
        # physical; and a Mo–S pair that far apart does not converge in its SCF (charge sloshes
        # across the gap), so only S–S is checked
        pairs, tolerance = ["SS"], 1e-4
    for formula in pairs:
        apart = Atoms(formula, positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 12.0]], cell=[30.0] * 3, pbc=False)
        alone = sum(energy(potential, single[e]) for e in apart.get_chemical_symbols())
        assert abs(energy(potential, apart) - alone) < tolerance


def test_per_atom_energies_sum_to_the_energy(case):
    name, potential, *_ = case
    if name == "ase_tblite":
        pytest.skip("an ASE calculator gives no per-atom energies (no atomic_energy_fn)")
    batch = AtomsBatch.from_atoms([periodic_cell(), cluster()])
    atomic = per_atom_energies(potential, batch)  # (M, N)
    sums = torch.zeros((atomic.shape[0], 2), dtype=atomic.dtype).index_add(1, batch.system, atomic)
    out = potential(AtomsBatch.from_atoms([periodic_cell(), cluster()]), forces=False)
    expected = out["member_energies"] if "member_energies" in out else out["energy"][None]
    torch.testing.assert_close(sums, expected, rtol=0, atol=1e-10)


def test_save_and_load_round_trip(case, tmp_path):
    name, potential, *_ = case
    digest = potential.save(tmp_path / "potential.pt")
    assert digest == potential.identity()
    batch = AtomsBatch.from_atoms([periodic_cell(), cluster_for(name)])
    before = potential(batch, stress=True)
    # tblite's threaded sums are not bitwise reproducible from one call to the next
    exact = 1e-9 if name == "ase_tblite" else 0.0
    for loaded in (load_potential(tmp_path / "potential.pt"), load_potential(potential.to_bytes())):
        assert type(loaded) is type(potential) and loaded.identity() == potential.identity()
        after = loaded(batch, stress=True)
        assert set(before) == set(after)
        for key in before:
            torch.testing.assert_close(before[key], after[key], rtol=0, atol=exact, equal_nan=True)


def test_loading_in_float32(case):
    name, potential, *_ = case
    loaded = load_potential(potential.to_bytes(), dtype="float32")
    assert loaded.dtype == torch.float32
    atoms = cluster_for(name)
    e32 = loaded(AtomsBatch.from_atoms([atoms], dtype=torch.float32), forces=False)["energy"]
    assert abs(float(e32[0]) - energy(potential, atoms)) < 1e-5 * max(1.0, abs(energy(potential, atoms)))


def test_a_committee_of_different_kinds_of_potential():
    """A committee over any potentials: a network and tblite, member by member; mean and DP-GEN's
    force deviation max_i sqrt(mean_m |F_mi − <F_i>|²) against a hand computation."""
    members = [bp(0), AseCalculatorPotential(*TBLITE, elements=("Mo", "S"))]
    committee = Committee(members)
    assert not committee.evaluated_together and committee.atomic_energy_fn is None
    shifted = gentle_cluster()
    shifted.positions[1] += (0.2, -0.1, 0.1)
    batch = AtomsBatch.from_atoms([gentle_cluster(), shifted])
    out = committee(batch)
    each = [m(batch) for m in members]
    energies = torch.stack([o["energy"] for o in each])
    forces = torch.stack([o["forces"] for o in each])
    torch.testing.assert_close(out["energy"], energies.mean(0))
    torch.testing.assert_close(out["forces"], forces.mean(0))
    spread = ((forces - forces.mean(0)) ** 2).sum(-1).mean(0).sqrt()
    expected = torch.stack([spread[:3].max(), spread[3:].max()])
    torch.testing.assert_close(out["force_deviation"], expected)
    torch.testing.assert_close(out["energy_deviation_per_atom"], energies.std(0, correction=0) / 3)
    loaded = load_potential(committee.to_bytes())
    assert loaded.identity() == committee.identity()
    torch.testing.assert_close(loaded(batch)["force_deviation"], out["force_deviation"], rtol=0, atol=1e-9)


def test_committee_evaluated_together_equals_member_by_member():
    """The shared-descriptor pass (a capability of the members) against evaluating each member."""
    members = [bp(0), bp(2), bp(3)]
    batch = AtomsBatch.from_atoms([cluster(), periodic_cell()])
    together = Committee(members)
    assert together.evaluated_together
    fast = together.member_outputs(batch, stress=True)
    for m, member in enumerate(members):
        one = member(batch, stress=True)
        for key in ("energy", "forces", "stress"):
            torch.testing.assert_close(fast[key][m], one[key], rtol=0, atol=1e-10)


def test_a_blend_refuses_a_potential_without_atomic_energies():
    with pytest.raises(TypeError, match="energies per atom"):
        Blended(AseCalculatorPotential(*TBLITE, elements=("Mo", "S")), PairRepulsion(("S", "Mo")))


def test_existing_model_files_keep_loading():
    """A Behler–Parrinello file as the current release writes it loads through load_potential."""
    model = bp(5)
    data = model.to_bytes()
    assert torch.load(__import__("io").BytesIO(data), weights_only=True)["format"] == "campaign-bpnn-1"
    assert BehlerParrinello.from_bytes(data).identity() == load_potential(data).identity()


def test_fingerprints_fall_back_to_radial_distributions_for_potentials_without_descriptors():
    """Farthest-point selection needs fingerprints from any potential: tblite has no descriptors,
    so per-element-pair radial distributions stand in; batched in chunks they equal one structure
    at a time, an absent element gives zeros, and rattled copies differ."""
    from tasks.active.select import structure_fingerprints
    from tests.conftest import rattled_sheets_and_one_without_mo

    potential = AseCalculatorPotential(*TBLITE, elements=("Mo", "S"))
    assert getattr(potential, "fingerprints", None) is None
    structures = rattled_sheets_and_one_without_mo(4)  # the last one has no Mo left
    batched = structure_fingerprints(potential, structures, chunk=3)
    one_by_one = np.concatenate([structure_fingerprints(potential, [s]) for s in structures])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12, atol=1e-12)
    per_pair = batched[-1].reshape(2, 2, -1)  # (centre, neighbour) in atomic-number order: S, Mo
    assert np.all(per_pair[1] == 0) and np.all(per_pair[:, 1] == 0) and np.any(per_pair[0, 0] != 0)
    assert len(set(map(tuple, np.round(batched[:4], 8)))) == 4


def test_exploration_runs_with_a_committee_of_ase_calculators(tmp_path):
    """A user's own calculator explores: committee files of two tblite adapters (different
    electronic temperatures, so they disagree) drive the batched MD of explore()."""
    from tasks.active.explore import CommitteeFiles, ExploreJob, ExploreSettings, explore
    from tasks.structures import Structure

    files = CommitteeFiles(tuple(AseCalculatorPotential(TBLITE[0], {**TBLITE[1], "electronic_temperature": t},
                                                        elements=("Mo", "S")).to_bytes() for t in (300.0, 3000.0)),
                           dtype="float64", device="cpu")
    sheet = Structure.from_atoms(mx2("MoS2", size=(1, 1, 1), vacuum=5.0), "mos2")
    frames = explore(ExploreJob([sheet], (0.0,), 300.0, seed=1), files, ExploreSettings(steps=2, frame_every=1))
    assert len(frames.structures) == 2 and np.all(frames.deviation_eV_per_A > 0)


def test_a_file_of_an_unknown_format_is_a_clear_error(tmp_path):
    import io

    buffer = io.BytesIO()
    torch.save({"format": "someone-else-1"}, buffer)
    with pytest.raises(ValueError, match="known format.*someone-else-1"):
        load_potential(buffer.getvalue())
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a potential file"):
        load_potential(tmp_path / "notes.txt")


def test_a_potential_file_naming_something_else_than_a_calculator_runs_nothing(tmp_path):
    """A potential file is data: one naming `subprocess:Popen` as its calculator is refused before
    anything is called (as the labeler's calculator_class of a spec is)."""
    import io

    from ase.calculators.calculator import CalculatorSetupError

    marker = tmp_path / "ran"
    payload = {"format": "campaign-ase-calculator-1", "calculator_class": "subprocess:Popen",
               "parameters": {"args": f"touch {marker}", "shell": True}, "elements": ["S"]}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(CalculatorSetupError, match="not an ASE calculator class"):
        load_potential(buffer.getvalue())
    assert not marker.exists()
