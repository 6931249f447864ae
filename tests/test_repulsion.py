"""Short-range repulsion: ZBL constants, the switch's continuity, tables from a tblite dimer scan."""

import numpy as np
import pytest
import torch
from ase import Atoms

from tasks.labeling import TbliteLabeler
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.nnp.repulsion import (Blended, PairRepulsion, PairTable, dimer_scan, switch, zbl_energy_eV,
                                 zbl_screening_length_A)

SETTINGS = ModelSettings(DescriptorSettings(elements=("S", "Mo"), radial_cutoff_A=4.0, angular_cutoff_A=3.5),
                         hidden=(8,))
R_IN, R_OUT = 1.0, 1.6


def test_zbl_reference_values():
    assert abs(zbl_screening_length_A(42, 16) - 0.1101) < 5e-5
    assert abs(zbl_energy_eV(1.0, 42, 16) - 114.5) < 0.05
    r = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(zbl_energy_eV(r, 42.0, 16.0).numpy(), zbl_energy_eV(r.numpy(), 42.0, 16.0))


def test_switch_values_and_smoothness():
    r = torch.tensor([0.5, R_IN, 1.3, R_OUT, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(switch(r, R_IN, R_OUT).numpy(), [1, 1, 0.5, 0, 0], atol=1e-12)


def _dimer_curve(potential, distances):
    energies, forces = [], []
    for d in distances:
        dimer = Atoms("MoS", positions=[[5, 5, 5], [5, 5, 5 + d]], cell=[12, 12, 12], pbc=False)
        out = potential(AtomsBatch.from_atoms([dimer]))
        energies.append(float(out["energy"][0].detach()))
        forces.append(float(out["forces"][1, 2].detach()))
    return np.array(energies), np.array(forces)


@pytest.mark.parametrize("edge", [R_IN, R_OUT])
def test_energy_and_force_are_continuous_through_the_switch(edge):
    potential = Blended(BehlerParrinello(SETTINGS, seed=1), PairRepulsion(("S", "Mo")), R_IN, R_OUT)
    h = 1e-6
    distances = edge + h * np.arange(-200, 201)  # dense points straddling the edge
    energies, forces = _dimer_curve(potential, distances)
    # no jump: neighbouring points differ by what the slope allows, and the force is -dE/dr throughout
    assert np.abs(np.diff(energies)).max() < 2 * h * np.abs(forces).max() + 1e-9
    assert np.abs(np.diff(forces)).max() < 1e-2 * max(1.0, np.abs(forces).max())
    np.testing.assert_allclose(-np.gradient(energies, h)[1:-1], forces[1:-1], rtol=1e-4, atol=1e-4)


def test_blend_is_repulsion_inside_and_the_model_outside():
    model = BehlerParrinello(SETTINGS, seed=2)
    potential = Blended(model, PairRepulsion(("S", "Mo")), R_IN, R_OUT)
    blended, _ = _dimer_curve(potential, [0.6, 2.5])
    plain, _ = _dimer_curve(model, [0.6, 2.5])
    assert abs(blended[0] - zbl_energy_eV(0.6, 42, 16)) < 1e-9
    assert abs(blended[1] - plain[1]) < 1e-12


def test_blended_committee_gives_deviations():
    members = [BehlerParrinello(SETTINGS, seed=s) for s in (1, 2)]
    potential = Blended(Committee(members), PairRepulsion(("S", "Mo")), R_IN, R_OUT)
    dimer = Atoms("MoS", positions=[[5, 5, 5], [5, 5, 7.2]], cell=[12, 12, 12], pbc=False)
    out = potential(AtomsBatch.from_atoms([dimer]))
    assert out["force_deviation"].shape == (1,) and float(out["force_deviation"][0]) > 0


def test_table_from_a_tblite_dimer_scan_is_smooth_and_exact_on_the_grid():
    grid = np.linspace(0.8, 2.0, 13)
    curve = dimer_scan("Mo", "S", grid, TbliteLabeler(min_distance_A=0.0))
    assert curve[0] > curve[-1] + 1.0, "a dimer repels at short range"
    zeros = np.zeros_like(grid)
    table = PairTable(("S", "Mo"), grid, np.stack([zeros, curve, zeros]))  # S-S, S-Mo, Mo-Mo
    repulsion = PairRepulsion(("S", "Mo"), table)
    s, mo = torch.tensor([0]), torch.tensor([1])
    on_grid = repulsion(torch.as_tensor(grid), s.repeat(len(grid)), mo.repeat(len(grid)))
    np.testing.assert_allclose(on_grid.numpy(), curve, atol=1e-10)
    # the spline's slope is continuous across every interior knot (and across the first one,
    # where linear extrapolation takes over)
    knots = torch.as_tensor(grid[:-1])
    eps = 1e-7
    r = torch.cat([knots - eps, knots + eps]).requires_grad_(True)
    v = repulsion(r, s.repeat(len(r)), mo.repeat(len(r)))
    (dv,) = torch.autograd.grad(v.sum(), r)
    left, right = dv[:len(knots)], dv[len(knots):]
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-4)


def test_a_blend_evaluated_in_parts_equals_autograd_through_the_whole_blend():
    """Blended.forward: systems with no pair inside R_a take the network alone; the others the
    network's kernels weighted by (1 − w_i) plus autograd through w and the table. Against autograd
    through the whole blend (the training path), on one batch holding both kinds of systems."""
    from pathlib import Path

    from tasks.generate import monolayer_mx2
    from tasks.nnp.derivatives import potential_outputs, single_model
    from tasks.potential import load_potential

    blend = load_potential(Path(__file__).parent / "data" / "mos2_dptab_small.pt")
    assert (blend.r_inner_A, blend.r_outer_A) == (1.6, 2.0)
    sheet = monolayer_mx2(supercell=(3, 3, 1))
    sheet.rattle(0.05, seed=1)
    close = sheet.copy()
    close += Atoms("S", positions=[close.positions[4] + [0.3, 0.2, 0.9]])  # ~0.97 Å: the table alone
    between = sheet.copy()  # an adatom 1.8 Å above an atom: inside the switch (1.6–2.0 Å for this potential)
    between += Atoms("Mo", positions=[between.positions[np.argmax(between.positions[:, 2])] + [0.0, 0.0, 1.8]])
    batch = AtomsBatch.from_atoms([sheet, close, between])
    parts = blend(batch, stress=True)
    whole = single_model(potential_outputs(blend.atomic_energy_fn, blend.cutoff_A, batch, None, forces=True,
                                           stress=True))
    for name in ("energy", "forces", "stress"):
        scale = float(whole[name].abs().max())
        assert float((parts[name] - whole[name]).abs().max()) < 1e-10 * scale, name
