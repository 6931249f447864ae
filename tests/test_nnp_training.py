"""A committee trained on tblite labels made by the label recipe; then NVE with it.

Slow: labeling (~1.5 min on 2 cores), two members (~2.5 min each), 10,000 NVE steps (~2.5 min).
"""

from functools import partial

import ase.io
import numpy as np
import pytest
import torch
from ase.build import mx2

from campaign.export import export_frames
from campaign.launch import launch
from campaign.spec import load_spec
from storage import CampaignStore
from tasks.md.integrators import velocity_verlet_step
from tasks.md.run import run
from tasks.md.state import initial_state
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.train import TrainSettings, prepare, train_committee, train_model
from tests.conftest import mos2_3x3, small_crs, write_spec

pytestmark = pytest.mark.slow
ELEMENTS = ("S", "Cr", "Mo")
SETTINGS = TrainSettings(hidden=(24, 24), radial_cutoff_A=5.5, max_epochs=200, patience_epochs=40,
                         energy_weight=100.0, learning_rate=0.01, lr_decay_per_epoch=0.985, dtype="float32")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, client):
    workdir = tmp_path_factory.mktemp("nnp")
    structures = [mos2_3x3(count=100, seed=11),
                  small_crs(count=70, seed=12, supercell=(2, 2, 1), vacancy_species="Cr",
                            vacancy_fractions=[0.0, 0.125, 0.25]),
                  # one supercell per material: tblite is Γ-only, and CrS energies per atom differ by
                  # 1.9 eV between 1x1x2 and 2x2x1 cells (0.15 eV from 2x2x1 to 2x2x2)
                  small_crs(count=70, seed=13, supercell=(2, 2, 1), vacancy_species="Cr",
                            vacancy_fractions=[0.125, 0.0, 0.25])]
    for s in structures:
        s.update(max_strain=0.04, rattle_A=0.06)
    spec = load_spec(write_spec(workdir, name="nnp_data", structures=structures))
    launch(spec, client=client, progress=False)
    export_frames(CampaignStore.open(spec.store), workdir / "frames.xyz")
    # The store holds frames in the order labeling finished, which varies from run to run; sorted by
    # key, every run trains on the same splits.
    frames = sorted(ase.io.read(workdir / "frames.xyz", index=":"), key=lambda atoms: atoms.info["key"])
    torch.set_num_threads(1)
    data = prepare(frames, ELEMENTS, SETTINGS.radial_cutoff_A, torch.float32)
    models, reports = train_committee(data, SETTINGS, seeds=[0, 1])
    return frames, data, models, reports


def test_committee_reaches_a_test_rmse_bound(trained):
    frames, _, _, reports = trained
    assert len(frames) == 240
    for r in reports:
        print(f"member seed {r.seed}: {r.n_train} train / {r.n_validation} test frames, best epoch {r.best_epoch}: "
              f"train {r.train_energy_rmse_meV_per_atom:.1f} meV/atom {r.train_force_rmse_eV_per_A:.3f} eV/Å, "
              f"test {r.validation_energy_rmse_meV_per_atom:.1f} meV/atom {r.validation_force_rmse_eV_per_A:.3f} eV/Å")
        # The Cr(1-x)S study reached a few meV/atom and 0.1-0.2 eV/Å on DFT data with long training;
        # two minutes of training on 190 frames of rattled, strained, vacancy-laden cells is allowed
        # twice that on energies and the study's upper figure on forces.
        assert r.validation_energy_rmse_meV_per_atom < 15.0
        assert r.validation_force_rmse_eV_per_A < 0.2
    assert reports[0].n_validation == 48 and reports[0].n_train == 192  # 80/20 split per member


def test_members_differ_in_split_and_weights(trained):
    _, _, models, _ = trained
    from tasks.nnp.train import split

    assert not np.array_equal(split(240, 0.2, 0)[1], split(240, 0.2, 1)[1])
    w0, w1 = (next(m.atomic.nets[0].parameters()) for m in models)
    assert not torch.equal(w0, w1)


def test_deviation_grows_far_from_the_training_data(trained):
    frames, _, models, _ = trained
    committee = Committee(models)
    near = [f for f in frames if len(f) == 27][:5]
    far = []
    for atoms in near:
        squeezed = atoms.copy()
        squeezed.set_cell(squeezed.cell.array * np.array([[0.8], [0.8], [1.0]]), scale_atoms=True)
        far.append(squeezed)
    dev_near = committee(AtomsBatch.from_atoms(near, dtype=torch.float32))["force_deviation"]
    dev_far = committee(AtomsBatch.from_atoms(far, dtype=torch.float32))["force_deviation"]
    print(f"force deviation near the data {dev_near.mean():.3f}, 20% compressed {dev_far.mean():.3f} eV/Å")
    assert float(dev_far.mean()) > 3 * float(dev_near.mean())


def test_warm_start_continues_from_the_trained_model(trained):
    _, data, models, reports = trained
    short = TrainSettings(**{**SETTINGS.__dict__, "max_epochs": 3})
    warm, report = train_model(data, short, seed=0, warm_start=models[0])
    cold, cold_report = train_model(data, short, seed=0)
    assert report.validation_force_rmse_eV_per_A < cold_report.validation_force_rmse_eV_per_A
    assert report.validation_force_rmse_eV_per_A < 1.5 * reports[0].validation_force_rmse_eV_per_A


def test_nve_energy_drift_of_a_300_atom_mos2_sheet(trained):
    _, _, models, _ = trained
    # float32, as trained: its energy resolution (~0.01 meV/atom here) is far below the drift bound
    model = models[0]
    sheet = mx2("MoS2", a=3.18, size=(10, 10, 1), vacuum=7.5)
    state = initial_state(model, [sheet], temperature_K=300, seed=21)
    step = partial(velocity_verlet_step, model=model, timestep_fs=1.0)
    _, traj = run(state, step, 10_000, observe_every=100)
    total = traj.total_energy_eV[:, 0]
    drift_meV_per_atom = 1e3 * abs(total[-1] - total[0]) / len(sheet)
    spread_meV_per_atom = 1e3 * (total.max() - total.min()) / len(sheet)
    temperature = traj.temperature_K[len(total) // 2:, 0].mean()
    print(f"NVE 10,000 x 1 fs, 300-atom MoS2: drift {drift_meV_per_atom:.3f} meV/atom, spread "
          f"{spread_meV_per_atom:.3f} meV/atom, mean T {temperature:.0f} K")
    assert 100 < temperature < 500, "the sheet stays intact and thermal"
    assert drift_meV_per_atom < 1.0 and spread_meV_per_atom < 2.0
