"""The batched MD engine with a real (untrained, smooth) Behler–Parrinello model."""

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from tasks.md.integrators import adaptive_timestep_fs, berendsen_step, langevin_step, velocity_verlet_step
from tasks.md.relax import FireSettings, fire_relax
from tasks.md.run import run
from tasks.md.state import initial_state
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tests.conftest import mos2_and_crs

SETTINGS = ModelSettings(DescriptorSettings(elements=("S", "Cr", "Mo"), radial_cutoff_A=4.5, angular_cutoff_A=3.5),
                         hidden=(8,))


@pytest.fixture(scope="module")
def model():
    return BehlerParrinello(SETTINGS, seed=4)


def _systems():
    return mos2_and_crs(0.03, (2, 2, 1))


def test_nve_conserves_energy_and_batched_equals_one_by_one(model):
    systems = _systems()
    state = initial_state(model, systems, temperature_K=300, seed=1)
    velocities = [a.get_velocities() for a in state.to_atoms()]
    step = partial(velocity_verlet_step, model=model, timestep_fs=1.0)
    final, traj = run(state, step, 200, observe_every=10)
    total = traj.total_energy_eV
    n_atoms = np.array([len(a) for a in systems])
    drift = np.abs(total - total[0]).max(axis=0) / n_atoms
    assert np.all(drift < 2e-4), drift
    for b, atoms in enumerate(systems):
        atoms = atoms.copy()
        atoms.set_velocities(velocities[b])
        alone, _ = run(initial_state(model, [atoms], seed=99), step, 200, observe_every=200)
        start = int(n_atoms[:b].sum())
        torch.testing.assert_close(alone.batch.positions, final.batch.positions[start:start + n_atoms[b]],
                                   rtol=0, atol=1e-9)


def test_langevin_holds_each_system_at_its_own_temperature_and_is_seeded(model):
    systems = _systems()
    state = initial_state(model, systems, temperature_K=[300, 900], seed=2)

    def trajectory(seed):
        step = partial(langevin_step, model=model, timestep_fs=1.0, temperature_K=torch.tensor([300.0, 900.0]),
                       friction_per_fs=0.05, generator=torch.Generator().manual_seed(seed))
        return run(state, step, 600, observe_every=5)

    final, traj = trajectory(7)
    mean_t = traj.temperature_K[len(traj.step) // 2:].mean(axis=0)
    assert abs(mean_t[0] - 300) < 60 and abs(mean_t[1] - 900) < 180, mean_t
    again, _ = trajectory(7)
    other, _ = trajectory(8)
    assert torch.equal(again.batch.positions, final.batch.positions)
    assert not torch.equal(other.batch.positions, final.batch.positions)


def test_berendsen_moves_temperature_towards_target(model):
    state = initial_state(model, _systems(), temperature_K=100, seed=3)
    step = partial(berendsen_step, model=model, timestep_fs=1.0, temperature_K=600.0, tau_fs=20.0)
    _, traj = run(state, step, 300, observe_every=10)
    assert np.all(traj.temperature_K[-5:].mean(axis=0) > 350)


def test_fixed_atoms_never_move(model):
    systems = _systems()
    fixed = [np.arange(len(a)) < 5 for a in systems]
    state = initial_state(model, systems, temperature_K=600, seed=4, fixed=fixed)
    start = state.batch.positions.clone()
    final, _ = run(state, partial(velocity_verlet_step, model=model, timestep_fs=1.0), 50)
    mask = torch.as_tensor(np.concatenate(fixed))
    assert torch.equal(final.batch.positions[mask], start[mask])
    assert not torch.equal(final.batch.positions[~mask], start[~mask])


def test_adaptive_timestep_bounds_the_displacement_of_a_fast_atom(model):
    systems = _systems()
    state = initial_state(model, systems, temperature_K=300, seed=5)
    v = state.velocities.clone()
    v[0] = torch.tensor([0.0, 0.0, -50.0], dtype=v.dtype)  # ~ keV-scale projectile in system 0
    state = replace(state, velocities=v)
    dt = adaptive_timestep_fs(state, max_displacement_A=0.1, max_timestep_fs=1.0)
    assert float(dt[1]) == 1.0 and float(dt[0]) < 1.0
    new = velocity_verlet_step(state, model, timestep_fs=dt)
    moved = (new.batch.positions - state.batch.positions).norm(dim=1)
    assert float(moved[0]) <= 0.1 * 1.01


def test_only_the_system_that_moved_past_half_the_skin_gets_new_pairs(model):
    """One fast atom in system 0: its pairs are rebuilt, system 1 keeps its list; forces on both
    equal an evaluation with fresh pairs of the whole batch."""
    state = initial_state(model, _systems(), temperature_K=10, seed=3, skin_A=0.5)
    v = state.velocities.clone()
    v[0] = torch.tensor([0.0, 0.0, -5.0], dtype=v.dtype)  # 0.49 Å in 1 fs: past skin/2 at once
    state = replace(state, velocities=v)
    new = velocity_verlet_step(state, model, timestep_fs=1.0)
    second = int(new.batch.n_atoms[0])
    reference = new.pairs_positions
    torch.testing.assert_close(reference[:second], new.batch.positions[:second], rtol=0, atol=0)
    assert bool((reference[second:] == state.batch.positions[second:]).all()), "system 1 kept its pair list"
    fresh = model(new.batch, new.batch.pairs(model.cutoff_A))
    torch.testing.assert_close(new.forces, fresh["forces"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new.energy, fresh["energy"], rtol=1e-12, atol=1e-12)
    old_list = state.pairs.system.numpy() == 1
    new_list = new.pairs.system.numpy() == 1
    np.testing.assert_array_equal(new.pairs.j.numpy()[new_list], state.pairs.j.numpy()[old_list])


def test_systems_near_their_rebuild_are_rebuilt_with_a_due_one(model):
    """Three systems: one due (an atom past skin/2), one past CO_REBUILD_FRACTION of that, one at
    rest. The first two get new pairs in the same step, the third keeps its list; forces equal an
    evaluation with fresh pairs of the whole batch."""
    from tasks.md.state import CO_REBUILD_FRACTION, with_positions

    systems = [*_systems(), _systems()[0]]
    state = initial_state(model, systems, temperature_K=0, seed=3, skin_A=0.5)
    starts = np.concatenate([[0], np.cumsum(state.batch.n_atoms)[:-1]])
    positions = state.batch.positions.clone()
    positions[starts[0], 2] += 0.26  # due: past skin/2 = 0.25 Å
    positions[starts[1], 2] += 0.5 * (1 + CO_REBUILD_FRACTION) / 2 * 0.5  # between the fraction and due
    new = with_positions(model, state, positions)
    moved = (new.pairs_positions != state.pairs_positions).any(dim=1)
    assert bool(moved[starts[0]]) and bool(moved[starts[1]]) and not bool(moved[starts[2]:].any())
    fresh = model(new.batch, new.batch.pairs(model.cutoff_A))
    torch.testing.assert_close(new.forces, fresh["forces"], rtol=1e-10, atol=1e-12)


def test_pairs_of_a_few_rebuilt_systems_merge_into_the_full_list():
    """replace_systems on five systems, the first, third and fourth rebuilt after their atoms moved:
    the merged list equals a fresh list of the whole batch, pair for pair."""
    from ase.build import mx2

    from tasks.nnp.batch import AtomsBatch
    from tasks.nnp.graph import replace_systems

    sheets = [mx2("MoS2", size=(2 + k % 2, 2, 1), vacuum=6.0) for k in range(5)]
    before = AtomsBatch.from_atoms(sheets)
    rebuilt = np.array([0, 2, 3])
    for k in rebuilt:
        sheets[k].rattle(0.2, seed=int(k))
    after = AtomsBatch.from_atoms(sheets)
    merged = replace_systems(before.pairs(4.0), after.pairs(4.0, rebuilt), rebuilt, after.n_systems)
    full = after.pairs(4.0)
    for name in ("i", "j", "shift", "system"):
        torch.testing.assert_close(getattr(merged, name), getattr(full, name), rtol=0, atol=0)
    assert not torch.equal(before.pairs(4.0).shift, full.shift) or not torch.equal(before.pairs(4.0).j, full.j)


def test_fire_follows_ase_fire_step_for_step_in_a_batch(model):
    from ase.optimize import FIRE

    from tasks.nnp.calculator import NNPCalculator

    systems = _systems()
    for atoms in systems:
        atoms.rattle(0.1, seed=6)
    steps = 40
    result = fire_relax(model, systems, FireSettings(fmax_eV_per_A=1e-6, max_steps=steps))
    for atoms, relaxed, energy in zip(systems, result.systems, result.energy_eV):
        reference = atoms.copy()
        reference.calc = NNPCalculator(model)
        start_energy = reference.get_potential_energy()
        FIRE(reference, logfile=None).run(fmax=1e-6, steps=steps)
        np.testing.assert_allclose(relaxed.positions, reference.positions, atol=1e-8)
        assert energy < start_energy
