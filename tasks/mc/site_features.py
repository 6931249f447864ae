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
from tasks.mc.sites import SiteLattice, SitePairs
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
    """A swap of one chain, whose features, energies, cell and site pairs are ``kept``'s."""

    kept: KeptFeatures
    occupation: np.ndarray  # before the swap
    new_occupation: np.ndarray
    moved: np.ndarray  # the sites whose occupant changed
    touched: np.ndarray  # sorted: the moved sites and every site within the cutoff of one (in kept.cell)


class SiteFeatureModel:
    """Energies of whole configurations and of swaps from kept features (see the module's text)."""

    def __init__(self, descriptor, networks: Sequence[torch.nn.Module]):
        s = self.settings = descriptor.settings
        p = descriptor.symmetry
        self.descriptor = descriptor
        self.networks = list(networks)
        self.cutoff_A = float(max(s.radial_cutoff_A, s.angular_cutoff_A))
        self.n_radial = s.n_radial
        self.width = len(s.angular_m) * len(s.lambdas) * len(s.zetas)
        self.radial_cutoff_A, self.angular_cutoff_A = float(s.radial_cutoff_A), float(s.angular_cutoff_A)
        self.angular_eta = np.array(p.angular_eta_per_A2, dtype=np.float64)
        self.pair_type = np.ascontiguousarray(p.pair_type, dtype=np.int64)
        self.kernels = generated_module(swap_kernel_source(kernel_shape(p, torch.float64)))
        self.element_of_z = np.full(119, -1, dtype=np.int64)
        for e, symbol in enumerate(s.elements):
            self.element_of_z[atomic_numbers[symbol]] = e

    def element_index(self, occupation: np.ndarray) -> np.ndarray:
        """(n_sites,) index in the descriptor's elements of each site's occupant, −1 for a vacancy
        (atomic number 0). Occupations must have passed ``check_elements``."""
        return self.element_of_z[occupation]

    def check_elements(self, occupation: np.ndarray) -> None:
        known = (occupation >= 0) & (occupation < len(self.element_of_z))
        unknown = set(occupation[~known].tolist())
        unknown |= set(occupation[known][self.element_of_z[occupation[known]] < 0].tolist()) - {0}
        if unknown:
            raise ValueError(f"the model knows {self.settings.elements}, not atomic numbers {sorted(unknown)}")

    def table(self, pairs: SitePairs, cell: np.ndarray) -> AngularTable:
        return AngularTable(*self.kernels.angular_table(pairs.segment, pairs.j, pairs.fractional_i,
                                                        pairs.fractional_j, pairs.shift,
                                                        np.asarray(cell, dtype=np.float64), self.angular_cutoff_A,
                                                        self.angular_eta))

    def whole(self, lattice: SiteLattice, requests: Sequence[EnergyRequest]) -> list[KeptFeatures]:
        """Features and site energies of whole configurations (``centres`` None), by the compiled
        descriptor kernels (each configuration's angular table is made when a swap first needs it)."""
        for request in requests:  # swaps only move a chain's atoms: their elements are checked here
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
        kept = request.kept
        moved = np.unique(np.asarray(request.moved, dtype=np.int64))  # a site twice would add its terms twice
        changed = np.zeros(len(request.occupation), dtype=np.bool_)
        changed[moved] = True
        out = np.empty((len(request.touched), kept.features.shape[1]))
        pairs, table = kept.pairs, kept.table
        self.kernels.swap_rows(request.touched, moved, changed, self.element_index(request.occupation),
                               self.element_index(request.new_occupation), kept.features, pairs.segment, pairs.j,
                               pairs.fractional_i, pairs.fractional_j, pairs.shift,
                               np.asarray(kept.cell, dtype=np.float64), table.segment, table.site, table.unit,
                               table.q, self.radial_cutoff_A, self.pair_type, self.n_radial, self.width, out)
        return out

    def swaps(self, requests: Sequence[SwapRequest]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per swap, the touched sites' new features and energies (0 where vacant); the networks run
        once on the occupied rows of every swap."""
        if not requests:
            return []
        rows = [self.swap_rows(r) for r in requests]
        elements = [self.element_index(r.new_occupation[r.touched]) for r in requests]
        flat_rows, flat_elements = np.concatenate(rows), np.concatenate(elements)
        occupied = flat_elements >= 0
        energies = np.zeros(len(flat_rows))
        energies[occupied] = self.energies(flat_rows[occupied], flat_elements[occupied])
        bounds = np.cumsum([0] + [len(r) for r in rows])
        return [(rows[k], energies[bounds[k]:bounds[k + 1]]) for k in range(len(requests))]

    def energies(self, rows: np.ndarray, elements: np.ndarray) -> np.ndarray:
        """Site energies of feature rows (the mean over the networks, one per committee member),
        each by its element's networks."""
        out = np.zeros(len(rows))
        with torch.no_grad():
            # stacked_networks again at every call: it rebuilds after a change of weights, else is cached
            for e, stack in enumerate(stacked_networks(self.networks)):
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


@njit(inline="always")
def cutoff_function(r, r_c):
    """f_c = tanh³(1 − r/r_c) inside r_c (tasks.nnp.descriptor_terms.cutoff_and_slope)."""
    t = np.tanh(max(1.0 - r / r_c, 0.0))
    return t * t * t
