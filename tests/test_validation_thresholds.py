"""Threshold displacement energies (tasks/validation/threshold.py) on a constructed potential whose
thresholds are known exactly: atoms in a separable cosine field, E = Σ_atoms Σ_axes D (1 − cos 2πx/L).
Motion along each axis is then independent, and a PKA given energy E along unit vector n leaves
its well (a vacancy) exactly when E n_a² > 2D for some axis a: E_d(n) = 2D / max_a n_a²."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from tasks.nnp.batch import per_system_sum
from tasks.validation.threshold import (ThresholdSettings, fibonacci_hemisphere, first_atom_of, leaves_defect,
                                        threshold_energies)

DEPTH_EV, PERIOD_A = 1.0, 2.0


class CosineField(torch.nn.Module):
    cutoff_A = 0.5
    elements = ("Cu",)
    dtype = torch.float64
    device = torch.device("cpu")

    def forward(self, batch, pairs=None, *, forces: bool = True, stress: bool = False) -> dict:
        k = 2 * np.pi / PERIOD_A
        x = batch.positions
        energy = per_system_sum(DEPTH_EV * (1 - torch.cos(k * x)).sum(dim=1), batch.system, batch.n_systems)
        return {"energy": energy, "forces": -DEPTH_EV * k * torch.sin(k * x)}


def lattice() -> Atoms:
    """A cluster, not a periodic cell: an escaped PKA runs on forever (nothing takes its energy)
    and in a periodic cell could come round to its own site again."""
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * PERIOD_A
    return Atoms(f"Cu{len(grid)}", positions=grid, cell=[4 * PERIOD_A] * 3, pbc=False)


def exact(directions: np.ndarray) -> np.ndarray:
    return 2 * DEPTH_EV / (directions ** 2).max(axis=1)


SETTINGS = ThresholdSettings(low_eV=0.5, high_eV=8.0, rounds=9, time_fs=1500.0, max_timestep_fs=2.0,
                             max_displacement_A=0.05, bond_cutoff_A=2.5)


def test_fibonacci_directions_are_unit_vectors_spread_over_the_upper_hemisphere():
    d = fibonacci_hemisphere(200)
    assert np.allclose(np.linalg.norm(d, axis=1), 1) and (d[:, 2] > 0).all()
    assert abs(d[:, 2].mean() - 0.5) < 1e-3, "uniform over the hemisphere: <cos θ> = 1/2"
    assert np.abs(d[:, :2].mean(axis=0)).max() < 0.02


def test_bisection_finds_the_known_thresholds():
    cell = lattice()
    directions = fibonacci_hemisphere(12)
    found = threshold_energies(CosineField(), cell, first_atom_of(cell, "Cu"), directions, SETTINGS)
    expected = exact(directions)
    width = (SETTINGS.high_eV - SETTINGS.low_eV) / 2 ** SETTINGS.rounds
    inside = expected < SETTINGS.high_eV
    assert inside.sum() >= 8
    assert (found.threshold_eV[inside] - found.below_eV[inside] <= width + 1e-12).all()
    assert (found.below_eV[inside] <= expected[inside] * (1 + 1e-3)).all(), (found.below_eV, expected)
    assert (found.threshold_eV[inside] >= expected[inside] * (1 - 1e-3)).all(), (found.threshold_eV, expected)
    assert (found.threshold_eV[~inside] == SETTINGS.high_eV).all(), "no defect below the bracket's top"


def test_a_defect_once_formed_stays_formed_at_higher_energies():
    cell = lattice()
    directions = fibonacci_hemisphere(5)[[0, 2, 4]]
    energies = np.linspace(0.6, 7.8, 13)
    grid = leaves_defect(CosineField(), cell, first_atom_of(cell, "Cu"), np.repeat(directions, len(energies), axis=0),
                         np.tile(energies, len(directions)), SETTINGS).reshape(len(directions), -1)
    for row, threshold in zip(grid, exact(directions)):
        assert (np.diff(row.astype(int)) >= 0).all(), row
        assert (row == (energies > threshold)).all(), (row, threshold)


def test_the_thresholds_step_runs_a_labeler_as_the_md_potential():
    """The validation job's wiring: an ASE labeler (EMT) drives the batched MD one system at a
    time; the average is the mean over directions and each direction keeps its bracket."""
    from ase.build import bulk

    from tasks.labeling import AseLabeler
    from tasks.structures import Structure
    from tasks.validation.jobs import Source, ValidationJob, ValidationSettings, validate_batch

    settings = ValidationSettings(sheet=False, repeat=(1, 1, 1), threshold_species=("Cu",), threshold_directions=2,
                                  threshold=ThresholdSettings(low_eV=5.0, high_eV=85.0, rounds=2, time_fs=80.0,
                                                              max_displacement_A=0.15, bond_cutoff_A=3.0))
    source = Source("emt", labeler=AseLabeler(calculator_class="ase.calculators.emt.EMT"))
    cell = Structure.from_atoms(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    [outcome] = validate_batch(["k"], [ValidationJob(source, "thresholds", cell)], settings)
    assert outcome.ok, outcome.traceback
    values = {v.name: v.value for v in outcome.value.values}
    [curve] = outcome.value.curves
    threshold, below = curve.y[:, 0], curve.y[:, 1]
    middle = (threshold + below) / 2  # a bracket's midpoint; at a bracket end, that end
    assert values["E_d(Cu)"] == pytest.approx(np.mean(middle)) and values["E_d(Cu) least"] == middle.min()
    assert values["E_d(Cu) directions outside the bracket"] == np.count_nonzero(threshold == below)
    assert ((threshold - below == 20.0) | (threshold == below)).all(), curve.y
    assert 5.0 < values["E_d(Cu)"] < 85.0, "copper's thresholds are tens of eV"
