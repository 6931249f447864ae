"""DP-Tab as the MoS2 study defines it (Eq. 1–2), trained: a committee of two blended members
trained for a few epochs on tblite labels with a tblite dimer table, then, for every element
pair, its dimer curve: the table below R_c, the network beyond R_a, the switch applied once in
between, and energy and force continuous through both edges."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import mx2

from tasks.active.explore import CommitteeFiles
from tasks.active.initial import dimers, isolated_atoms
from tasks.active.training import MemberJob, TrainingFrame, train_batch, train_member
from tasks.labeling import TbliteLabeler, label_structure
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.repulsion import Blended, PairRepulsion, PairTable, RepulsionSettings, switch, table_from_dimer_scans
from tasks.nnp.train import TrainSettings
from tasks.potential import load_potential
from tasks.structures import Structure

ELEMENTS = ("Mo", "S")
R_C, R_A = 1.0, 1.2  # the study's defaults
SETTINGS = TrainSettings(hidden=(8,), radial_cutoff_A=4.0, angular_cutoff_A=3.5, max_epochs=4, patience_epochs=4,
                         frames_per_step=4, learning_rate=3e-3, lr_decay_per_epoch=0.99, energy_weight=1.0,
                         device="cpu", repulsion=RepulsionSettings(kind="dimer_table"))


def labeled_frames(labeler) -> list[TrainingFrame]:
    """Dimers beyond R_a, isolated atoms and rattled, strained MoS2 sheets (3 atoms each)."""
    systems = dimers(ELEMENTS, [1.8, 2.2, 2.6]) + isolated_atoms(ELEMENTS)
    for k in range(6):
        sheet = mx2("MoS2", size=(1, 1, 1), vacuum=5.0)
        sheet.set_cell(sheet.cell.array * (1 + 0.02 * (k - 3)), scale_atoms=True)
        sheet.rattle(0.1, seed=k)
        systems.append(sheet)
    frames = []
    for atoms in systems:
        structure = Structure.from_atoms(atoms)
        label = label_structure(structure, labeler)
        frames.append(TrainingFrame(structure, label.energy_eV, label.forces_eV_per_A))
    return frames


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    labeler = TbliteLabeler(min_distance_A=0.0)
    table = table_from_dimer_scans(ELEMENTS, np.round(np.arange(0.7, 2.01, 0.1), 3), labeler)
    frames = labeled_frames(labeler)
    outcomes = train_batch(["m0", "m1"], [MemberJob(0, frames), MemberJob(1, frames)], ELEMENTS, SETTINGS, table)
    assert all(not o.error for o in outcomes), [o.error for o in outcomes]
    files = CommitteeFiles(tuple(o.value["model"] for o in outcomes), dtype="float64", device="cpu")
    return table, frames, files, files.load()


def dimer(a: str, b: str, r: float) -> Atoms:
    return Atoms([a, b], positions=[[6.0, 6.0, 6.0], [6.0, 6.0, 6.0 + r]], cell=[14.0] * 3, pbc=False)


def curve(potential, a: str, b: str, distances) -> tuple[np.ndarray, np.ndarray]:
    """Binding energy E(r) − E(a) − E(b) and the force on atom b along the axis."""
    singles = [Atoms(e, positions=[[6.0, 6.0, 6.0]], cell=[14.0] * 3, pbc=False) for e in (a, b)]
    isolated = potential(AtomsBatch.from_atoms(singles))["energy"].sum()
    out = potential(AtomsBatch.from_atoms([dimer(a, b, r) for r in distances]))
    return (out["energy"] - isolated).numpy(), out["forces"][1::2, 2].numpy()


def table_values(table: PairTable, a: str, b: str, distances) -> np.ndarray:
    repulsion = PairRepulsion(table.elements, table)
    ia, ib = table.elements.index(a), table.elements.index(b)
    r = torch.as_tensor(np.asarray(distances, dtype=np.float64))
    return repulsion(r, torch.full_like(r, ia, dtype=torch.long), torch.full_like(r, ib, dtype=torch.long)).numpy()


PAIRS = [("S", "S"), ("Mo", "S"), ("Mo", "Mo")]


def test_members_are_blends_that_carry_their_table(trained):
    table, _, files, committee = trained
    assert committee.evaluated_together  # blended members share one descriptor pass
    for data, member in zip(files.models, committee.members):
        assert isinstance(member, Blended) and (member.r_inner_A, member.r_outer_A) == (R_C, R_A)
        loaded = load_potential(data)
        np.testing.assert_array_equal(loaded.repulsion.table.energy_eV, table.energy_eV)
        assert loaded.identity() == member.identity()
    # the table as the campaign stores it: JSON and back, exactly
    again = PairTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.elements == table.elements
    np.testing.assert_array_equal(again.r_A, table.r_A)
    np.testing.assert_array_equal(again.energy_eV, table.energy_eV)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_dimer_curve_is_the_table_inside_the_network_outside_and_switched_once(trained, pair):
    table, _, _, committee = trained
    networks = Committee([m.inner for m in committee.members])
    inside = [0.7, 0.8, 0.85, 0.95]
    np.testing.assert_allclose(curve(committee, *pair, inside)[0], table_values(table, *pair, inside),
                               rtol=1e-12, atol=1e-9)
    outside = [1.25, 1.6, 2.4, 3.5]
    np.testing.assert_allclose(curve(committee, *pair, outside)[0], curve(networks, *pair, outside)[0],
                               rtol=0, atol=1e-10)
    # between: E = w V + (1 − w) E_NN with w the switch of r, once (w(1.1 Å) = ½)
    between = np.array([1.05, 1.1, 1.15])
    w = switch(torch.as_tensor(between), R_C, R_A).numpy()
    expected = w * table_values(table, *pair, between) + (1 - w) * curve(networks, *pair, between)[0]
    np.testing.assert_allclose(curve(committee, *pair, between)[0], expected, rtol=1e-12, atol=1e-9)
    assert abs(w[1] - 0.5) < 1e-12


@pytest.mark.parametrize("edge", [R_C, R_A])
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_dimer_energy_and_force_are_continuous_through_the_edges(trained, pair, edge):
    _, _, _, committee = trained
    # no jump: E and F at the edge, extrapolated linearly from each side, agree (to h² · curvature)
    h = 1e-7
    energies, forces = curve(committee, *pair, edge + h * np.array([-2, -1, 1, 2]))
    for values, tolerance in ((energies, 1e-8), (forces, 1e-6 * max(1.0, np.abs(forces).max()))):
        from_below, from_above = 2 * values[1] - values[0], 2 * values[2] - values[3]
        assert abs(from_below - from_above) < tolerance, (from_below, from_above)
    # and the force is −dE/dr throughout, to the finite difference's own error (h²/6 · d³E/dr³,
    # large here: the switch joins a table of hundreds of eV to the network within 0.2 Å)
    h = 1e-5
    energies, forces = curve(committee, *pair, edge + h * np.arange(-20, 21))
    assert np.abs(forces).max() > 1e-2, "the test needs a non-zero force"
    np.testing.assert_allclose(-np.gradient(energies, h)[1:-1], forces[1:-1], rtol=1e-4, atol=1e-4)


def test_training_fits_each_member_inside_the_blend(trained):
    """Each member trained with its own seed (and split), and their networks differ; the blended
    committee evaluates every training frame."""
    _, frames, files, committee = trained
    first, second = (m.inner for m in committee.members)
    assert first.seed == 0 and second.seed == 1
    assert not torch.equal(first.atomic.nets[0][0].weight, second.atomic.nets[0][0].weight)
    batch = AtomsBatch.from_atoms([f.structure.to_atoms() for f in frames])
    labels = torch.tensor([f.energy_eV for f in frames], dtype=torch.float64)
    per_atom = (committee(batch)["energy"] - labels) / torch.as_tensor(batch.n_atoms)
    assert bool(torch.isfinite(per_atom).all())


def test_a_warm_start_from_a_blend_continues_the_blend(trained):
    table, frames, files, _ = trained
    plain = SETTINGS.model_copy(update={"repulsion": None, "max_epochs": 1})
    out = train_member(MemberJob(5, frames, warm_start=files.models[0]), ELEMENTS, plain)
    model = load_potential(out["model"])
    assert isinstance(model, Blended)
    np.testing.assert_array_equal(model.repulsion.table.energy_eV, table.energy_eV)


def test_repulsion_settings_are_validated():
    with pytest.raises(ValueError, match="r_inner_A < r_outer_A"):
        RepulsionSettings(kind="zbl", r_inner_A=1.2, r_outer_A=1.0)
    with pytest.raises(ValueError):
        RepulsionSettings(kind="lj")
    with pytest.raises(ValueError, match="needs the PairTable"):
        train_member(MemberJob(0, []), ELEMENTS, SETTINGS)
