"""Ranking energies of enumerated cells: the decoration path (neighbour pairs found once per
supercell, energies per atom summed over each cell's atoms) against the committee evaluated on
each real structure alone, through its ordinary forward pass."""

import numpy as np
import torch

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.phase.cells import without_vacancies
from tasks.phase.enumeration import enumerate_cells
from tasks.phase.lattice import Lattice
from tasks.phase.ranking import CellChunk, rank_chunk


def test_ranked_energies_and_spreads_are_the_committees_own():
    torch.set_num_threads(1)
    lattice = Lattice()
    found = enumerate_cells(lattice.primitive(), range(1, 4), lattice.chemical_symbols())
    keep = [k for k in range(len(found)) if 0 < np.sum(found.sites(k) == 1) < len(found.sites(k))]
    # supercells interleaved: a pass groups its cells by supercell and must give them back in order
    keep = list(np.random.default_rng(0).permutation(keep))
    chunk = CellChunk(np.arange(len(keep)), np.full(len(keep), np.nan), found.ncells[keep], found.hnf[keep],
                      [found.sites(k) for k in keep])
    assert len({(int(n), tuple(h)) for n, h in zip(chunk.ncells, chunk.hnf)}) > 5, "several supercells, mixed"
    settings = ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=5.0, angular_cutoff_A=4.0),
                             hidden=(8,))
    committee = Committee([BehlerParrinello(settings, seed=s) for s in (3, 4)])
    ranked = rank_chunk(chunk, lattice, committee, None, max_atoms=40)  # several passes
    for k in range(len(chunk)):
        real = without_vacancies(lattice.cell_atoms(chunk.hnf[k], int(chunk.ncells[k]), chunk.occupation[k]))
        out = committee(AtomsBatch.from_atoms([real]), forces=False)
        assert ranked.n_atoms[k] == len(real)
        assert abs(ranked.energy_eV_per_atom[k] - float(out["energy"][0]) / len(real)) < 1e-10
        assert abs(ranked.deviation_eV_per_atom[k] - float(out["energy_deviation_per_atom"][0])) < 1e-10
    alone = rank_chunk(chunk, lattice, committee.members[0], None, max_atoms=10_000)
    assert np.isnan(alone.deviation_eV_per_atom).all(), "one model has no spread"
