"""Ion impacts with a real DP-Tab potential (tests/data/mos2_dptab_small.pt, made by
scripts/make_test_potential.py from tblite labels) and real batched MD: conservation laws,
batch invariance, atoms that fly off, a gentle ion that sputters nothing."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.irradiation.cascade import ION, remove_escaped
from tasks.irradiation.impact import ImpactJob, ImpactSettings, advance, launch, run_impacts, run_trajectories
from tasks.irradiation.target import monolayer_target
from tasks.md.state import FS
from tasks.nnp.batch import AtomsBatch
from tasks.potential import load_potential

POTENTIAL = Path(__file__).parent / "data" / "mos2_dptab_small.pt"
# thermostat and drift removal off; the work bound on the step on: this small potential's network
# meets its ZBL blend steeply, and the collisions of its cascades need it
NVE = ImpactSettings(temperature_K=0.0, border_width_A=0.0, remove_drift=False, end_time_ps=0.1,
                     max_energy_step_eV=0.05)


@pytest.fixture(scope="module")
def potential():
    torch.set_num_threads(1)
    return load_potential(POTENTIAL)


@pytest.fixture(scope="module")
def sheet():
    return monolayer_target(repeat=4)


def momentum(cascade) -> np.ndarray:
    """(B, 3) total momentum of each system (amu·Å per ASE time unit)."""
    md = cascade.md
    p = (md.masses[:, None] * md.velocities).detach().numpy()
    return np.stack([p[md.batch.system.numpy() == b].sum(0) for b in range(md.n_systems)])


def test_an_nve_cascade_conserves_energy_and_momentum_with_the_adaptive_step(potential, sheet):
    """Thermostat and drift removal off: E_pot + E_kin (plus what left with removed atoms) stays
    within 50 meV of its start, and while no atom has left, the total momentum is the ion's at
    launch; a 200 eV S ion at normal incidence and a 100 eV Mo ion at 20° off normal."""
    jobs = [ImpactJob("S", 200.0, (0.35, 0.6), 0.0, 0.0, seed=1), ImpactJob("Mo", 100.0, (0.1, 0.2), 20.0, 30.0, 2)]
    cascade = launch(potential, sheet, jobs, NVE)
    start_p, n_start = momentum(cascade), cascade.md.batch.n_atoms.copy()
    drifts, momenta = [], []

    def watch(c):
        drifts.append(c.drift_eV().detach().numpy().copy() if c.n_systems == 2 else np.zeros(2))
        if c.n_systems == 2 and (c.md.batch.n_atoms == n_start).all():
            momenta.append(momentum(c))

    finished, _ = advance(potential, cascade, NVE, on_step=watch)
    drift = np.abs(np.array(drifts)).max(axis=0)
    assert np.all(drift < 0.05), f"largest |ΔE| per impact {drift} eV"
    assert all(f.finite and f.time_fs == pytest.approx(100.0) for f in finished)
    assert len(momenta) > 50
    np.testing.assert_allclose(np.array(momenta), np.broadcast_to(start_p, np.shape(momenta)),
                               atol=1e-8 * np.abs(start_p).max())
    # the step shrank below its 1 fs ceiling while atoms were fast: more steps than 100 fs / 1 fs
    assert all(100 < f.steps < 100 / NVE.min_timestep_fs for f in finished)


@pytest.mark.slow
def test_a_batch_of_eight_follows_the_same_trajectories_as_eight_runs_alone(potential, sheet):
    """Thermalised sheets (each its own noise), a border bath, ions of two kinds, energies, angles."""
    settings = ImpactSettings(temperature_K=300.0, thermalise_ps=0.01, end_time_ps=0.03, border_width_A=3.0)
    rng = np.random.default_rng(5)
    jobs = [ImpactJob(("S", "Mo")[k % 2], float(rng.choice([20.0, 80.0])), tuple(rng.random(2)),
                      float(rng.choice([0.0, 25.0])), float(rng.uniform(0, 360)), seed=int(100 + k), index=k)
            for k in range(8)]
    together = run_trajectories(potential, sheet, jobs, settings)
    for k, job in enumerate(jobs):
        alone = run_trajectories(potential, sheet, [job], settings)
        a, b = together.finished[k], alone.finished[0]
        assert a.steps == b.steps > 30 and a.time_fs == pytest.approx(b.time_fs)
        np.testing.assert_allclose(a.positions_A, b.positions_A, atol=1e-6)
        np.testing.assert_allclose(a.velocities_A_per_fs, b.velocities_A_per_fs, atol=1e-7)
        assert [e.index for e in together.escapes[k]] == [e.index for e in alone.escapes[0]]
    # different seeds made different impacts
    assert len({f.positions_A[-1].round(3).tobytes() for f in together.finished}) == 8


def test_an_atom_that_flies_off_is_recorded_once_and_removed_and_the_others_go_on(potential, sheet):
    jobs = [ImpactJob("S", 30.0, (0.5, 0.5), 0.0, 0.0, seed=k, index=k) for k in range(3)]
    cascade = launch(potential, sheet, jobs, NVE)
    md = cascade.md
    # system 1: a top-layer S atom kicked upwards at 40 eV (the ions are still far above)
    top = np.flatnonzero((md.batch.system.numpy() == 1) & (cascade.origin.numpy() == 0))[0]
    velocities = md.velocities.clone()
    velocities[top] = torch.tensor([0.0, 0.0, np.sqrt(2 * 40.0 / 32.06)], dtype=velocities.dtype)
    cascade = replace(cascade, md=replace(md, velocities=velocities),
                      start_energy_eV=cascade.start_energy_eV + torch.tensor([0.0, 40.0, 0.0], dtype=md.energy.dtype))
    n_before = [int(n) for n in md.batch.n_atoms]
    finished, escapes = advance(potential, cascade, NVE.model_copy(update={"end_time_ps": 0.1}))
    kicked = [e for e in escapes if e.impact == 1 and e.origin == 0]
    assert len(kicked) == 1 and kicked[0].upward and kicked[0].index == int(cascade.index[top])
    # recorded in Å/fs: its kinetic energy is the 40 eV it was given, less what leaving the sheet cost
    kinetic_eV = 0.5 * 32.06 * np.sum((kicked[0].velocity_A_per_fs / FS) ** 2)
    assert 20.0 < kinetic_eV < 40.0 and kicked[0].velocity_A_per_fs[2] > 0
    by_impact = {f.impact: f for f in finished}
    assert len(by_impact[1].numbers) == n_before[1] - 1 - sum(1 for e in escapes if e.impact == 1 and e is not kicked[0])
    for k in (0, 2):
        assert len(by_impact[k].numbers) == n_before[k] - sum(1 for e in escapes if e.impact == k)
    for f in finished:
        assert f.finite and np.isfinite(f.positions_A).all() and np.isfinite(f.velocities_A_per_fs).all()
        assert int(cascade.index[top]) not in f.index.tolist() or f.impact != 1
    # the energy the kicked atom carried away is booked: the NVE core still balances
    assert abs(by_impact[1].max_energy_drift_eV) < 0.05


def test_removing_atoms_keeps_every_system_a_valid_neighbour_list(potential, sheet):
    """After a removal, forces of every system equal those of a fresh evaluation of its atoms alone."""
    jobs = [ImpactJob("S", 50.0, (0.2, 0.7), 0.0, 0.0, seed=k) for k in range(3)]
    cascade = launch(potential, sheet, jobs, NVE)
    md = cascade.md
    positions = md.batch.positions.clone()
    leaving = np.flatnonzero(md.batch.system.numpy() == 0)[[0, 5]]
    positions[leaving, 2] += 40.0  # far above: beyond the escape distance
    velocities = md.velocities.clone()
    velocities[leaving, 2] = 1.0
    cascade = replace(cascade, md=replace(md, batch=md.batch.with_positions(positions), velocities=velocities))
    kept, escapes = remove_escaped(cascade, potential, potential.cutoff_A + 2.0)
    assert len(escapes) == 2 and kept.md.batch.n_atoms.tolist() == [len(sheet.atoms) - 1, *[len(sheet.atoms) + 1] * 2]
    alone = [potential(AtomsBatch.from_atoms([atoms])) for atoms in kept.md.batch.to_atoms()]
    np.testing.assert_allclose(kept.md.forces.numpy(), torch.cat([o["forces"] for o in alone]).numpy(), atol=1e-9)
    np.testing.assert_allclose(kept.md.energy.numpy(), [float(o["energy"][0]) for o in alone], atol=1e-8)


def test_a_5_eV_sulfur_ion_sputters_nothing(potential, sheet):
    settings = ImpactSettings(temperature_K=0.0, end_time_ps=0.3, max_energy_step_eV=0.05)
    rng = np.random.default_rng(11)
    jobs = [ImpactJob("S", 5.0, tuple(rng.random(2)), 0.0, 0.0, seed=k, index=k) for k in range(4)]
    results = run_impacts(potential, sheet, jobs, settings)
    for r in results:
        assert r.sputtered == [] and r.sputtered_by_origin().sum() == 0
        assert r.ion_fate in ("adsorbed", "embedded", "reflected") and "non-finite" not in r.flags


def test_the_ion_starts_beyond_the_cutoff_aimed_at_its_point(potential, sheet):
    jobs = [ImpactJob("Mo", 100.0, (0.25, 0.75), 30.0, 60.0, seed=3)]
    cascade = launch(potential, sheet, jobs, NVE)
    ion = cascade.origin == ION
    start = cascade.md.batch.positions[ion][0].numpy()
    top = sheet.atoms.positions[:, 2].max()
    assert start[2] - top == pytest.approx(potential.cutoff_A + NVE.start_height_A)
    v = cascade.md.velocities[ion][0].numpy()
    assert 0.5 * 95.95 * (v ** 2).sum() == pytest.approx(100.0, rel=1e-3)
    # following the velocity down to the top plane reaches the aim point
    t = (start[2] - top) / -v[2]
    np.testing.assert_allclose((start + t * v)[:2], sheet.aim_point_A(np.array([0.25, 0.75]))[:2], atol=1e-9)
    assert np.degrees(np.arccos(-v[2] / np.linalg.norm(v))) == pytest.approx(30.0)
