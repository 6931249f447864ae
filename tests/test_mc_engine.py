"""The Monte Carlo engine (tasks.mc) against references that share no code with it: every state of
a lattice gas enumerated (Boltzmann weights, χ²), lattice-length densities integrated with scipy,
the potentials' own forward passes on whole structures, every decoration of a small Cr(1−x)S cell
evaluated, and icet's mchammer on the same cluster expansion.

Chains are sampled every ``stride`` steps, a stride past the correlation of successive states, so
that χ² may treat the samples as independent; each χ² check also shows that the same statistic
rejects a slightly wrong distribution (another temperature, another power of the volume)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell, mx2
from ase.neighborlist import neighbor_list
from ase.units import GPa, kB
from icet import ClusterExpansion, ClusterSpace
from mchammer.calculators import ClusterExpansionCalculator
from mchammer.ensembles import CanonicalEnsemble
from scipy import integrate, stats

from tasks.mc.chains import ChainState, advance, new_chain
from tasks.mc.energy import EnergyRequest, PotentialEnergy
from tasks.mc.schedule import ConstantTemperature, GeometricCycles, MoveSettings
from tasks.mc.sites import SiteLattice, site_pairs
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.model import BehlerParrinello, DescriptorSettings, ModelSettings
from tasks.phase.lattice import Lattice
from tasks.potential import load_potential

MOS2_POTENTIAL = Path(__file__).parent / "data" / "mos2_dptab_small.pt"
Z_CR, Z_S, Z_MO = 24, 16, 42
SKIN_A = 1.0  # passed to every advance, so the tests' bounds on the sites a move touches use it too
P_THRESHOLD = 1e-3  # a right distribution passes above it
P_REJECTED = 1e-6  # a wrong one falls below it


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- references -----------------------------------------------------------------------------------
class LatticeGas:
    """E = J Σ n_i n_j over site pairs closer than ``bond_A`` (minimum image) + Σ h_i n_i, written
    out with numpy: the total energy for every request, whatever its centres."""

    def __init__(self, lattice: SiteLattice, cell: np.ndarray, bond_A: float, coupling_eV: float,
                 fields_eV: np.ndarray):
        self.cutoff_A = bond_A
        delta = lattice.fractional[:, None] - lattice.fractional[None]
        periodic = np.asarray(lattice.pbc)
        delta[..., periodic] -= np.round(delta[..., periodic])
        distance_A = np.linalg.norm(delta @ cell, axis=-1)
        self.bonds = ((distance_A < bond_A) & ~np.eye(lattice.n_sites, dtype=bool)).astype(float)
        self.coupling_eV, self.fields_eV = coupling_eV, np.asarray(fields_eV, dtype=float)

    def energy_eV(self, occupied: np.ndarray) -> np.ndarray:
        n = np.asarray(occupied, dtype=float)
        return 0.5 * self.coupling_eV * np.einsum("...i,ij,...j->...", n, self.bonds, n) + n @ self.fields_eV

    def energies(self, lattice: SiteLattice, requests) -> np.ndarray:
        return self.energy_eV(np.array([r.occupation != 0 for r in requests]))


class SpringCell:
    """E = K Σ_k (|a_k| − L0)² over the lattice vectors, whatever the occupation."""

    cutoff_A = 0.5

    def __init__(self, stiffness_eV_per_A2: float, rest_length_A: float):
        self.stiffness_eV_per_A2, self.rest_length_A = stiffness_eV_per_A2, rest_length_A

    def energies(self, lattice: SiteLattice, requests) -> np.ndarray:
        lengths_A = np.array([np.linalg.norm(r.cell, axis=1) for r in requests])
        return self.stiffness_eV_per_A2 * ((lengths_A - self.rest_length_A) ** 2).sum(axis=1)


class ClusterExpansionEnergy:
    """icet's prediction (per site, vacancies as 'X') times the number of sites: the total."""

    def __init__(self, ce: ClusterExpansion, cutoff_A: float):
        self.ce, self.cutoff_A = ce, cutoff_A

    def energies(self, lattice: SiteLattice, requests) -> np.ndarray:
        return np.array([self.ce.predict(Atoms(numbers=r.occupation, scaled_positions=lattice.fractional,
                                               cell=r.cell, pbc=lattice.pbc)) * lattice.n_sites
                         for r in requests])


class SiteBonds:
    """Site energies ½ J per occupied neighbour closer than ``cutoff_A``, the neighbours read from the
    request's site pairs as a potential reads them: a pair missing from the list shows as J/2."""

    def __init__(self, coupling_eV: float, cutoff_A: float):
        self.coupling_eV, self.cutoff_A = coupling_eV, cutoff_A

    def energies(self, lattice: SiteLattice, requests) -> np.ndarray:
        out = []
        for r in requests:
            occupied = r.occupation != 0
            centre = occupied if r.centres is None else np.isin(np.arange(lattice.n_sites), r.centres) & occupied
            keep = centre[r.pairs.i] & occupied[r.pairs.j]
            vectors = (lattice.fractional[r.pairs.j[keep]] + r.pairs.shift[keep]
                       - lattice.fractional[r.pairs.i[keep]]) @ r.cell
            out.append(0.5 * self.coupling_eV * np.count_nonzero(np.linalg.norm(vectors, axis=1) < self.cutoff_A))
        return np.array(out)


def full_energies_eV(potential, lattice: SiteLattice, occupations, cells) -> np.ndarray:
    """The potential's own forward pass on each whole structure, vacancies dropped, in one batch."""
    structures = [Atoms(numbers=z[z != 0], scaled_positions=lattice.fractional[z != 0], cell=cell, pbc=lattice.pbc)
                  for z, cell in zip(occupations, cells)]
    return potential(AtomsBatch.from_atoms(structures), forces=False)["energy"].detach().numpy().astype(np.float64)


def chi_square_p(counts: np.ndarray, probabilities: np.ndarray, smallest_expected: float = 5.0) -> float:
    """χ² p-value of ``counts`` against ``probabilities``; bins expected to hold fewer than
    ``smallest_expected`` counts are pooled into one."""
    expected = probabilities / probabilities.sum() * counts.sum()
    few = expected < smallest_expected
    observed, expected_kept = counts[~few], expected[~few]
    if few.any():
        observed, expected_kept = np.append(observed, counts[few].sum()), np.append(expected_kept, expected[few].sum())
    return float(stats.chisquare(observed, expected_kept).pvalue)


def samples(model, lattice: SiteLattice, chains: list[ChainState], schedule, moves: MoveSettings, burn_steps: int,
            n_samples: int, stride: int, read) -> np.ndarray:
    """(n_samples, n_chains, ...) of ``read(chain)`` every ``stride`` steps after ``burn_steps``."""
    advance(model, lattice, chains, schedule, moves, burn_steps, skin_A=SKIN_A)
    out = []
    for _ in range(n_samples):
        advance(model, lattice, chains, schedule, moves, stride, skin_A=SKIN_A)
        out.append([read(c) for c in chains])
    return np.array(out)


# -- lattices -------------------------------------------------------------------------------------
def rectangular_sheet(nx: int, ny: int, spacing_A: float) -> tuple[SiteLattice, np.ndarray]:
    fractional = np.array([[(i + 0.5) / nx, (j + 0.5) / ny, 0.5] for i in range(nx) for j in range(ny)])
    cell = np.diag([nx * spacing_A, ny * spacing_A, 10.0])
    return SiteLattice(fractional, (True, True, False), np.ones(len(fractional), dtype=bool)), cell


def nias_sites(repeat: tuple[int, int, int]) -> Atoms:
    return make_supercell(Lattice().primitive(), np.diag(repeat))


def crs_chain_sites(repeat: tuple[int, int, int], n_vacancies: int, seed: int):
    """Cr(1−x)S: Cr sites mobile, ``n_vacancies`` of them vacant at random."""
    sites = nias_sites(repeat)
    occupation = sites.numbers.copy()
    chromium = np.flatnonzero(occupation == Z_CR)
    occupation[np.random.default_rng(seed).choice(chromium, n_vacancies, replace=False)] = 0
    lattice = SiteLattice(sites.get_scaled_positions(), (True, True, True), sites.numbers == Z_CR)
    return lattice, np.array(sites.cell), occupation


def mos2_chain_sites(repeat: int, n_vacancies: int, seed: int):
    """A MoS2 sheet: S sites mobile, ``n_vacancies`` of them vacant at random."""
    sites = mx2("MoS2", size=(repeat, repeat, 1), vacuum=6.0)
    sites.pbc = (True, True, False)
    occupation = sites.numbers.copy()
    sulfur = np.flatnonzero(occupation == Z_S)
    occupation[np.random.default_rng(seed).choice(sulfur, n_vacancies, replace=False)] = 0
    lattice = SiteLattice(sites.get_scaled_positions(), (True, True, False), sites.numbers == Z_S)
    return lattice, np.array(sites.cell), occupation


def sites_within(lattice: SiteLattice, cell: np.ndarray, cutoff_A: float) -> list[np.ndarray]:
    """Per site, the other sites closer than ``cutoff_A`` (ASE's neighbour list)."""
    atoms = Atoms(numbers=np.ones(lattice.n_sites, dtype=int), scaled_positions=lattice.fractional, cell=cell,
                  pbc=lattice.pbc)
    i, j = neighbor_list("ij", atoms, cutoff_A)
    return [np.unique(j[i == s]) for s in range(lattice.n_sites)]


def bp(seed: int) -> BehlerParrinello:
    return BehlerParrinello(ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=6.0,
                                                             angular_cutoff_A=4.5)), seed=seed)


@pytest.fixture(scope="module")
def committee() -> Committee:
    return Committee([bp(1), bp(2), bp(3)])


@pytest.fixture(scope="module")
def blended():
    return load_potential(MOS2_POTENTIAL)


# -- 1. detailed balance of swaps -----------------------------------------------------------------
def test_swaps_sample_the_boltzmann_distribution_of_every_state():
    """4×2 periodic sheet, 4 of 8 sites occupied (70 states): nearest-neighbour repulsion and random
    site fields, so no two states are alike by symmetry; swaps of 1–2 sites, 20 chains."""
    lattice, cell = rectangular_sheet(4, 2, spacing_A=2.5)
    model = LatticeGas(lattice, cell, bond_A=2.6, coupling_eV=0.04,
                       fields_eV=np.random.default_rng(7).normal(0.0, 0.03, lattice.n_sites))
    n_sites = lattice.n_sites
    states = np.array([np.isin(np.arange(n_sites), c) for c in itertools.combinations(range(n_sites), n_sites // 2)])
    code = 2 ** np.arange(n_sites)
    index = {int(c): k for k, c in enumerate(states @ code)}
    energy_eV = model.energy_eV(states)

    def boltzmann(temperature_K: float) -> np.ndarray:
        w = np.exp(-(energy_eV - energy_eV.min()) / (kB * temperature_K))
        return w / w.sum()

    temperature_K = 500.0
    p = boltzmann(temperature_K)
    assert np.exp(-(p * np.log(p)).sum()) > 30  # many states matter

    start = np.where(states[0], Z_CR, 0)
    chains = [new_chain(model, lattice, start, cell, seed=100 + k) for k in range(20)]
    moves = MoveSettings(cell_move_fraction=0.0, swap_groups=((0, 2),))
    visited = samples(model, lattice, chains, ConstantTemperature(temperature_K, 10**6), moves, burn_steps=20,
                      n_samples=200, stride=10, read=lambda c: index[int((c.occupation != 0) @ code)])
    counts = np.bincount(visited.ravel(), minlength=len(states)).astype(float)

    assert all(0.1 < c.accepted[0] / c.proposed[0] < 0.9 for c in chains)
    assert chi_square_p(counts, p) > P_THRESHOLD
    assert chi_square_p(counts, boltzmann(0.8 * temperature_K)) < P_REJECTED
    assert chi_square_p(counts, boltzmann(1.25 * temperature_K)) < P_REJECTED


# -- 2. detailed balance of cell moves ------------------------------------------------------------
@pytest.mark.parametrize("pressure_GPa, strained_axes", [(0.0, (True, True, True)), (1.0, (True, False, False))])
def test_cell_moves_sample_the_npt_length_density(pressure_GPa, strained_axes):
    """3 atoms and a vacancy (not counted), E = K Σ (L_k − L0)²: the NPT density over lengths (scaled coordinates) is
    ∝ V^N exp(−β(E + PV)) with V = L_a L_b L_c, so a strained length L has the marginal
    ∝ L^N exp(−β(K (L − L0)² + P A L)), A the area the other two lengths span. A chain without the
    proposal's ln(V′/V) would sample L^(N−1): the same χ² rejects that."""
    temperature_K, rest_length_A, width_A, n_atoms = 300.0, 2.0, 0.4, 3
    model = SpringCell(kB * temperature_K / (2 * width_A**2), rest_length_A)
    lattice = SiteLattice(np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0.25]]), (True, True, True),
                          np.zeros(4, dtype=bool))
    occupation = np.array([Z_CR, Z_CR, Z_CR, 0])
    strained = np.asarray(strained_axes)
    cell = np.diag(np.where(strained, rest_length_A, 4.0))
    area_A2 = 16.0  # the two unstrained lengths (one-axis case; at P = 0 it does not enter)
    beta = 1.0 / (kB * temperature_K)
    pressure = pressure_GPa * GPa

    def density(length_A: float, power: int, pressure_eV_per_A3: float) -> float:
        return length_A**power * np.exp(-beta * (model.stiffness_eV_per_A2 * (length_A - rest_length_A) ** 2
                                                 + pressure_eV_per_A3 * area_A2 * length_A))

    edges_A = np.concatenate([[0.0], np.linspace(rest_length_A - 2.5 * width_A, rest_length_A + 3 * width_A, 19),
                              [np.inf]])

    def bin_probabilities(power: int, pressure_eV_per_A3: float) -> np.ndarray:
        return np.array([integrate.quad(density, a, b, args=(power, pressure_eV_per_A3))[0]
                         for a, b in zip(edges_A[:-1], edges_A[1:])])

    chains = [new_chain(model, lattice, occupation, cell, seed=200 + k) for k in range(16)]
    moves = MoveSettings(cell_move_fraction=1.0, max_strain=0.35, strained_axes=strained_axes,
                         pressure_GPa=pressure_GPa)
    lengths_A = samples(model, lattice, chains, ConstantTemperature(temperature_K, 10**6), moves, burn_steps=30,
                        n_samples=120, stride=10, read=lambda c: np.linalg.norm(c.cell, axis=1)[strained])
    counts = np.histogram(lengths_A.ravel(), edges_A)[0].astype(float)

    assert all(c.accepted[1] > 0.2 * c.proposed[1] for c in chains)
    assert chi_square_p(counts, bin_probabilities(n_atoms, pressure)) > P_THRESHOLD
    assert chi_square_p(counts, bin_probabilities(n_atoms - 1, pressure)) < P_REJECTED
    assert chi_square_p(counts, bin_probabilities(n_atoms + 1, pressure)) < P_REJECTED
    if pressure_GPa:
        assert chi_square_p(counts, bin_probabilities(n_atoms, 0.0)) < P_REJECTED


# -- 3. local energy changes ----------------------------------------------------------------------
def random_swaps(lattice: SiteLattice, occupation: np.ndarray, group_sizes, rng: np.random.Generator):
    """(moved sites, new occupation) per group size: occupied mobile sites trade with vacant ones."""
    mobile = np.flatnonzero(lattice.mobile)
    out = []
    for size in group_sizes:
        leaving = rng.choice(mobile[occupation[mobile] != 0], size, replace=False)
        arriving = rng.choice(mobile[occupation[mobile] == 0], size, replace=False)
        new = occupation.copy()
        new[arriving], new[leaving] = occupation[leaving], 0
        out.append((np.concatenate([leaving, arriving]), new))
    return out


@pytest.mark.parametrize("system", ["crs_committee", "mos2_blended"])
def test_local_energy_changes_equal_full_recomputation(system, committee, blended):
    """Swaps of 1–6 sites: the summed energies of the sites within the cutoff of the moved ones
    (ASE's neighbour list), before and after, all requests in one call, against the forward pass
    on both whole structures."""
    if system == "crs_committee":
        potential = committee
        lattice, cell, occupation = crs_chain_sites((6, 6, 4), n_vacancies=72, seed=3)
    else:
        potential = blended
        lattice, cell, occupation = mos2_chain_sites(10, n_vacancies=30, seed=4)
    model = PotentialEnergy(potential)
    near = sites_within(lattice, cell, potential.cutoff_A)
    pairs = site_pairs(lattice, cell, model.cutoff_A, SKIN_A)
    swaps = random_swaps(lattice, occupation, [1, 2, 3, 4, 5, 6], np.random.default_rng(5))
    requests = []
    for moved, new in swaps:
        touched = np.unique(np.concatenate([moved, *[near[s] for s in moved]]))
        assert np.count_nonzero(occupation[touched]) < np.count_nonzero(occupation)  # some atoms left out
        requests += [EnergyRequest(occupation, cell, pairs, touched), EnergyRequest(new, cell, pairs, touched)]
    local = model.energies(lattice, requests)
    local_delta_eV = local[1::2] - local[::2]
    full_eV = full_energies_eV(potential, lattice, [occupation] + [new for _, new in swaps], [cell] * (1 + len(swaps)))
    full_delta_eV = full_eV[1:] - full_eV[0]

    assert np.abs(full_delta_eV).max() > 1e-3
    np.testing.assert_allclose(local_delta_eV, full_delta_eV, rtol=0, atol=1e-6)


class TotalsOnly:
    """A potential's summed energies without its site energies: the engine then evaluates a swap as
    two requests (the touched sites before and after) instead of against kept site energies."""

    def __init__(self, model: PotentialEnergy):
        self.model, self.cutoff_A = model, model.cutoff_A

    def energies(self, lattice: SiteLattice, requests) -> np.ndarray:
        return self.model.energies(lattice, requests)


@pytest.mark.parametrize("system", ["crs_committee", "mos2_blended"])
@pytest.mark.parametrize("site_energies_kept", [True, False], ids=["kept_site_energies", "two_sums"])
def test_chain_energy_follows_the_structure_through_local_swaps(system, site_energies_kept, committee, blended):
    """Single swaps in cells so large that every one is evaluated near the moved sites (without kept
    site energies too: the sites within the cutoff plus skin of two sites are fewer than half the
    atoms), with cell moves for Cr(1−x)S: after the run, each chain's energy is the forward pass on
    its structure."""
    if system == "crs_committee":
        potential, cell_move_fraction = committee, 0.2
        lattice, cell, occupation = crs_chain_sites((6, 6, 4), n_vacancies=72, seed=3)
    else:
        potential, cell_move_fraction = blended, 0.0
        lattice, cell, occupation = mos2_chain_sites(10, n_vacancies=30, seed=4)
    model = PotentialEnergy(potential) if site_energies_kept else TotalsOnly(PotentialEnergy(potential))
    # the skin leaves room for the strains of the cell moves (checked below)
    reach = sites_within(lattice, cell, potential.cutoff_A + SKIN_A)
    assert 2 * 2 * (1 + max(len(r) for r in reach)) <= np.count_nonzero(occupation)
    chains = [new_chain(model, lattice, occupation, cell, seed=300 + k) for k in range(2)]
    moves = MoveSettings(cell_move_fraction=cell_move_fraction, max_strain=0.01, swap_groups=((0, 1),))
    advance(model, lattice, chains, ConstantTemperature(3000.0, 40), moves, 40, skin_A=SKIN_A)

    full_eV = full_energies_eV(potential, lattice, [c.occupation for c in chains], [c.cell for c in chains])
    for chain, expected_eV in zip(chains, full_eV):
        assert chain.accepted[0] >= 5
        assert chain.accepted[1] >= (1 if cell_move_fraction else 0)
        np.testing.assert_allclose(np.linalg.norm(chain.cell, axis=1), np.linalg.norm(cell, axis=1), rtol=0.05)
        assert abs(chain.energy_eV - expected_eV) < 1e-6


def test_swaps_after_rejected_cell_moves_see_every_pair():
    """A thin skin (0.05 Å) and strains up to 20 %: cell proposals often need site pairs found afresh,
    and a rejected one must leave the chain with pairs of its own cell. Simple cubic lattice gas with
    bonds to 1.05 Å, 8³ sites half occupied: each chain's energy against the bonds ASE's neighbour
    list counts in its final structure."""
    n, coupling_eV, bond_A = 8, -0.05, 1.05
    fractional = np.array(list(itertools.product(range(n), repeat=3)), dtype=float) / n
    lattice = SiteLattice(fractional, (True, True, True), np.ones(len(fractional), dtype=bool))
    occupation = np.zeros(len(fractional), dtype=np.int64)
    occupation[np.random.default_rng(10).choice(len(fractional), len(fractional) // 2, replace=False)] = Z_CR
    cell = np.eye(3) * n
    model = SiteBonds(coupling_eV, bond_A)
    chains = [new_chain(model, lattice, occupation, cell, seed=700 + k) for k in range(4)]
    moves = MoveSettings(cell_move_fraction=0.3, max_strain=0.2, swap_groups=((0, 1),))
    advance(model, lattice, chains, ConstantTemperature(300.0, 300), moves, 300, skin_A=0.05)

    for chain in chains:
        occupied = chain.occupation != 0
        structure = Atoms(numbers=chain.occupation[occupied], scaled_positions=fractional[occupied], cell=chain.cell,
                          pbc=True)
        assert chain.accepted[0] > 50 and chain.proposed[1] > chain.accepted[1]
        assert chain.energy_eV == pytest.approx(0.5 * coupling_eV * len(neighbor_list("i", structure, bond_A)),
                                                abs=1e-9)


# -- 4. resume ------------------------------------------------------------------------------------
def stored(record: dict) -> dict:
    """A record as a store keeps it: arrays through an .npz file, everything else through JSON."""
    arrays = {k: v for k, v in record.items() if isinstance(v, np.ndarray)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return {**arrays, **json.loads(json.dumps({k: v for k, v in record.items() if k not in arrays}))}


@pytest.mark.parametrize("split_step", [30, 20], ids=["inside_a_cycle", "at_a_cycle_end"])
def test_a_chain_resumed_from_its_record_takes_the_same_steps(split_step, committee):
    """Three chains, swaps and cell moves, three cycles of 20 steps: two calls, each on chains
    rebuilt from records that went through a store, against two calls on the same chains (bit for
    bit) and against one call."""
    lattice, cell, occupation = crs_chain_sites((4, 4, 2), n_vacancies=16, seed=6)
    model = PotentialEnergy(committee)
    schedule = GeometricCycles((800.0, 400.0, 200.0), steps_per_cycle=20)
    moves = MoveSettings(cell_move_fraction=0.3, max_strain=0.01, swap_groups=((0, 3), (10, 1)))
    calls = [split_step, schedule.total_steps - split_step]

    def run(n_steps_per_call: list[int], resume: bool):
        chains = [new_chain(model, lattice, occupation, cell, seed=400 + k) for k in range(3)]
        results = []
        for n in n_steps_per_call:
            if resume:
                chains = [ChainState.from_record(stored(c.to_record())) for c in chains]
            results.append(advance(model, lattice, chains, schedule, moves, n, record_every=3, skin_A=SKIN_A))
        return chains, results

    straight, straight_results = run(calls, resume=False)
    resumed, resumed_results = run(calls, resume=True)
    one_call, one_call_results = run([schedule.total_steps], resume=False)

    for a, b, c in zip(straight, resumed, one_call):
        assert a.step == b.step == schedule.total_steps
        np.testing.assert_array_equal(a.occupation, b.occupation)
        np.testing.assert_array_equal(a.cell, b.cell)
        assert a.energy_eV == b.energy_eV
        np.testing.assert_array_equal(a.proposed, b.proposed)
        np.testing.assert_array_equal(a.accepted, b.accepted)
        assert a.rng.bit_generator.state == b.rng.bit_generator.state
        # one call instead of two builds its site pairs once: the same moves, sums in another order
        np.testing.assert_array_equal(a.occupation, c.occupation)
        np.testing.assert_array_equal(a.accepted, c.accepted)
        assert abs(a.energy_eV - c.energy_eV) < 1e-9
    assert all(a.accepted[1] > 0 for a in straight)
    for a, b in zip(straight_results, resumed_results):
        for ta, tb in zip(a.traces, b.traces):
            for name in ("step", "temperature_K", "energy_eV", "volume_A3", "proposed", "accepted"):
                np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))
        for ma, mb in zip(a.minima, b.minima):
            assert [(m.cycle, m.step, m.energy_eV) for m in ma] == [(m.cycle, m.step, m.energy_eV) for m in mb]
            for x, y in zip(ma, mb):
                np.testing.assert_array_equal(x.occupation, y.occupation)
                np.testing.assert_array_equal(x.cell, y.cell)
    # every cycle's minimum came out once, a cycle ending at the split at the start of the next call
    for k in range(3):
        cycles = [m.cycle for r in straight_results for m in r.minima[k]]
        assert cycles == [0, 1, 2] == [m.cycle for m in one_call_results[0].minima[k]]


# -- 5. annealing ---------------------------------------------------------------------------------
def test_annealing_finds_the_enumerated_ground_state():
    """Cr12S16 (a 2×2×2 NiAs cell, 4 of 16 Cr sites vacant) with a random BP network: all 1820
    decorations evaluated by the forward pass; three geometric cycles of four chains."""
    potential = bp(1)
    sites = nias_sites((2, 2, 2))
    chromium = np.flatnonzero(sites.numbers == Z_CR)
    decorations = []
    for vacant in itertools.combinations(chromium, 4):
        occupation = sites.numbers.copy()
        occupation[list(vacant)] = 0
        decorations.append(occupation)
    decorations = np.array(decorations)
    lattice = SiteLattice(sites.get_scaled_positions(), (True, True, True), sites.numbers == Z_CR)
    cell = np.array(sites.cell)
    energy_eV = np.concatenate([full_energies_eV(potential, lattice, chunk, [cell] * len(chunk))
                                for chunk in np.array_split(decorations, 8)])
    lowest_eV = energy_eV.min()
    assert energy_eV[energy_eV > lowest_eV + 1e-9].min() > lowest_eV + 1e-4  # the next level stands apart

    model = PotentialEnergy(potential)
    start = decorations[np.argmax(energy_eV)]
    chains = [new_chain(model, lattice, start, cell, seed=500 + k) for k in range(4)]
    schedule = GeometricCycles((600.0, 400.0, 200.0), steps_per_cycle=150)
    moves = MoveSettings(cell_move_fraction=0.0, swap_groups=((0, 2),))
    result = advance(model, lattice, chains, schedule, moves, schedule.total_steps, skin_A=SKIN_A)

    assert [[m.cycle for m in ms] for ms in result.minima] == [[0, 1, 2]] * 4
    best = min((m for ms in result.minima for m in ms), key=lambda m: m.energy_eV)
    assert abs(best.energy_eV - lowest_eV) < 1e-9
    assert abs(full_energies_eV(potential, lattice, [best.occupation], [best.cell])[0] - lowest_eV) < 1e-9


# -- 6. canonical averages against mchammer -------------------------------------------------------
def test_canonical_mean_energy_agrees_with_mchammer():
    """A random cluster expansion of Cr/vacancy on NiAs (pairs to 5 Å, triplets to 3.5 Å) in a
    3×3×2 cell with 18 of 36 Cr sites vacant at 500 K: mean energy per site of 12 engine chains
    (error from the spread of chain means) and of one mchammer run (error from block means)."""
    temperature_K = 500.0
    primitive = Lattice().primitive()
    space = ClusterSpace(primitive, [5.0, 3.5], [["Cr", "X"], ["Cr", "X"], ["S"], ["S"]])
    rng = np.random.default_rng(8)
    ce = ClusterExpansion(space, rng.normal(0.0, 0.02, len(space)))
    sites = make_supercell(primitive, np.diag([3, 3, 2]))
    symbols = np.array(sites.get_chemical_symbols())
    chromium = np.flatnonzero(symbols == "Cr")
    symbols[rng.choice(chromium, len(chromium) // 2, replace=False)] = "X"
    start = sites.copy()
    start.set_chemical_symbols(list(symbols))
    n_sites = len(start)

    ensemble = CanonicalEnsemble(start, ClusterExpansionCalculator(start, ce), temperature=temperature_K,
                                 random_seed=9, ensemble_data_write_interval=n_sites)
    sweeps = 1000
    ensemble.run(sweeps * n_sites)
    theirs = ensemble.data_container.get("potential")[sweeps // 10:] / n_sites
    block_means = np.array([b.mean() for b in np.array_split(theirs, 10)])
    theirs_eV, theirs_error_eV = theirs.mean(), block_means.std(ddof=1) / np.sqrt(len(block_means))

    lattice = SiteLattice(start.get_scaled_positions(), (True, True, True), np.isin(symbols, ["Cr", "X"]))
    model = ClusterExpansionEnergy(ce, cutoff_A=5.0)
    chains = [new_chain(model, lattice, start.numbers, np.array(start.cell), seed=600 + k) for k in range(12)]
    schedule = ConstantTemperature(temperature_K, 1600)
    moves = MoveSettings(cell_move_fraction=0.0, swap_groups=((0, 2),))
    advance(model, lattice, chains, schedule, moves, 400, skin_A=SKIN_A)
    traces = advance(model, lattice, chains, schedule, moves, 1200, record_every=20, skin_A=SKIN_A).traces
    chain_means = np.array([t.energy_eV.mean() for t in traces]) / n_sites
    ours_eV, ours_error_eV = chain_means.mean(), chain_means.std(ddof=1) / np.sqrt(len(chain_means))

    tolerance_eV = 4 * np.hypot(theirs_error_eV, ours_error_eV)
    assert abs(ours_eV - theirs_eV) < tolerance_eV
    # the comparison can tell 500 K from infinite temperature (random decorations) many times over
    disordered = start.copy()
    disordered_eV = []
    for _ in range(200):
        symbols[chromium] = rng.permutation(symbols[chromium])
        disordered.set_chemical_symbols(list(symbols))
        disordered_eV.append(ce.predict(disordered))
    assert np.mean(disordered_eV) - theirs_eV > 10 * tolerance_eV
