"""Energies, forces and stress of M networks on one CPU descriptor evaluation (inference).

Three compiled passes and a few matrix products, instead of some forty small torch operations:
  features kernel   pair vectors, G2 and G5 of every atom, per-pair factors kept for the gradient;
  networks          all members and their dE/dG at once (stacked.py);
  gradient kernel   dE/dG of every member → dE/dv per pair, then forces and virial.
Training (gradients with respect to weights) and CUDA use the torch terms (descriptor_terms.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.cpu_kernels import as_numpy, run_kernel, scatter_pair_gradient
from tasks.nnp.derivatives import voigt_stress
from tasks.nnp.descriptors import SymmetryFunctions, SymmetryParameters
from tasks.nnp.feature_layout import FeatureLayout, feature_layout
from tasks.nnp.graph import Pairs
from tasks.nnp.kernel_source import KERNEL_ARGUMENTS, KernelShape
from tasks.nnp.stacked import stacked_networks


def kernel_shape(parameters: SymmetryParameters, dtype: torch.dtype, n_models: int = 0) -> KernelShape:
    """The generated kernels' constants: the descriptor's own parameters, nothing derived here."""
    p = parameters
    return KernelShape(n_elements=p.n_elements, double=dtype == torch.float64, radial_eta_scale=p.radial_eta_scale,
                       angular_etas=p.angular_eta_per_A2, angular_exponent_max=p.angular_exponent_max,
                       lambdas=p.lambdas, zetas=p.zetas, n_models=n_models)


def _segment(pairs: Pairs, n_atoms: int) -> np.ndarray:
    """Pairs of centre i are segment[i]:segment[i + 1] (the list is sorted by centre)."""
    if "segment" not in pairs.derived:
        pairs.derived["segment"] = np.searchsorted(as_numpy(pairs.i), np.arange(n_atoms + 1)).astype(np.int64)
    return pairs.derived["segment"]


class Workspace:
    """Scratch arrays kept between calls: the per-pair arrays are tens of MB for a large batch, and
    fresh ones cost page faults on every call (~2 ms of a 50 ms MD step). Arrays handed out by one
    call are overwritten by the next, so a workspace belongs to one thread (``thread_workspace``)."""

    def __init__(self):
        self._flat: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size, dtype = math.prod(shape), np.dtype(dtype)
        flat = self._flat.get(name)
        if flat is None or flat.dtype != dtype or flat.size < size:
            # headroom: the pair count changes a little with every neighbour-list rebuild
            flat = self._flat[name] = np.empty(size + size // 8 + 64, dtype)
        return flat[:size].reshape(shape)


_THREAD = threading.local()


def thread_workspace() -> Workspace:
    if not hasattr(_THREAD, "workspace"):
        _THREAD.workspace = Workspace()
    return _THREAD.workspace


def _fresh(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)


@dataclass(frozen=True, eq=False)
class KernelFeatures:
    """Features with rows grouped by element (row_of_atom[i] is atom i's row) and the columns of
    ``layout``, and the per-pair factors the gradient kernel reads."""

    descriptor: SymmetryFunctions
    pairs: Pairs
    species: np.ndarray
    row_of_atom: np.ndarray
    counts: list[int]  # atoms per element, in row order
    layout: FeatureLayout
    features: torch.Tensor  # (N, layout.n_features)
    per_pair: dict[str, np.ndarray]
    workspace: Workspace | None
    slopes: bool = True  # whether per_pair holds the gradient kernel's factors

    def in_atom_order(self) -> torch.Tensor:
        return self.features[torch.as_tensor(self.row_of_atom)]

    def pair_gradient(self, grad: torch.Tensor) -> np.ndarray:
        """dE/dG (M, N, F), rows and columns as the features → dE/dv (P, 3, M)."""
        if not self.slopes:
            raise ValueError("these features were computed for energies only (slopes=False)")
        p = self.per_pair
        allocate = self.workspace.array if self.workspace is not None else _fresh
        out = allocate("pair_grad", (len(p["r"]), 3, grad.shape[0]), p["r"].dtype)
        out.fill(0)
        # the per-pair factors the gradient kernel reads, by the names the features kernel wrote them
        factors = {name: p[name] for name in KERNEL_ARGUMENTS["gradient"] if name in p}
        run_kernel(kernel_shape(self.descriptor.symmetry, grad.dtype, grad.shape[0]), "gradient",
                   pj=as_numpy(self.pairs.j), species=self.species, segment=_segment(self.pairs, len(self.species)),
                   row_of_atom=self.row_of_atom, pair_type=self.descriptor.symmetry.pair_type,
                   radial_base=self.layout.radial_base, angular_base=self.layout.angular_base, grad=as_numpy(grad),
                   pair_grad=out, **factors)
        return out


def kernel_features(descriptor: SymmetryFunctions, species: torch.Tensor, batch: AtomsBatch, pairs: Pairs,
                    workspace: Workspace | None = None, layout: FeatureLayout | None = None,
                    slopes: bool = True) -> KernelFeatures:
    """Features (all columns unless ``layout`` says otherwise) and, with ``slopes``, the per-pair
    factors of the gradient; in ``workspace``'s arrays if given (valid until its next use). Without
    slopes (energies only) the kernel writes a fraction of the per-pair arrays: less memory traffic
    on batches of many pairs."""
    s = descriptor.settings
    layout = layout if layout is not None else feature_layout(s)
    n_atoms, n_pairs, dtype = len(species), len(pairs.i), batch.dtype
    species_np = as_numpy(species)
    order = np.argsort(species_np, kind="stable")
    row_of_atom = np.empty(n_atoms, dtype=np.int64)
    row_of_atom[order] = np.arange(n_atoms)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    n_m, n_eta = len(s.radial_m), len(s.angular_m)
    allocate = workspace.array if workspace is not None else _fresh
    # by the features kernel's argument names (kernel_source.py describes them). Angular slots are
    # as many as the angular pairs, but a centre's slots start at its first pair, so they are sized by pairs.
    shapes = {"unit": ((n_pairs, 3), np_dtype), "r": ((n_pairs,), np_dtype), "rad_list": ((n_pairs,), np.int64),
              "rad_r": ((n_pairs,), np_dtype), "rad_rc": ((n_pairs,), np_dtype), "rad_element": ((n_pairs,), np.int64),
              "rad_end": ((n_atoms,), np.int64), "rdg": ((n_m, n_pairs), np_dtype),
              "ang_scratch": ((n_pairs,), np.int64), "ang_list": ((n_pairs,), np.int64),
              "ang_bounds": ((n_atoms, s.n_elements + 1), np.int64), "ang_unit": ((3, n_pairs), np_dtype),
              "ang_r": ((n_pairs,), np_dtype), "ang_rc": ((n_pairs,), np_dtype), "ang_inv_r": ((n_pairs,), np_dtype),
              "aq": ((n_eta, n_pairs), np_dtype), "adq": ((n_eta, n_pairs), np_dtype)}
    per_pair = {name: allocate(name, shape, dtype) for name, (shape, dtype) in shapes.items()}
    feature_array = allocate("features", (n_atoms, layout.n_features), np_dtype)
    feature_array.fill(0)
    features = torch.from_numpy(feature_array)
    p = descriptor.symmetry
    kernel = "features" if slopes else "energy_features"
    run_kernel(kernel_shape(p, dtype), kernel, positions=as_numpy(batch.positions), cells=as_numpy(batch.cells),
               pj=as_numpy(pairs.j), shift=as_numpy(pairs.shift), atom_system=as_numpy(batch.system),
               species=species_np, segment=_segment(pairs, n_atoms), row_of_atom=row_of_atom,
               radial_rc=p.radial_cutoff_A, angular_rc=p.angular_cutoff_A, pair_type=p.pair_type,
               radial_base=layout.radial_base, angular_base=layout.angular_base, out=feature_array, **per_pair)
    counts = np.bincount(species_np, minlength=s.n_elements).tolist()
    return KernelFeatures(descriptor, pairs, species_np, row_of_atom, counts, layout, features, per_pair, workspace,
                          slopes)


def cpu_outputs(descriptor: SymmetryFunctions, networks: Sequence[torch.nn.Module], species: torch.Tensor,
                batch: AtomsBatch, pairs: Pairs, *, forces: bool, stress: bool,
                atom_weights: torch.Tensor | None = None, atomic: bool = False,
                only_atoms: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """energy (M, B), forces (M, N, 3), stress (M, B, 6) of M networks (AtomicNetworks).
    ``atom_weights`` (N,): forces and stress of Σ_i c_i E_i instead of Σ_i E_i (the energy stays
    unweighted); ``atomic``: also ``atomic_energies`` (M, N) in atom order. ``only_atoms`` (N,) bool,
    energies only: the networks run on those atoms alone, the others' energies are 0 (Monte Carlo
    asks for the atoms a move touched; the rest of its systems are their neighbours)."""
    if only_atoms is not None and (forces or stress):
        raise ValueError("only_atoms gives energies only, not forces or stress")
    with torch.no_grad():
        # nothing from the workspace leaves this function: the outputs below are fresh arrays
        layout = feature_layout(descriptor.settings, as_numpy(species))
        want_gradient = forces or stress
        evaluated = kernel_features(descriptor, species, batch, pairs, thread_workspace(), layout, want_gradient)
        blocks = torch.split(evaluated.features, evaluated.counts)
        stacks = [stack.restricted(layout) for stack in stacked_networks(networks)]
        energies, grads = [], []
        wanted_rows = None
        if only_atoms is not None:
            wanted_rows = np.zeros(len(evaluated.row_of_atom), dtype=bool)
            wanted_rows[evaluated.row_of_atom[np.asarray(only_atoms, dtype=bool)]] = True
        first_row = 0
        for stack, block in zip(stacks, blocks):
            rows = slice(first_row, first_row + len(block))
            first_row += len(block)
            if len(block) == 0:
                continue
            if want_gradient:
                e, g = stack.energies_and_gradient(block)
                grads.append(g)
            elif wanted_rows is not None:
                wanted = torch.as_tensor(wanted_rows[rows])
                e = torch.zeros((len(networks), len(block)), dtype=block.dtype)
                if bool(wanted.any()):
                    e[:, wanted] = stack.energies(block[wanted])
            else:
                e = stack.energies(block)
            energies.append(e)
        atomic_energies = torch.cat(energies, dim=1)  # (M, N), rows grouped by element
        system_of_row = torch.empty_like(batch.system)
        system_of_row[torch.as_tensor(evaluated.row_of_atom)] = batch.system
        energy = torch.zeros((len(networks), batch.n_systems), dtype=atomic_energies.dtype).index_add(
            1, system_of_row, atomic_energies)
        out = {"energy": energy}
        if atomic:
            out["atomic_energies"] = atomic_energies[:, torch.as_tensor(evaluated.row_of_atom)]
        if not want_gradient:
            return out
        de_dg = torch.cat(grads, dim=1)
        if atom_weights is not None:
            row_weights = torch.empty_like(atom_weights)
            row_weights[torch.as_tensor(evaluated.row_of_atom)] = atom_weights
            de_dg = de_dg * row_weights[None, :, None].to(de_dg.dtype)
        pair_grad = evaluated.pair_gradient(de_dg)
        p = evaluated.per_pair
        member_forces = np.zeros((len(networks), len(species), 3), dtype=pair_grad.dtype)
        virial = np.zeros((len(networks), batch.n_systems, 3, 3), dtype=pair_grad.dtype)
        scatter_pair_gradient(as_numpy(pairs.i), as_numpy(pairs.j), as_numpy(pairs.system), p["unit"], p["r"],
                              pair_grad, member_forces, virial, stress)
        if forces:
            out["forces"] = torch.from_numpy(member_forces)
        if stress:
            out["stress"] = voigt_stress(torch.from_numpy(virial), batch.volumes())
        return out
