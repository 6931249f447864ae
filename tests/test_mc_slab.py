"""Vacancy-diffusion Monte Carlo on a slab (tasks/mc/slab_*.py) with real Behler–Parrinello models
(random weights: the identities below do not depend on them), against references written out by
hand, full-slab evaluations and ASE-free distance loops."""

import math

import numpy as np
import pytest
import torch
from ase.units import kB

from tasks.mc import slab_chain
from tasks.mc.schedule import EV_PER_A3_PER_GPA, ConstantTemperature, MoveSettings
from tasks.mc.slab_analysis import (displacement_fractions, jump_counts, layer_thicknesses_A, metal_per_layer,
                                    plateau_step, vdw_fraction, vertical_displacements)
from tasks.mc.slab_build import build_slab
from tasks.mc.slab_chain import RelaxSchedule, SlabChain, SlabMoves, advance, new_slab_chain
from tasks.md.relax import FireSettings, fire_relax
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.phase.lattice import Lattice

CRS = Lattice(a_A=3.29, c_A=5.573)
STUDY_A = 3.1625  # the study's in-plane lattice constant: 50.6 Å / 16


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """The study's cutoffs."""
    return BehlerParrinello(ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=6.0,
                                                             angular_cutoff_A=4.5)), seed=1)


@pytest.fixture(scope="module")
def short_model():
    """A shorter cutoff, so that a hop's sub-system (within 3 cutoffs + 2 skins) is part of a small slab."""
    return BehlerParrinello(ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=4.0,
                                                             angular_cutoff_A=3.0), hidden=(16,)), seed=2)


@pytest.fixture(scope="module")
def study_slab():
    return build_slab(CRS, (16, 9), 15, 14 / 30, in_plane_strain=1 - STUDY_A / 3.29, vacuum_A=30.0, seed=0)


def tiny_slab(seed=3):
    """Cr72 S150 on 4 layers of 30 sites."""
    return build_slab(CRS, (5, 3), 4, 0.4, in_plane_strain=0.03, vacuum_A=16.0, seed=seed)


def full_energy(potential, slab, positions):
    """The whole slab through the potential's forward pass (no atomic energies, no sub-systems)."""
    return float(potential(AtomsBatch.from_atoms([slab.atoms(positions)]), forces=False)["energy"])


def middle_hop(slab, chain, layer):
    """(vacancy, target site): the vacancy nearest the middle of ``layer`` and an atom on the layer above."""
    vacant = np.flatnonzero((slab.site_layer == layer) & (chain.site_atom < 0))
    site = vacant[np.argmin(np.linalg.norm(slab.sites[vacant, :2] - np.diag(slab.cell)[:2] / 2, axis=1))]
    target = next(int(t) for t in slab.hops(site, 1) if chain.site_atom[t] >= 0)
    return int(np.flatnonzero(chain.vacancy_site == site)[0]), target


def test_the_study_slab_has_the_papers_composition_layers_strain_and_vacuum(study_slab):
    slab = study_slab
    assert slab.n_atoms == 6912 and slab.n_sites == 4320 and slab.n_layers == 15 and slab.n_anion_layers == 16
    symbols = np.bincount(slab.numbers)
    assert symbols[24] == 2304 and symbols[16] == 4608  # CrS2
    assert np.array_equal(np.bincount(slab.site_layer), [288] * 15)
    assert np.array_equal(np.bincount(slab.anion_layer[slab.anion_layer >= 0]), [288] * 16)
    assert (slab.site_atom >= 0).sum() == 2304 and np.all(slab.numbers[slab.site_atom[slab.site_atom >= 0]] == 24)
    assert np.allclose(np.diag(slab.cell), [50.6, 9 * math.sqrt(3) * STUDY_A, 15 * 5.573 / 2 + 30.0])
    assert abs(slab.thickness_A(slab.positions) - 41.7975) < 1e-9  # 15 layers × c/2
    assert abs(slab.cell[2, 2] - slab.thickness_A(slab.positions) - 30.0) < 1e-9
    # in-plane strain: nearest sites of a layer STUDY_A apart, 3.88% below the lattice's a
    layer = slab.sites[slab.site_layer == 7]
    d = layer[1:] - layer[0]
    d[:, :2] -= np.round(d[:, :2] / np.diag(slab.cell)[:2]) * np.diag(slab.cell)[:2]
    assert abs(np.linalg.norm(d, axis=1).min() - STUDY_A) < 1e-9
    # layer spacing c/2, metal layer k between anion layers k and k + 1; Cr–S bonds of the ideal octahedron
    z = slab.anion_layer_z(slab.positions)
    assert np.allclose(np.diff(z), 5.573 / 2)
    site_z = np.bincount(slab.site_layer, weights=slab.sites[:, 2]) / 288
    assert np.allclose(site_z, z[:-1] + 5.573 / 4)
    bond = slab.positions[slab.cage] - slab.sites[:, None]
    bond[..., :2] -= np.round(bond[..., :2] / np.diag(slab.cell)[:2]) * np.diag(slab.cell)[:2]
    assert np.allclose(np.linalg.norm(bond, axis=2), math.hypot(STUDY_A / math.sqrt(3), 5.573 / 4))


def test_hops_are_the_6_in_plane_and_7_per_adjacent_layer_sites_of_a_distance_loop():
    slab = tiny_slab()
    lengths = np.diag(slab.cell)
    for s in range(slab.n_sites):
        found = []
        for t in range(slab.n_sites):
            for i in (-1, 0, 1):
                for j in (-1, 0, 1):
                    d = slab.sites[t] + [i * lengths[0], j * lengths[1], 0] - slab.sites[s]
                    if 0 < np.linalg.norm(d) < 4.9:
                        found.append((round(d[2] / (5.573 / 2)), t))
        expected = sorted(found)
        got = sorted(zip(slab.hop_offset[slab.hop_segment[s]:slab.hop_segment[s + 1]].tolist(),
                         slab.hop_site[slab.hop_segment[s]:slab.hop_segment[s + 1]].tolist()))
        assert got == expected
        counts = np.bincount([o + 1 for o, _ in expected], minlength=3)
        layer = slab.site_layer[s]
        assert counts.tolist() == [7 if layer > 0 else 0, 6, 7 if layer < 3 else 0]


def test_vdw_fraction_is_one_for_perfect_stackings_and_the_site_share_for_random_ones(study_slab):
    slab = study_slab
    metal = np.sort(slab.site_atom[slab.site_atom >= 0])
    for layers in (np.arange(0, 15, 2), np.arange(1, 15, 2)):  # 8 layers of 288 = 2304 Cr; 7 layers, 288 spare
        site_atom = np.full(slab.n_sites, -1)
        sites = np.flatnonzero(np.isin(slab.site_layer, layers))[:len(metal)]
        site_atom[sites] = metal[:len(sites)]
        assert vdw_fraction(slab, site_atom) == 1.0
        assert np.array_equal(metal_per_layer(slab, site_atom)[layers], [288] * len(layers))
    rng = np.random.default_rng(5)
    random = [vdw_fraction(slab, rng.permutation(slab.site_atom)) for _ in range(50)]
    # a random Cr is on the 8 even layers with probability 8/15 (the odd ones would need 7/15 to win)
    assert abs(np.mean(random) - 8 / 15) < 0.004 and np.std(random) < 0.015


def test_local_energies_equal_the_whole_slab_after_relaxed_hops_and_thickness_moves(short_model):
    """Every step's ΔE (atoms within a cutoff of a moved atom, in a sub-system) equals the change of
    the whole slab's energy from the potential's forward pass to 1e-6 eV, and the chain's atomic
    energies equal a fresh evaluation of every atom."""
    slab = build_slab(CRS, (9, 6), 4, 0.4, in_plane_strain=0.03, vacuum_A=16.0, seed=1)
    chain = new_slab_chain(short_model, slab, seed=7)
    moves = SlabMoves(MoveSettings(cell_move_fraction=0.2, strained_axes=(False, False, True)), cell_only_steps=1,
                      relax=RelaxSchedule(max_steps=4, growth_steps=1.0, fmax_eV_per_A=1e-6))
    schedule = ConstantTemperature(1e6, 40)
    energy = full_energy(short_model, slab, chain.positions)
    for _ in range(14):
        before = chain.energy_eV
        advance(short_model, slab, [chain], schedule, moves, 1)
        after = full_energy(short_model, slab, chain.positions)
        assert abs((chain.energy_eV - before) - (after - energy)) < 1e-6
        energy = after
    assert chain.accepted[slab_chain.HOP] >= 4 and chain.accepted[slab_chain.THICKNESS] >= 1
    everything = np.ones(slab.n_atoms, dtype=bool)
    (fresh,) = slab_chain._atomic_energies(short_model, [slab.atoms(chain.positions)], [everything])
    assert np.abs(fresh - chain.atomic_energy_eV).max() < 1e-9


def test_the_study_slab_steps_with_local_energies_of_its_6912_atoms(study_slab, model):
    slab = study_slab
    chain = new_slab_chain(model, slab, seed=3)
    moves = SlabMoves(cell_only_steps=0, relax=RelaxSchedule(max_steps=2, growth_steps=1.0, fmax_eV_per_A=1e-6))
    energy = full_energy(model, slab, chain.positions)
    assert abs(chain.energy_eV - energy) < 1e-6
    advance(model, slab, [chain], ConstantTemperature(300.0, 100), moves, 4)
    assert chain.accepted[slab_chain.HOP] >= 1
    assert abs(chain.energy_eV - full_energy(model, slab, chain.positions)) < 1e-6


def test_a_hops_relaxation_on_its_sub_system_is_the_whole_slab_relaxed_with_the_rest_fixed(short_model):
    slab = build_slab(CRS, (9, 6), 4, 0.4, in_plane_strain=0.03, vacuum_A=16.0, seed=1)
    chain = new_slab_chain(short_model, slab, seed=0)
    vacancy, target = middle_hop(slab, chain, 1)
    proposal = slab_chain._hop(chain, slab, vacancy, target, 0.5, short_model.cutoff_A, 1.0)
    assert proposal.free.sum() < proposal.centre.sum() < len(proposal.region) < slab.n_atoms
    start = chain.positions.copy()
    start[proposal.region] = proposal.start
    slab_chain._relax(short_model, slab, [(chain, proposal)], RelaxSchedule(12, 1e-9, fmax_eV_per_A=0.0))
    fixed = np.ones(slab.n_atoms, dtype=bool)
    fixed[proposal.region[proposal.free]] = False
    whole = fire_relax(short_model, [slab.atoms(start)], FireSettings(max_steps=12, fmax_eV_per_A=0.0),
                       fixed=[fixed]).systems[0].positions
    local = start.copy()
    local[proposal.region] = proposal.after
    assert np.abs(local - start).max() > 0.01 and np.abs(local - whole).max() < 1e-9


def test_local_relaxation_of_a_hop_against_relaxing_the_whole_slab(model):
    """One hop on a 432-atom slab (Cr144 S288, 5 layers, the study's cutoffs), 10 FIRE steps: 146
    atoms free (within 7 Å of the two sites) against all 432 free.

    Raw difference: 0.026 eV and 0.015 Å at most. All of it is the rest of the slab relaxing on
    the random potential, which keeps it far from a minimum: relaxed without any hop it moves by
    0.015 Å. The hop's own effect: −3.3569 meV with the region free against −3.3565 meV in the whole
    slab (each relaxation minus the same relaxation without the hop), displacement fields equal to
    3e-6 Å, atoms outside the region moved by the hop 1.3e-6 Å. With 20 steps FIRE's coupling of the
    whole slab's relaxation with the hop's raises this to 0.6 meV and 0.01 Å."""
    slab = build_slab(CRS, (6, 4), 5, 0.4, in_plane_strain=0.03, vacuum_A=16.0, seed=2)
    chain = new_slab_chain(model, slab, seed=0)
    vacancy, target = middle_hop(slab, chain, 2)
    proposal = slab_chain._hop(chain, slab, vacancy, target, 0.5, model.cutoff_A, 1.0)
    start = chain.positions.copy()
    start[proposal.region] = proposal.start
    slab_chain._relax(model, slab, [(chain, proposal)], RelaxSchedule(10, 1e-9, fmax_eV_per_A=0.0))
    local = start.copy()
    local[proposal.region] = proposal.after
    free = np.zeros(slab.n_atoms, dtype=bool)
    free[proposal.region[proposal.free]] = True
    settings = FireSettings(max_steps=10, fmax_eV_per_A=0.0)
    full = fire_relax(model, [slab.atoms(start)], settings).systems[0].positions
    background = fire_relax(model, [slab.atoms(chain.positions)], settings).systems[0].positions
    local_background = fire_relax(model, [slab.atoms(chain.positions)], settings, fixed=[~free]).systems[0].positions
    energy = lambda positions: full_energy(model, slab, positions)  # noqa: E731
    assert free.sum() == 146
    moved = np.linalg.norm(local - full, axis=1).max()
    relaxing = np.linalg.norm(background - chain.positions, axis=1).max()
    assert 0.005 < moved < relaxing + 1e-4 and abs(energy(local) - energy(full)) < 0.05
    hop_local = energy(local) - energy(local_background)
    hop_full = energy(full) - energy(background)
    assert abs(hop_local - hop_full) < 1e-5 and abs(hop_full) > 1e-3
    assert np.linalg.norm((local - local_background) - (full - background), axis=1).max() < 1e-4
    assert np.linalg.norm(full - background, axis=1)[~free].max() < 1e-4


def test_resumed_chains_repeat_the_uninterrupted_run_bit_for_bit(model):
    slab = tiny_slab()
    moves = SlabMoves(MoveSettings(cell_move_fraction=0.25, strained_axes=(False, False, True)), cell_only_steps=2,
                      relax=RelaxSchedule(max_steps=3, growth_steps=5.0, fmax_eV_per_A=1e-6))
    schedule = ConstantTemperature(3000.0, 100)
    whole = [new_slab_chain(model, slab, seed) for seed in (11, 12)]
    split = [SlabChain.from_record(c.to_record()) for c in whole]
    one = advance(model, slab, whole, schedule, moves, 12, record_every=3)
    first = advance(model, slab, split, schedule, moves, 5, record_every=3)
    records = [c.to_record() for c in split]
    del split
    resumed = [SlabChain.from_record(r) for r in records]
    second = advance(model, slab, resumed, schedule, moves, 7, record_every=3)
    for a, b in zip(whole, resumed):
        ra, rb = a.to_record(), b.to_record()
        assert ra.keys() == rb.keys()
        for key in ra:
            assert np.array_equal(ra[key], rb[key]), key
    assert sum(c.accepted.sum() for c in whole) >= 6
    for t, (a, b) in enumerate(zip(first.traces, second.traces)):
        assert np.array_equal(np.concatenate([a.step, b.step]), one.traces[t].step)
        assert np.array_equal(np.concatenate([a.energy_eV, b.energy_eV]), one.traces[t].energy_eV)
        assert np.array_equal(np.concatenate([a.jumps, b.jumps]), one.traces[t].jumps)


def test_jump_counts_and_vertical_displacements_of_hand_made_cases():
    jumps = np.array([[0, 5, 2], [1, 3, 1], [4, 2, 0]])  # origin layer × offset −1, 0, +1
    counts = jump_counts(jumps)
    assert counts.horizontal == 10 and counts.vertical.tolist() == [8] and counts.horizontal_per_vertical == 1.25
    wide = np.zeros((4, 5), dtype=int)
    wide[1, [0, 1, 2, 3, 4]] = [1, 2, 3, 4, 5]  # offsets −2 … 2
    assert jump_counts(wide).horizontal == 3 and jump_counts(wide).vertical.tolist() == [6, 6]
    slab = tiny_slab()
    per_layer = [np.flatnonzero(slab.site_layer == k) for k in range(4)]
    start = np.array([per_layer[0][0], per_layer[1][0], per_layer[1][1], per_layer[3][0], per_layer[2][0]])
    now = np.array([per_layer[0][5], per_layer[2][3], per_layer[0][1], per_layer[0][2], per_layer[3][4]])
    assert vertical_displacements(slab, start, now).tolist() == [0, 1, -1, -3, 1]
    assert displacement_fractions(np.array([0, 1, -1, -3, 1])).tolist() == [0.2, 0.6, 0.0, 0.2]


def test_a_chains_jump_counts_and_vacancies_follow_its_snapshots(model):
    """Hops recovered from consecutive snapshots (layers from z), against the chain's counts."""
    slab = tiny_slab()
    chain = new_slab_chain(model, slab, seed=4)
    moves = SlabMoves(MoveSettings(cell_move_fraction=0.0, strained_axes=(False, False, True)), cell_only_steps=0,
                      relax=RelaxSchedule(max_steps=0))
    start = chain.vacancy_site.copy()
    out = advance(model, slab, [chain], ConstantTemperature(1e6, 60), moves, 60, snapshot_every=1)
    layer_of = np.round((slab.sites[:, 2] - slab.sites[:, 2].min()) / (5.573 / 2)).astype(int)
    expected = np.zeros((4, 3), dtype=int)
    previous = slab.site_atom
    for snapshot in out.snapshots[0]:
        left = np.flatnonzero((previous < 0) & (snapshot.site_atom >= 0))  # the vacancy left these
        arrived = np.flatnonzero((previous >= 0) & (snapshot.site_atom < 0))
        assert len(left) == len(arrived) <= 1
        if len(left):
            expected[layer_of[left[0]], layer_of[arrived[0]] - layer_of[left[0]] + 1] += 1
            assert snapshot.site_atom[left[0]] == previous[arrived[0]]  # the atom moved, not another
        previous = snapshot.site_atom
    assert np.array_equal(chain.jumps, expected) and expected.sum() == chain.accepted[slab_chain.HOP] >= 15
    assert expected[:, 1].sum() > 0 and expected[:, [0, 2]].sum() > 0
    assert chain.accepted[slab_chain.HOP] + chain.blocked + (chain.proposed[0] - chain.accepted[0]) == 60
    assert np.array_equal(np.sort(chain.vacancy_site), np.flatnonzero(chain.site_atom < 0))
    assert np.array_equal(chain.vacancy_start_site, start)
    shifted = layer_of[chain.vacancy_site] - layer_of[start]
    assert np.array_equal(vertical_displacements(slab, chain.vacancy_start_site, chain.vacancy_site), shifted)


def test_thickness_moves_scale_about_the_centre_with_the_npt_acceptance(model):
    """The draws replayed in the documented order (kind, ε, acceptance); z scaled about the mean of
    the outer S layers; ln A = −(ΔE + P ΔV)/k_B T + (N + 1) ln(V′/V) from whole-slab energies."""
    slab = tiny_slab()
    chain = new_slab_chain(model, slab, seed=21)
    pressure_GPa, temperature = 2.0, 300.0
    moves = SlabMoves(MoveSettings(cell_move_fraction=1.0, max_strain=0.001, strained_axes=(False, False, True),
                                   pressure_GPa=pressure_GPa), relax=RelaxSchedule(max_steps=0))
    rng = np.random.default_rng(21)
    positions = chain.positions.copy()
    sulfur = slab.numbers == 16
    area = np.diag(slab.cell)[0] * np.diag(slab.cell)[1]
    decisions = []
    for _ in range(12):
        rng.random()
        epsilon = rng.uniform(-0.001, 0.001)
        uniform = rng.random()
        z = positions[sulfur, 2]
        bottom, top = z[z < z.min() + 0.5].mean(), z[z > z.max() - 0.5].mean()
        proposed = positions.copy()
        proposed[:, 2] = (bottom + top) / 2 + (positions[:, 2] - (bottom + top) / 2) * math.exp(epsilon)
        delta = full_energy(model, slab, proposed) - full_energy(model, slab, positions)
        volume = area * (top - bottom)
        log_accept = (-(delta + pressure_GPa * EV_PER_A3_PER_GPA * volume * math.expm1(epsilon)) / (kB * temperature)
                      + (slab.n_atoms + 1) * epsilon)
        decisions.append(math.log(uniform) < log_accept)
        if decisions[-1]:
            positions = proposed
        advance(model, slab, [chain], ConstantTemperature(temperature, 100), moves, 1)
        assert np.abs(chain.positions - positions).max() < 1e-9
    assert 0 < sum(decisions) < len(decisions) and chain.accepted[slab_chain.THICKNESS] == sum(decisions)
    assert abs(slab.thickness_A(chain.positions) - layer_thicknesses_A(slab, chain.positions).sum()) < 1e-12


def test_relaxation_steps_and_the_energy_plateau():
    relax = RelaxSchedule()
    assert [relax.steps(s) for s in (0, 99_999, 209_999, 10 ** 7)] == [1, 51, 71, 80]
    steps = np.arange(0, 60_001, 10_000)
    energies = np.array([0.0, -50.0, -80.0, -95.0, -100.0, -103.0, -104.0])
    # falls per 10,000 steps: 50, 30, 15, 5, 3, 1 eV; per 20,000: 80, 45, 20, 8, 4
    assert plateau_step(steps, energies, n_atoms=1000, window_steps=10_000, tolerance_eV_per_atom=5e-3) == 50_000
    assert plateau_step(steps, energies, n_atoms=1000, window_steps=20_000, tolerance_eV_per_atom=5e-3) == 60_000
    assert plateau_step(steps, energies, n_atoms=1000, tolerance_eV_per_atom=1.5e-3) == 60_000
    assert plateau_step(steps, energies, n_atoms=1000, tolerance_eV_per_atom=1e-3) is None
    assert plateau_step(steps[:4], energies[:4], n_atoms=1000) is None


def test_settings_that_cannot_work_are_refused(model):
    with pytest.raises(ValueError, match="z alone"):
        SlabMoves(MoveSettings())
    with pytest.raises(ValueError, match="vacuum"):
        build_slab(CRS, (3, 2), 3, 0.5, vacuum_A=4.0)
    slab = build_slab(CRS, (3, 2), 3, 0.5, vacuum_A=6.0)
    with pytest.raises(ValueError, match="cutoff"):
        new_slab_chain(model, slab, seed=0)
