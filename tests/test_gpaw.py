"""Real PBE DFT with GPAW (plane waves, small cutoff) through the same labeling path."""

import numpy as np
import pytest
from ase.build import mx2

from tasks.labeling import GpawLabeler, label_batch
from tasks.structures import Structure

pytestmark = pytest.mark.gpaw


def test_gpaw_labels_a_three_atom_mos2_cell(client):
    atoms = mx2("MoS2", size=(1, 1, 1), vacuum=5.0)
    atoms.rattle(0.02, seed=1)
    labeler = GpawLabeler(ecut_eV=250, kpts=(2, 2, 1), smearing_eV=0.1)
    # On a Dask worker, as in a campaign, and not in this process: GPAW imported where pytest is
    # loaded installs its debug wrappers (numpy.empty replaced by a Python function, np.seterr
    # raising), which breaks numba compilations and numpy warnings in every later test.
    [outcome] = client.submit(label_batch, ["mos2"], [Structure.from_atoms(atoms, "mos2")], labeler,
                              pure=False).result()
    assert outcome.ok, outcome.traceback
    label = outcome.value
    assert -25.0 < label.energy_eV < -18.0  # PBE, PAW: about -21.8 eV for the unrattled cell
    assert label.forces_eV_per_A.shape == (3, 3)
    assert np.abs(label.forces_eV_per_A.sum(axis=0)).max() < 0.05  # no net force
    assert np.all(np.isfinite(label.stress_eV_per_A3))
