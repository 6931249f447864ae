"""The Behler–Parrinello model: derivatives, invariances, batching, persistence."""

import numpy as np
import pytest
import torch
from ase.calculators.fd import calculate_numerical_stress

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.calculator import NNPCalculator
from tasks.nnp.committee import Committee, force_statistics, torch_force_statistics
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings, file_hash
from tests.conftest import mos2_and_crs

SETTINGS = ModelSettings(DescriptorSettings(elements=("Mo", "S", "Cr"), radial_cutoff_A=5.0, angular_cutoff_A=4.0),
                         hidden=(16, 16))


def _model(seed=0):
    model = BehlerParrinello(SETTINGS, seed=seed)
    with torch.no_grad():  # non-trivial normalisation and references, as after training
        model.atomic.feature_std.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(seed))
        model.atomic.reference_energy_eV.copy_(torch.tensor([-3.0, -1.5, -4.0]))
    return model


def _structures():
    return mos2_and_crs(0.08, (2, 1, 1))


def test_forces_are_minus_the_energy_gradient():
    model = _model()
    atoms = _structures()[1]
    atoms.calc = NNPCalculator(model)
    forces = atoms.get_forces()
    h = 1e-5
    for i, x in [(0, 0), (3, 2), (5, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, x] += h
        minus.positions[i, x] -= h
        plus.calc, minus.calc = NNPCalculator(model), NNPCalculator(model)
        numeric = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert abs(numeric - forces[i, x]) < 1e-7


def test_stress_is_the_strain_derivative():
    model = _model()
    atoms = _structures()[1]
    atoms.calc = NNPCalculator(model)
    analytic = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-6)
    np.testing.assert_allclose(analytic, numeric, atol=1e-8)
    assert np.abs(analytic).max() > 1e-5, "the test needs a non-zero stress"


def test_energy_is_invariant_to_rotation_translation_and_permutation():
    model = _model()
    atoms = _structures()[0]
    atoms.pbc = False  # a free cluster can be rotated arbitrarily
    atoms.center(vacuum=6.0)
    reference = AtomsBatch.from_atoms([atoms])
    e0 = float(model(reference, forces=False)["energy"][0].detach())
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), center="COM")
    moved.translate((0.3, -1.1, 2.0))
    permuted = atoms[np.random.default_rng(0).permutation(len(atoms))]
    for other in (moved, permuted):
        e = float(model(AtomsBatch.from_atoms([other]), forces=False)["energy"][0].detach())
        assert abs(e - e0) < 1e-9


def test_batched_equals_one_by_one():
    model = _model()
    systems = _structures()
    batched = model(AtomsBatch.from_atoms(systems), stress=True)
    start = 0
    for b, atoms in enumerate(systems):
        one = model(AtomsBatch.from_atoms([atoms]), stress=True)
        torch.testing.assert_close(batched["energy"][b], one["energy"][0], rtol=0, atol=1e-10)
        torch.testing.assert_close(batched["forces"][start:start + len(atoms)], one["forces"], rtol=0, atol=1e-10)
        torch.testing.assert_close(batched["stress"][b], one["stress"][0], rtol=0, atol=1e-12)
        start += len(atoms)


def test_isolated_atom_has_its_reference_energy():
    from ase import Atoms

    model = _model()
    atom = Atoms("S", positions=[[5, 5, 5]], cell=[10, 10, 10], pbc=False)
    # elements are ordered by atomic number (S, Cr, Mo): S's reference energy is -3.0 eV
    assert abs(float(model(AtomsBatch.from_atoms([atom]), forces=False)["energy"][0]) + 3.0) < 1e-12


def test_float32_agrees_with_float64():
    model = _model()
    systems = _structures()
    e64 = model(AtomsBatch.from_atoms(systems))["energy"]
    model32 = _model().to(torch.float32)
    e32 = model32(AtomsBatch.from_atoms(systems, dtype=torch.float32))["energy"]
    torch.testing.assert_close(e32.double(), e64, rtol=0, atol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    model = _model(seed=3)
    digest = model.save(tmp_path / "m.pt")
    assert digest == file_hash(tmp_path / "m.pt")
    loaded = BehlerParrinello.load(tmp_path / "m.pt")
    batch = AtomsBatch.from_atoms(_structures())
    torch.testing.assert_close(loaded(batch)["forces"], model(batch)["forces"])
    assert loaded.settings == model.settings


def test_committee_of_identical_members_has_no_deviation_and_matches_the_model():
    model = _model()
    committee = Committee([model, _model()])
    batch = AtomsBatch.from_atoms(_structures())
    out = committee(batch)
    assert torch.all(out["force_deviation"] < 1e-10) and torch.all(out["energy_deviation_per_atom"] < 1e-12)
    torch.testing.assert_close(out["forces"], model(batch)["forces"])


def test_committee_force_deviation_is_dpgen_definition():
    members = [_model(seed=s) for s in range(3)]
    batch = AtomsBatch.from_atoms(_structures())
    out = Committee(members)(batch)
    f = torch.stack([m(batch)["forces"].detach() for m in members])  # (M, N, 3)
    spread = ((f - f.mean(0)) ** 2).sum(-1).mean(0).sqrt()
    n0 = len(_structures()[0])
    expected = torch.stack([spread[:n0].max(), spread[n0:].max()])
    torch.testing.assert_close(out["force_deviation"], expected)
    assert torch.all(out["force_deviation"] > 0)


def test_compiled_force_statistics_equal_the_torch_ones_and_keep_nan():
    """The CPU pass behind committee results against the torch operations CUDA uses: mean forces
    and per-frame deviation, on three frames, one of them blown up (a NaN force must show as NaN)."""
    generator = torch.Generator().manual_seed(0)
    forces = torch.randn((4, 30, 3), generator=generator, dtype=torch.float64)
    system = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 15, 10]))
    mean, deviation = force_statistics(forces, system, 3)
    torch_mean, torch_deviation = torch_force_statistics(forces, system, 3)
    torch.testing.assert_close(mean, torch_mean, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(deviation, torch_deviation, rtol=1e-14, atol=1e-14)
    forces[2, 7, 1] = float("nan")  # an atom of the second frame
    for deviation in (force_statistics(forces, system, 3)[1], torch_force_statistics(forces, system, 3)[1]):
        assert torch.isnan(deviation[1]) and not torch.isnan(deviation[0]) and not torch.isnan(deviation[2])


def test_unknown_element_is_a_clear_error():
    from ase import Atoms

    model = _model()
    with pytest.raises(ValueError, match=r"not atomic numbers \[26\]"):
        model(AtomsBatch.from_atoms([Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]], cell=[8, 8, 8])]))
