"""Features kept between Monte Carlo steps (tasks.mc.site_features): after every swap, against the
descriptor's torch formulas on the whole new structure (its own neighbour list, none of the
compiled kernels), and the energy changes against the potential's forward pass; the engine on this
path against the engine on the general one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from tasks.mc.chains import advance, new_chain
from tasks.mc.energy import EnergyRequest, PotentialEnergy
from tasks.mc.schedule import ConstantTemperature, MoveSettings
from tasks.mc.site_features import SwapRequest, site_feature_model
from tasks.mc.sites import SiteLattice, site_pairs
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.graph import pair_vectors
from tasks.nnp.model import BehlerParrinello, DescriptorSettings, ModelSettings
from tasks.potential import load_potential
from tests.test_mc_engine import MOS2_POTENTIAL, Z_CR, Z_MO, crs_chain_sites, full_energies_eV, mos2_chain_sites
from tests.test_mc_engine import one_thread  # noqa: F401  (its autouse fixture: every test here on one thread)

SKIN_A = 1.0


def committee(elements: tuple[str, ...], **descriptor) -> Committee:
    settings = ModelSettings(DescriptorSettings(elements=elements, radial_cutoff_A=6.0, angular_cutoff_A=4.5,
                                                **descriptor), hidden=(8,))
    return Committee([BehlerParrinello(settings, seed=s) for s in (1, 2)])


def crmo_sites():
    """NiAs Cr(1−x)S with a third of the occupied metal sites Mo: swaps move two elements."""
    lattice, cell, occupation = crs_chain_sites((3, 3, 2), n_vacancies=10, seed=11)
    metal = np.flatnonzero(occupation == Z_CR)
    occupation[np.random.default_rng(12).choice(metal, len(metal) // 3, replace=False)] = Z_MO
    return lattice, cell, occupation


SYSTEMS = {
    # 2 × 2 × 1 NiAs cells: every site sees periodic images of itself and of the others within 6 Å
    "crs_images": (("S", "Cr"), lambda: crs_chain_sites((2, 2, 1), n_vacancies=3, seed=1)),
    "crmo_s": (("S", "Cr", "Mo"), crmo_sites),
    "mos2_sheet": (("S", "Mo"), lambda: mos2_chain_sites(5, n_vacancies=8, seed=2)),
}


def torch_features(potential: Committee, lattice: SiteLattice, occupation: np.ndarray, cell: np.ndarray):
    """Features of every atom of the whole structure by the torch formulas (descriptor.terms), in site order."""
    lead = potential.members[0]
    occupied = occupation != 0
    atoms = Atoms(numbers=occupation[occupied], scaled_positions=lattice.fractional[occupied], cell=cell,
                  pbc=lattice.pbc)
    batch = AtomsBatch.from_atoms([atoms])
    pairs = batch.pairs(lead.cutoff_A)
    with torch.no_grad():
        terms = lead.descriptor.terms(pair_vectors(batch.positions, batch.cells, pairs),
                                      lead.species(batch.numbers), pairs)
        return terms.features().numpy()


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_features_after_each_swap_equal_the_descriptor_of_the_new_structure(system):
    """Eight swaps of 1–6 pairs in turn, each accepted: after each, every occupied site's kept
    features equal the torch descriptor of the whole new structure, and the swap's energy change
    (its touched sites' new energies less their kept ones) equals the forward pass's."""
    elements, build = SYSTEMS[system]
    lattice, cell, occupation = build()
    potential = committee(elements)
    model = site_feature_model(potential)
    assert model is not None
    pairs = site_pairs(lattice, cell, model.cutoff_A, SKIN_A)
    kept = model.whole(lattice, [EnergyRequest(occupation, cell, pairs)])[0]
    rng = np.random.default_rng(7)
    mobile = np.flatnonzero(lattice.mobile)
    energy_eV = full_energies_eV(potential, lattice, [occupation], [cell])[0]
    assert kept.energies.sum() == pytest.approx(energy_eV, abs=1e-9)
    changes = []
    for size in (1, 2, 3, 6, 1, 4, 2, 5):
        vacant = mobile[occupation[mobile] == 0]
        size = min(size, len(vacant))
        leaving = rng.choice(mobile[occupation[mobile] != 0], size, replace=False)
        arriving = rng.choice(vacant, size, replace=False)
        new = occupation.copy()
        new[arriving], new[leaving] = occupation[leaving], 0
        moved = np.concatenate([leaving, arriving])
        touched = pairs.within_cutoff(moved, cell)
        (rows, energies), = model.swaps([SwapRequest(kept, occupation, new, moved, touched)])
        kept.features[touched], kept.energies[touched] = rows, energies
        occupation = new

        expected = torch_features(potential, lattice, occupation, cell)
        occupied = occupation != 0
        np.testing.assert_allclose(kept.features[occupied], expected, rtol=0, atol=1e-10 * np.abs(expected).max())
        new_energy_eV = full_energies_eV(potential, lattice, [occupation], [cell])[0]
        assert kept.energies.sum() - energy_eV == pytest.approx(new_energy_eV - energy_eV, abs=1e-9)
        changes.append(abs(new_energy_eV - energy_eV))
        energy_eV = new_energy_eV
    assert max(changes) > 1e-4  # the swaps change the energy (a small cell's may be symmetric): the check has teeth


def test_the_kept_features_path_applies_only_where_its_energy_is_the_potentials():
    """Behler–Parrinello models and committees of them in float64 without per-pair cutoffs; not a
    float32 model, not per-pair cutoffs, not a repulsion blend (whose energy has more than the networks)."""
    assert site_feature_model(committee(("S", "Cr"))) is not None
    assert site_feature_model(committee(("S", "Cr")).members[0]) is not None
    assert site_feature_model(committee(("S", "Cr"), angular_pair_cutoffs_A={"Cr-S": 4.0})) is None
    float32 = BehlerParrinello(ModelSettings(DescriptorSettings(elements=("S", "Cr"))), dtype=torch.float32)
    assert site_feature_model(float32) is None
    assert site_feature_model(load_potential(MOS2_POTENTIAL)) is None


@pytest.mark.parametrize("skin_A, max_strain", [(1.0, 0.01), (0.05, 0.05)],
                         ids=["pairs_kept", "pairs_found_afresh_after_cell_moves"])
def test_the_engine_takes_the_same_steps_on_kept_features_as_on_the_general_path(skin_A, max_strain):
    """Four chains, swaps of 1–3 pairs and cell moves at a temperature where both are often accepted
    (with a thin skin and large strains, accepted cell moves bring site pairs found afresh): the same
    occupations, cells and counters, energies to rounding, on both paths."""
    lattice, cell, occupation = crs_chain_sites((3, 3, 2), n_vacancies=12, seed=5)
    potential = committee(("S", "Cr"))
    moves = MoveSettings(cell_move_fraction=0.2, max_strain=max_strain, swap_groups=((0, 3),))
    runs = []
    for kept_features in (True, False):
        model = PotentialEnergy(potential)
        if not kept_features:
            model.site_features = lambda: None
        chains = [new_chain(model, lattice, occupation, cell, seed=30 + k) for k in range(4)]
        advance(model, lattice, chains, ConstantTemperature(3000.0, 60), moves, 60, skin_A=skin_A)
        runs.append(chains)
    for a, b in zip(*runs):
        assert a.accepted[0] >= 5 and a.accepted[1] >= 1
        np.testing.assert_array_equal(a.occupation, b.occupation)
        np.testing.assert_array_equal(a.cell, b.cell)
        np.testing.assert_array_equal(a.accepted, b.accepted)
        assert a.energy_eV == pytest.approx(b.energy_eV, abs=1e-9)
    final = full_energies_eV(potential, lattice, [c.occupation for c in runs[0]], [c.cell for c in runs[0]])
    np.testing.assert_allclose([c.energy_eV for c in runs[0]], final, rtol=0, atol=1e-8)
