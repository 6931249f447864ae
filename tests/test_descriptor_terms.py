"""The factorised symmetry functions against the formulas written out atom by atom, and the
training path (forces differentiable in the weights) against the inference path."""

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.descriptor_terms import FusedAngularTerms
from tasks.nnp.descriptors import DescriptorSettings, imbalzano_etas
from tasks.nnp.graph import pair_vectors
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tests.conftest import mos2_and_crs

SETTINGS = DescriptorSettings(elements=("Mo", "S", "Cr"), radial_cutoff_A=5.0, angular_cutoff_A=4.0,
                              radial_pair_cutoffs_A={"S-S": 4.2}, angular_pair_cutoffs_A={"Mo-S": 3.5})


def _fc(r, rc):
    return np.tanh(1 - r / rc) ** 3 if r < rc else 0.0


def reference_features(atoms, s: DescriptorSettings) -> np.ndarray:
    """G2/G4 of every atom by explicit loops over neighbours (ASE's neighbour list), float64."""
    elements = list(s.elements)
    radial_rc, angular_rc = s.cutoff_table("radial"), s.cutoff_table("angular")
    pair_types = s.element_pairs
    etas_ang = imbalzano_etas(s.angular_cutoff_A, s.angular_m)
    i_all, j_all, d_all = neighbor_list("ijD", atoms, max(s.radial_cutoff_A, s.angular_cutoff_A))
    kind = np.array([elements.index(x) for x in atoms.get_chemical_symbols()])
    out = np.zeros((len(atoms), s.n_features))
    for i in range(len(atoms)):
        mine = i_all == i
        js, ds = j_all[mine], d_all[mine]
        for j, d in zip(js, ds):
            r, rc = np.linalg.norm(d), radial_rc[kind[i], kind[j]]
            for k, eta in enumerate(imbalzano_etas(rc, s.radial_m)):
                out[i, kind[j] * len(s.radial_m) + k] += np.exp(-eta * r * r) * _fc(r, rc)
        for (ja, da), (jb, db) in itertools.combinations(zip(js, ds), 2):
            ra, rb = np.linalg.norm(da), np.linalg.norm(db)
            fa, fb = _fc(ra, angular_rc[kind[i], kind[ja]]), _fc(rb, angular_rc[kind[i], kind[jb]])
            cos = da @ db / (ra * rb)
            pt = pair_types.index(tuple(sorted((kind[ja], kind[jb]))))
            col = s.n_radial + pt * len(etas_ang) * len(s.lambdas) * len(s.zetas)
            for eta, lam, zeta in itertools.product(etas_ang, s.lambdas, s.zetas):
                out[i, col] += 2 ** (1 - zeta) * (1 + lam * cos) ** zeta * np.exp(-eta * (ra * ra + rb * rb)) * fa * fb
                col += 1
    return out


@pytest.mark.parametrize("fused", [False, True])
def test_features_equal_the_formulas_atom_by_atom(fused):
    model = BehlerParrinello(ModelSettings(SETTINGS, hidden=(8,)))
    for atoms in mos2_and_crs(0.1, (2, 1, 1)):
        batch = AtomsBatch.from_atoms([atoms])
        pairs = batch.pairs(model.cutoff_A)
        species = model.species(batch.numbers)
        ours = model.descriptor.terms(pair_vectors(batch.positions, batch.cells, pairs), species, pairs,
                                      fused=fused).features()
        np.testing.assert_allclose(ours.numpy(), reference_features(atoms, SETTINGS), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_kernel_equals_the_torch_terms_for_several_models(dtype):
    """The compiled CPU kernel against the torch path, features and dE/dv of three models at once,
    on a batch that includes atoms without any triplet (a dimer, an isolated atom)."""
    systems = [*mos2_and_crs(0.1, (2, 1, 1)), Atoms("MoS", positions=[[0, 0, 0], [2.3, 0, 0]]), Atoms("Cr")]
    model = BehlerParrinello(ModelSettings(SETTINGS, hidden=(8,))).to(dtype)
    batch = AtomsBatch.from_atoms(systems, dtype=dtype)
    pairs = batch.pairs(model.cutoff_A)
    species = model.species(batch.numbers)
    vectors = pair_vectors(batch.positions, batch.cells, pairs)
    torch_terms = model.descriptor.terms(vectors, species, pairs)
    fused_terms = model.descriptor.terms(vectors, species, pairs, fused=True)
    assert isinstance(fused_terms.angular, FusedAngularTerms), "the compiled kernel must be usable on this CPU"
    features = torch_terms.features()
    grad = torch.randn((3, *features.shape), dtype=dtype, generator=torch.Generator().manual_seed(0))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fused_terms.features(), features, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(fused_terms.vector_grad(grad), torch_terms.vector_grad(grad), rtol=tolerance,
                               atol=tolerance)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parallel build (loops over centres split between threads)
    try:
        torch.testing.assert_close(fused_terms.features(), features, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(fused_terms.vector_grad(grad), torch_terms.vector_grad(grad), rtol=tolerance,
                                   atol=tolerance)
    finally:
        torch.set_num_threads(threads)


def test_training_path_equals_inference_path_and_its_weight_gradient_is_exact():
    model = BehlerParrinello(ModelSettings(SETTINGS, hidden=(8,)), seed=3)
    batch = AtomsBatch.from_atoms(mos2_and_crs(0.1, (2, 1, 1)))
    pairs = batch.pairs(model.cutoff_A)
    fast = model(batch, pairs, stress=True)
    trained = model(batch, pairs, stress=True, create_graph=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(trained[key].detach(), fast[key], rtol=1e-12, atol=1e-12)

    weight = model.atomic.nets[1][0].weight  # S network, first layer

    def force_loss() -> torch.Tensor:
        return model(batch, pairs, create_graph=True)["forces"].pow(2).sum()

    (grad,) = torch.autograd.grad(force_loss(), weight)
    h = 1e-6
    for index in [(0, 0), (3, 7), (5, model.settings.descriptor.n_radial + 4)]:
        with torch.no_grad():
            weight[index] += h
            up = float(force_loss())
            weight[index] -= 2 * h
            down = float(force_loss())
            weight[index] += h
        assert abs((up - down) / (2 * h) - float(grad[index])) < 1e-6 * max(1.0, abs(float(grad[index])))
