"""Training options: DeePMD's prefactor schedule, early stopping only on held-out frames, warm starts
that carry their normalisation. Labels come from ASE's Lennard-Jones calculator: these tests are
about the training loop, not the physics, and need labels in milliseconds."""

import numpy as np
import pytest
import torch
from ase.build import mx2
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from tasks.nnp.train import TrainSettings, prepare, split, train_model

ELEMENTS = ("Mo", "S")
SETTINGS = TrainSettings(hidden=(8,), radial_cutoff_A=4.0, angular_cutoff_A=3.5, max_epochs=8, patience_epochs=8,
                         frames_per_step=4, learning_rate=0.01, lr_decay_per_epoch=0.8, device="cpu")


def lj_frames(count: int, seed: int, strain: float = 0.0):
    frames = []
    for k in range(count):
        atoms = mx2("MoS2", a=3.19 * (1 + strain), size=(2, 1, 1), vacuum=5.0)
        atoms.rattle(0.08, seed=seed * 1000 + k)
        atoms.calc = LennardJones(sigma=2.4, epsilon=0.05, rc=4.0, smooth=True)
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return prepare(lj_frames(20, seed=1), ELEMENTS, 4.0, torch.float64)


def held_out_loss(model, data, idx, w_energy, w_force) -> float:
    """The validation loss written out frame by frame: w_E ⟨(ΔE/N)²⟩ + w_F ⟨ΔF²⟩, averaged over frames."""
    total = 0.0
    for k in idx:
        batch, pairs = data.parts[k]
        out = model(batch, pairs)
        n = batch.n_atoms[0]
        de = (float(out["energy"][0]) - float(data.energy_eV[k])) / n
        df = out["forces"].detach().numpy() - data.forces_eV_per_A[k].numpy()
        total += w_energy * de ** 2 + w_force * float(np.mean(df ** 2))
    return total / len(idx)


def test_deepmd_prefactors_move_from_start_to_limit_with_the_learning_rate():
    settings = SETTINGS.model_copy(update={"energy_weight": 0.02, "energy_weight_limit": 1.0,
                                           "force_weight": 1000.0, "force_weight_limit": 1.0})
    # DeePMD-kit's documented rule: pref = limit_pref + (start_pref − limit_pref) · lr / start_lr
    for fraction in (1.0, 0.5, 0.1, 0.0):
        assert settings.loss_weights(fraction) == pytest.approx(
            (1.0 + (0.02 - 1.0) * fraction, 1.0 + (1000.0 - 1.0) * fraction))
    assert SETTINGS.loss_weights(0.3) == (SETTINGS.energy_weight, SETTINGS.force_weight)  # no limits: constant


def test_a_schedule_that_starts_at_its_limit_trains_exactly_as_constant_weights(data):
    same = SETTINGS.model_copy(update={"energy_weight_limit": SETTINGS.energy_weight,
                                       "force_weight_limit": SETTINGS.force_weight})
    moving = SETTINGS.model_copy(update={"energy_weight": 0.02, "energy_weight_limit": 1.0,
                                         "force_weight": 1000.0, "force_weight_limit": 10.0})
    constant_model, _ = train_model(data, SETTINGS, seed=3)
    same_model, _ = train_model(data, same, seed=3)
    moving_model, _ = train_model(data, moving, seed=3)
    first = {k: v for k, v in constant_model.state_dict().items()}
    assert all(torch.equal(first[k], v) for k, v in same_model.state_dict().items())
    assert not all(torch.equal(first[k], v) for k, v in moving_model.state_dict().items())


def test_early_stopping_keeps_the_state_best_on_the_held_out_frames(data):
    settings = SETTINGS.model_copy(update={"validation_fraction": 0.3, "energy_weight": 0.02,
                                           "energy_weight_limit": 1.0, "force_weight": 100.0,
                                           "force_weight_limit": 5.0, "max_epochs": 10})
    model, report = train_model(data, settings, seed=5)
    _, val_idx = split(len(data.parts), 0.3, 5)
    assert report.n_validation == len(val_idx) == 6
    val_losses = [v for _, _, v in report.history]
    assert report.best_epoch == 1 + int(np.argmin(val_losses))
    # scored with the schedule's final weights, recomputed here frame by frame
    assert held_out_loss(model, data, val_idx, 1.0, 5.0) == pytest.approx(min(val_losses), rel=1e-9)


def test_without_held_out_frames_every_epoch_runs_and_the_last_state_is_kept(data):
    settings = SETTINGS.model_copy(update={"validation_fraction": 0.0, "patience_epochs": 1, "max_epochs": 6})
    model, report = train_model(data, settings, seed=5)
    assert report.n_validation == 0 and report.epochs == 6 and report.best_epoch == 6
    assert np.isnan(report.validation_force_rmse_eV_per_A)
    shorter, _ = train_model(data, settings.model_copy(update={"max_epochs": 5}), seed=5)
    assert not torch.equal(next(model.parameters()), next(shorter.parameters()))


def test_a_warm_start_carries_its_normalisation_and_references(data):
    previous, _ = train_model(data, SETTINGS, seed=1)
    strained = prepare(lj_frames(12, seed=2, strain=0.06), ELEMENTS, 4.0, torch.float64)
    warm, _ = train_model(strained, SETTINGS, seed=1, warm_start=previous)
    cold, _ = train_model(strained, SETTINGS, seed=1)
    for name in ("feature_mean", "feature_std", "reference_energy_eV"):
        kept = getattr(previous.atomic, name)
        assert torch.equal(getattr(warm.atomic, name), kept), name
        assert not torch.equal(getattr(cold.atomic, name), kept), name  # the new data would give others
    assert not torch.equal(next(warm.atomic.nets.parameters()), next(previous.atomic.nets.parameters()))


def test_isolated_atoms_are_never_held_out_and_fix_their_references():
    from ase import Atoms

    frames = lj_frames(10, seed=3)
    for symbol, energy in (("Mo", -4.2), ("S", -1.3)):  # what a labeler gives a lone atom
        atom = Atoms(symbol, positions=[[5.0, 5.0, 5.0]], cell=[10.0, 10.0, 10.0], pbc=False)
        atom.calc = SinglePointCalculator(atom, energy=energy, forces=np.zeros((1, 3)))
        frames.append(atom)
    data = prepare(frames, ELEMENTS, 4.0, torch.float64)
    settings = SETTINGS.model_copy(update={"validation_fraction": 0.5, "max_epochs": 2})
    for seed in range(6):  # at 50% held out, a plain split would hold out one of them most times
        model, report = train_model(data, settings, seed=seed)
        assert report.n_validation == 6 and report.n_train == 6
        for k, energy in ((10, -4.2), (11, -1.3)):
            batch, pairs = data.parts[k]
            assert float(model(batch, pairs)["energy"][0]) == pytest.approx(energy, abs=1e-9)


# -- the MoS2 study's relative force error --------------------------------------------------------
def relative_loss_by_loops(model, data, idx, w_energy, w_force, floor) -> float:
    """The study's Eq. 4 written out: per atom |F_i − F_i^w| / (|F_i| + level), squared and averaged
    over the three components like the absolute term; plus w_E (ΔE/N)², averaged over frames."""
    total = 0.0
    for k in idx:
        batch, pairs = data.parts[k]
        out = model(batch, pairs)
        n = int(batch.n_atoms[0])
        de = (float(out["energy"][0]) - float(data.energy_eV[k])) / n
        predicted, label = out["forces"].detach().numpy(), data.forces_eV_per_A[k].numpy()
        force_term = 0.0
        for i in range(n):
            size = sum(label[i][c] ** 2 for c in range(3)) ** 0.5
            for c in range(3):
                force_term += ((predicted[i][c] - label[i][c]) / (size + floor)) ** 2
        total += w_energy * de ** 2 + w_force * force_term / (3 * n)
    return total / len(idx)


def test_the_relative_force_loss_is_the_studys_formula_and_trains(data):
    settings = SETTINGS.model_copy(update={"validation_fraction": 0.3, "relative_force_floor_eV_per_A": 1.0,
                                           "max_epochs": 4})
    model, report = train_model(data, settings, seed=5)
    _, val_idx = split(len(data.parts), 0.3, 5)
    val_losses = [v for _, _, v in report.history]
    assert all(np.isfinite(val_losses)) and report.epochs == 4
    expected = relative_loss_by_loops(model, data, val_idx, SETTINGS.energy_weight, SETTINGS.force_weight, 1.0)
    assert expected == pytest.approx(min(val_losses), rel=1e-9)
    # the floor matters: the same model scored with the absolute force term gives another number
    absolute = held_out_loss(model, data, val_idx, SETTINGS.energy_weight, SETTINGS.force_weight)
    assert absolute != pytest.approx(expected, rel=1e-3)
    # and the training step uses it: other weights than with the absolute loss
    plain, _ = train_model(data, settings.model_copy(update={"relative_force_floor_eV_per_A": None}), seed=5)
    assert not torch.equal(next(model.parameters()), next(plain.parameters()))


def test_settings_without_the_relative_loss_keep_their_task_keys():
    # the active-learning recipe keys training by the settings without their None fields
    assert "relative_force_floor_eV_per_A" not in TrainSettings().model_dump(mode="json", exclude_none=True)
    with pytest.raises(ValueError, match="greater than 0"):
        TrainSettings(relative_force_floor_eV_per_A=0.0)
