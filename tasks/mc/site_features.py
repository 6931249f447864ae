"""Symmetry-function features of a chain's atoms kept between steps, so that a swap costs only the
terms it changes.

A Behler–Parrinello atom's energy is its element's network of its features (tasks.nnp.descriptors:
G2 radial, G5 angular, r_s = 0). On a site lattice a swap changes an atom's features only through
terms with a moved site: the radial term of a moved neighbour, and the angular terms of neighbour
pairs with a moved member. A chain keeps the features and energies of its occupied sites; a swap's
new features of an unmoved atom near it are the kept ones, less the terms of the old occupants,
plus those of the new ones; an atom arriving on a site gets its features whole. The networks then
run on those atoms only, all chains of a step together.

Angular terms read a table of each site's neighbours within the angular cutoff in the chain's cell
(unit vector and exp(−η r²) f_c(r)), made afresh when the cell changes. Whole cells (a chain's
start and cell moves) go through the descriptor's compiled kernels. Supported: models that give
their descriptor and networks (``descriptor_networks``: Behler–Parrinello models and committees
evaluated on one descriptor), in float64 on a CPU, without per-element-pair cutoffs; for any other
potential tasks.mc.energy's general path evaluates the atoms near a move whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers
from numba import njit

from tasks.mc.energy import EnergyRequest, local_batch
from tasks.mc.sites import SiteLattice, SitePairs, pair_vector
from tasks.mc.swap_kernel_source import swap_kernel_source
from tasks.nnp.cpu_inference import kernel_features, kernel_shape, thread_workspace
from tasks.nnp.cpu_kernels import generated_module
from tasks.nnp.feature_layout import feature_layout
from tasks.nnp.stacked import stacked_networks


@dataclass(frozen=True, eq=False)
class AngularTable:
    """Each site's neighbours within the angular cutoff in one cell: table rows segment[s]:segment[s + 1]."""

    segment: np.ndarray  # (n_sites + 1,)
    site: np.ndarray  # (A,) the neighbour's site
    unit: np.ndarray  # (A, 3) unit vector from the centre
    q: np.ndarray  # (A, n_η) exp(−η r²) f_c(r)


@dataclass(eq=False)
class KeptFeatures:
    """One chain's features (n_sites, F) and site energies (n_sites,) (rows of vacant sites unused),
    and the angular table of its cell, made when first needed (a cell proposal may be rejected)."""

    features: np.ndarray
    energies: np.ndarray
    model: "SiteFeatureModel"
    pairs: SitePairs
    cell: np.ndarray
    _table: AngularTable | None = None

    @property
    def table(self) -> AngularTable:
        if self._table is None:
            self._table = self.model.table(self.pairs, self.cell)
        return self._table


@dataclass(frozen=True, eq=False)
class SwapRequest:
    kept: KeptFeatures
    occupation: np.ndarray  # before the swap
    new_occupation: np.ndarray
    moved: np.ndarray  # the sites whose occupant changed
    touched: np.ndarray  # sorted: the moved sites and every site within the cutoff of one
    cell: np.ndarray
    pairs: SitePairs


class SiteFeatureModel:
    """Energies of whole configurations and of swaps from kept features (see the module's text)."""

    def __init__(self, descriptor, networks: Sequence[torch.nn.Module]):
        s = self.settings = descriptor.settings
        p = descriptor.symmetry
        self.descriptor = descriptor
        self.stacks = stacked_networks(list(networks))
        self.cutoff_A = float(max(s.radial_cutoff_A, s.angular_cutoff_A))
        self.n_m = len(s.radial_m)
        self.n_radial = s.n_radial
        self.width = len(s.angular_m) * len(s.lambdas) * len(s.zetas)
        self.radial_cutoff_A, self.angular_cutoff_A = float(s.radial_cutoff_A), float(s.angular_cutoff_A)
        self.angular_eta = np.array(p.angular_eta_per_A2, dtype=np.float64)
        self.pair_type = np.ascontiguousarray(p.pair_type, dtype=np.int64)
        self.kernels = generated_module(swap_kernel_source(kernel_shape(p, torch.float64), self.n_m))
        self.element_of_z = np.full(119, -1, dtype=np.int64)
        for e, symbol in enumerate(s.elements):
            self.element_of_z[atomic_numbers[symbol]] = e

    def elements(self, occupation: np.ndarray) -> np.ndarray:
        """(n_sites,) element index of each site's occupant, −1 for a vacancy (atomic number 0)."""
        return self.element_of_z[occupation]

    def check_elements(self, occupation: np.ndarray) -> None:
        unknown = sorted(set(occupation[self.elements(occupation) < 0].tolist()) - {0})
        if unknown:
            raise ValueError(f"the model knows {self.settings.elements}, not atomic numbers {unknown}")

    def table(self, pairs: SitePairs, cell: np.ndarray) -> AngularTable:
        return AngularTable(*_angular_table(pairs.segment, pairs.j, pairs.fractional_i, pairs.fractional_j,
                                            pairs.shift, np.asarray(cell, dtype=np.float64), self.angular_cutoff_A,
                                            self.angular_eta))

    def whole(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> list[KeptFeatures]:
        """Features and site energies of whole configurations (``centres`` None), by the compiled
        descriptor kernels (each configuration's angular table is made when a swap first needs it)."""
        for request in requests:  # a swap keeps the elements a chain has: checked here, once
            self.check_elements(request.occupation)
        batch, pairs, atoms, sites = local_batch(lattice, requests, torch.float64, "cpu")
        species = torch.as_tensor(self.element_of_z[batch.numbers.numpy()])
        evaluated = kernel_features(self.descriptor, species, batch, pairs, thread_workspace(),
                                    feature_layout(self.settings), slopes=False)
        rows = evaluated.features.numpy()[evaluated.row_of_atom[atoms]]  # a copy: the workspace is reused
        energies = self.energies(rows, species.numpy()[atoms])
        system = batch.system.numpy()[atoms]
        out = []
        for r, request in enumerate(requests):
            mine = system == r
            features = np.zeros((lattice.n_sites, rows.shape[1]))
            site_energies = np.zeros(lattice.n_sites)
            features[sites[mine]] = rows[mine]
            site_energies[sites[mine]] = energies[mine]
            out.append(KeptFeatures(features, site_energies, self, request.pairs, request.cell))
        return out

    def swap_rows(self, request: SwapRequest) -> np.ndarray:
        """The new features (len(touched), F) of the touched sites after the swap (zero where vacant)."""
        changed = np.zeros(len(request.occupation), dtype=np.bool_)
        changed[request.moved] = True
        out = np.empty((len(request.touched), request.kept.features.shape[1]))
        pairs, table = request.pairs, request.kept.table
        self.kernels.swap_rows(request.touched, np.asarray(request.moved, dtype=np.int64), changed,
                               self.elements(request.occupation), self.elements(request.new_occupation),
                               request.kept.features, pairs.segment, pairs.j, pairs.fractional_i, pairs.fractional_j,
                               pairs.shift, np.asarray(request.cell, dtype=np.float64), table.segment, table.site,
                               table.unit, table.q, self.radial_cutoff_A, self.pair_type, self.n_radial, self.width,
                               out)
        return out

    def swaps(self, requests: Sequence[SwapRequest]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per swap, the touched sites' new features and energies (0 where vacant); the networks run
        once on the occupied rows of every swap."""
        if not requests:
            return []
        rows = [self.swap_rows(r) for r in requests]
        elements = [self.elements(r.new_occupation[r.touched]) for r in requests]
        flat_rows, flat_elements = np.concatenate(rows), np.concatenate(elements)
        occupied = flat_elements >= 0
        energies = np.zeros(len(flat_rows))
        energies[occupied] = self.energies(flat_rows[occupied], flat_elements[occupied])
        bounds = np.cumsum([0] + [len(r) for r in rows])
        return [(rows[k], energies[bounds[k]:bounds[k + 1]]) for k in range(len(requests))]

    def energies(self, rows: np.ndarray, elements: np.ndarray) -> np.ndarray:
        """Site energies of feature rows (the members' mean), each by its element's networks."""
        out = np.zeros(len(rows))
        with torch.no_grad():
            for e, stack in enumerate(self.stacks):
                mine = np.flatnonzero(elements == e)
                if len(mine):
                    out[mine] = stack.energies(torch.from_numpy(rows[mine])).mean(dim=0).numpy()
        return out


def site_features_of(model) -> SiteFeatureModel | None:
    """An engine energy model's kept-features path (its ``site_features()``), if it has one."""
    give = getattr(model, "site_features", None)
    return give() if callable(give) else None


def site_feature_model(potential) -> SiteFeatureModel | None:
    """The kept-features path for ``potential``, or None where it does not apply (see the module's text)."""
    give = getattr(potential, "descriptor_networks", None)
    found = give() if callable(give) else None
    if found is None or potential.dtype != torch.float64 or torch.device(potential.device).type != "cpu":
        return None
    descriptor, networks = found
    s = descriptor.settings
    if s.radial_pair_cutoffs_A or s.angular_pair_cutoffs_A:
        return None
    return SiteFeatureModel(descriptor, networks)


@njit(cache=True)
def cutoff_function(r, r_c):
    """f_c = tanh³(1 − r/r_c) inside r_c (tasks.nnp.descriptor_terms.cutoff_and_slope)."""
    t = np.tanh(max(1.0 - r / r_c, 0.0))
    return t * t * t


@njit(cache=True)
def _angular_table(segment, site_j, fractional_i, fractional_j, shift, cell, r_c, etas):
    """AngularTable's arrays for every site: its pairs (site pair list) within r_c, in list order."""
    n_sites = len(segment) - 1
    keep = np.zeros(len(site_j), np.bool_)
    r = np.empty(len(site_j))
    for p in range(len(site_j)):
        x, y, z = pair_vector(p, fractional_i, fractional_j, shift, cell)
        r[p] = np.sqrt(x * x + y * y + z * z)
        keep[p] = r[p] < r_c
    n = np.count_nonzero(keep)
    table_segment = np.zeros(n_sites + 1, np.int64)
    site = np.empty(n, np.int64)
    unit = np.empty((n, 3))
    q = np.empty((n, len(etas)))
    row = 0
    for s in range(n_sites):
        for p in range(segment[s], segment[s + 1]):
            if keep[p]:
                x, y, z = pair_vector(p, fractional_i, fractional_j, shift, cell)  # again: cheaper than keeping it
                site[row] = site_j[p]
                unit[row, 0], unit[row, 1], unit[row, 2] = x / r[p], y / r[p], z / r[p]
                fc = cutoff_function(r[p], r_c)
                for e in range(len(etas)):
                    q[row, e] = np.exp(-etas[e] * r[p] * r[p]) * fc
                row += 1
        table_segment[s + 1] = row
    return table_segment, site, unit, q
