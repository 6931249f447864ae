"""The factorised symmetry functions and the compiled CPU kernels against the formulas written out
atom by atom and against autograd, and the training path (forces differentiable in the weights)
against the inference path."""

import inspect
import io
import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.cpu_inference import cpu_outputs, kernel_shape
from tasks.nnp.cpu_kernels import kernel_arguments, kernels_for
from tasks.nnp.derivatives import potential_outputs
from tasks.nnp.descriptors import DescriptorSettings, SymmetryParameters
from tasks.nnp.graph import pair_vectors
from tasks.nnp.kernel_source import KERNEL_ARGUMENTS
from tasks.nnp.model import BehlerParrinello, ModelSettings, descriptor_features
from tests.conftest import mos2_and_crs

SETTINGS = DescriptorSettings(elements=("Mo", "S", "Cr"), radial_cutoff_A=5.0, angular_cutoff_A=4.0,
                              radial_pair_cutoffs_A={"S-S": 4.2}, angular_pair_cutoffs_A={"Mo-S": 3.5})
# every parameter away from its default, the Imbalzano n included: both paths must read them all
OTHER_PARAMETERS = DescriptorSettings(elements=("Mo", "S", "Cr"), radial_cutoff_A=4.6, angular_cutoff_A=3.8,
                                      radial_pair_cutoffs_A={"Mo-S": 4.0}, angular_pair_cutoffs_A={"S-S": 3.3},
                                      radial_m=(0, 2, 3), angular_m=(1, 3), zetas=(2, 5), lambdas=(-1, 1),
                                      imbalzano_n=3)


def _fc(r, rc):
    return np.tanh(1 - r / rc) ** 3 if r < rc else 0.0


def reference_features(atoms, s: DescriptorSettings) -> np.ndarray:
    """G2/G5 of every atom by explicit loops over neighbours (ASE's neighbour list), float64, with
    the Imbalzano rule η_m = (n^{m/n} / r_c)² written out here."""
    elements = list(s.elements)
    radial_rc, angular_rc = s.cutoff_table("radial"), s.cutoff_table("angular")
    pair_types = s.element_pairs
    n = s.imbalzano_n
    etas_ang = [(n ** (m / n) / s.angular_cutoff_A) ** 2 for m in s.angular_m]
    i_all, j_all, d_all = neighbor_list("ijD", atoms, max(s.radial_cutoff_A, s.angular_cutoff_A))
    kind = np.array([elements.index(x) for x in atoms.get_chemical_symbols()])
    out = np.zeros((len(atoms), s.n_features))
    for i in range(len(atoms)):
        mine = i_all == i
        js, ds = j_all[mine], d_all[mine]
        for j, d in zip(js, ds):
            r, rc = np.linalg.norm(d), radial_rc[kind[i], kind[j]]
            for k, m in enumerate(s.radial_m):
                eta = (n ** (m / n) / rc) ** 2  # the pair's own radial cutoff
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


@pytest.mark.parametrize("settings", [SETTINGS, OTHER_PARAMETERS], ids=["pair-cutoffs", "other-parameters"])
@pytest.mark.parametrize("path", ["torch", "kernel"])
def test_features_equal_the_formulas_atom_by_atom(path, settings):
    model = BehlerParrinello(ModelSettings(settings, hidden=(8,)))
    for atoms in mos2_and_crs(0.1, (2, 1, 1)):
        batch = AtomsBatch.from_atoms([atoms])
        pairs = batch.pairs(model.cutoff_A + 0.5)  # with a skin, as in MD: pairs beyond the cutoffs are skipped
        species = model.species(batch.numbers)
        if path == "torch":
            ours = model.descriptor.terms(pair_vectors(batch.positions, batch.cells, pairs), species, pairs).features()
        else:
            ours = descriptor_features(model.descriptor, species, batch, pairs)
        np.testing.assert_allclose(ours.numpy(), reference_features(atoms, settings), rtol=1e-10, atol=1e-12)


def _members(dtype: torch.dtype) -> list[BehlerParrinello]:
    """Three models with different weights, normalisations and reference energies."""
    members = []
    for seed in range(3):
        model = BehlerParrinello(ModelSettings(SETTINGS, hidden=(8, 6)), seed=seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in model.atomic.parameters():
                weight.mul_(3.0)  # initial weights give forces too small to test anything
            model.atomic.feature_mean.uniform_(0.0, 0.3, generator=generator)
            model.atomic.feature_std.uniform_(0.5, 2.0, generator=generator)
            model.atomic.reference_energy_eV.uniform_(-4.0, -1.0, generator=generator)
        members.append(model.to(dtype))
    return members


def _every_element():
    return [*mos2_and_crs(0.1, (2, 1, 1)), Atoms("MoS", positions=[[0, 0, 0], [2.3, 0, 0]]), Atoms("Cr")]


def _without_cr():
    return [mos2_and_crs(0.1, (2, 1, 1))[0], Atoms("MoS", positions=[[0, 0, 0], [2.3, 0, 0]])]


@pytest.mark.parametrize("dtype, systems", [(torch.float64, _every_element), (torch.float32, _every_element),
                                            (torch.float64, _without_cr)])
def test_compiled_kernels_equal_autograd_for_several_models(dtype, systems):
    """The CPU inference path (compiled kernels, stacked networks with their written-out gradient)
    against autograd through the torch terms, energies, forces and stress of three members at once,
    on a batch with atoms without any triplet (a dimer, an isolated atom), serial and parallel builds;
    and on a batch without Cr, whose Cr feature blocks inference leaves out."""
    systems = systems()
    with_cell = [k for k, atoms in enumerate(systems) if atoms.cell.volume > 0]
    members = _members(dtype)
    batch = AtomsBatch.from_atoms(systems, dtype=dtype)
    pairs = batch.pairs(members[0].cutoff_A + 0.5)
    species = members[0].species(batch.numbers)
    reference = [potential_outputs(m.atomic_energy_fn, m.cutoff_A, batch, pairs, forces=True, stress=True)
                 for m in members]
    tolerance = 1e-11 if dtype == torch.float64 else 2e-5
    threads = torch.get_num_threads()
    for n_threads in (1, 2):  # 2: the parallel build, loops over centres split between threads
        torch.set_num_threads(n_threads)
        try:
            ours = cpu_outputs(members[0].descriptor, [m.atomic for m in members], species, batch, pairs, forces=True,
                               stress=True)
        finally:
            torch.set_num_threads(threads)
        for key in ("energy", "forces", "stress"):
            expected = torch.cat([r[key].detach() for r in reference])
            if key == "stress":  # the dimer and the atom have no cell, hence no stress
                expected, ours[key] = expected[:, with_cell], ours[key][:, with_cell]
            scale = float(expected.abs().max())
            torch.testing.assert_close(ours[key], expected, rtol=tolerance, atol=tolerance * scale)
    assert float(torch.cat([r["forces"] for r in reference]).abs().max()) > 0.05, "forces must not be trivially small"
    energies_only = cpu_outputs(members[0].descriptor, [m.atomic for m in members], species, batch, pairs,
                                forces=False, stress=False)
    assert set(energies_only) == {"energy"}
    # the energy-only build is other code for the compiler: its sums may round differently in the last bit
    scale = float(ours["energy"].abs().max())
    torch.testing.assert_close(energies_only["energy"], ours["energy"], rtol=0, atol=4 * torch.finfo(dtype).eps * scale)


def test_reused_workspace_gives_the_results_of_fresh_arrays_across_batches_and_threads():
    """cpu_outputs keeps its per-pair arrays between calls (one workspace per thread). A large batch,
    a small one, then the large one again must each give what fresh arrays give, and two threads
    evaluating different batches at once must not see each other's arrays."""
    members = _members(torch.float64)
    networks = [m.atomic for m in members]
    large = AtomsBatch.from_atoms(mos2_and_crs(0.1, (3, 2, 1)), dtype=torch.float64)
    small = AtomsBatch.from_atoms([Atoms("MoS", positions=[[0, 0, 0], [2.3, 0, 0]])], dtype=torch.float64)

    def evaluate(batch):
        pairs = batch.pairs(members[0].cutoff_A + 0.5)
        return cpu_outputs(members[0].descriptor, networks, members[0].species(batch.numbers), batch, pairs,
                           forces=True, stress=False)

    def fresh(batch):  # a new thread has a new, empty workspace
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(evaluate, batch).result()

    expected = {"large": fresh(large), "small": fresh(small)}
    sequence = [("large", evaluate(large)), ("small", evaluate(small)), ("large", evaluate(large))]
    with ThreadPoolExecutor(2) as pool:
        sequence += [(name, future.result()) for name, future in
                     [(name, pool.submit(evaluate, batch)) for _ in range(4) for name, batch in
                      (("large", large), ("small", small))]]
    for name, got in sequence:
        for key in ("energy", "forces"):
            torch.testing.assert_close(got[key], expected[name][key], rtol=0, atol=0)
    assert expected["large"]["forces"].shape[1] > 10 * expected["small"]["forces"].shape[1]


def test_kernels_are_written_to_the_cache_folder_and_a_read_only_one_is_survived(tmp_path):
    """The generated modules and numba's compiled code land in $CAMPAIGN_KERNEL_CACHE, so later
    processes (Dask workers) load them; a cache folder that cannot be written falls back to a
    private one and still evaluates."""
    script = ("import torch; from ase.build import mx2; from tasks.nnp.batch import AtomsBatch; "
              "from tasks.nnp.descriptors import DescriptorSettings; "
              "from tasks.nnp.model import BehlerParrinello, ModelSettings; "
              "m = BehlerParrinello(ModelSettings(DescriptorSettings(elements=('Mo', 'S')), hidden=(4,))); "
              "print(float(m(AtomsBatch.from_atoms([mx2('MoS2')]))['forces'].abs().sum()))")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    results = []
    for folder in (tmp_path / "kernels", blocked):
        run = subprocess.run([sys.executable, "-c", script], env={**os.environ, "CAMPAIGN_KERNEL_CACHE": str(folder)},
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        results.append(float(run.stdout))
    assert results[0] == results[1]
    modules = sorted(p.name for p in (tmp_path / "kernels").glob("campaign_kernel_*.py"))
    assert len(modules) == 2, modules  # features and gradient
    assert len(list((tmp_path / "kernels" / "__pycache__").glob("campaign_kernel_*.nbi"))) >= 2


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


def test_model_files_of_the_previous_release_load_with_the_same_parameters():
    """A model file written before the Imbalzano n was a setting carries no ``imbalzano_n`` and keeps
    copies of derived parameters in its state: it loads, its features equal the formulas, it saves
    and reloads to identical outputs; a file whose copies disagree with its settings is refused."""
    folder = Path(__file__).parent / "data" / "v1" / "al" / "store" / "models" / "iter-000"
    data = next(folder.glob("member-0-*.pt")).read_bytes()
    model = BehlerParrinello.from_bytes(data)
    assert model.settings.descriptor.imbalzano_n == 5
    atoms = mos2_and_crs(0.1, (2, 1, 1))[0]
    batch = AtomsBatch.from_atoms([atoms])
    pairs = batch.pairs(model.cutoff_A)
    features = descriptor_features(model.descriptor, model.species(batch.numbers), batch, pairs)
    np.testing.assert_allclose(features.numpy(), reference_features(atoms, model.settings.descriptor), rtol=1e-10,
                               atol=1e-12)
    again = BehlerParrinello.from_bytes(model.to_bytes())
    for key in ("energy", "forces"):
        torch.testing.assert_close(again(batch, pairs)[key], model(batch, pairs)[key], rtol=0, atol=0)

    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    assert "descriptor.angular_eta" in payload["state"]
    payload["state"]["descriptor.angular_eta"] = payload["state"]["descriptor.angular_eta"] * 1.1
    tampered = io.BytesIO()
    torch.save(payload, tampered)
    with pytest.raises(RuntimeError, match="descriptor.angular_eta"):
        BehlerParrinello.from_bytes(tampered.getvalue())


def test_kernels_take_their_arguments_by_name():
    """The generated def lines are written from KERNEL_ARGUMENTS; a call orders its arguments by
    those names, and one that misses or misnames an argument is refused, not shifted."""
    shape = kernel_shape(SymmetryParameters.from_settings(SETTINGS), torch.float64, n_models=2)
    for kernel, names in KERNEL_ARGUMENTS.items():
        module = kernels_for(shape, kernel)
        for build in ("serial", "parallel"):
            assert tuple(inspect.signature(getattr(module, f"{kernel}_{build}").py_func).parameters) == names
        backwards = {name: k for k, name in reversed(list(enumerate(names)))}
        assert kernel_arguments(kernel, backwards) == tuple(range(len(names)))
        without_last = {name: 0 for name in names[:-1]}
        with pytest.raises(TypeError, match=f"missing arguments \\['{names[-1]}'\\]"):
            kernel_arguments(kernel, without_last)
        with pytest.raises(TypeError, match="unexpected arguments \\['typo'\\]"):
            kernel_arguments(kernel, {**backwards, "typo": 0})
