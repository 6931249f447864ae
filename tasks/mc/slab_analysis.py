"""What the slab Monte Carlo measures (the study's section 3.3): metal atoms per layer, the share on
vdW-CrS2 sites, vacancy jumps and how far vacancies moved from their start layer, layer thicknesses,
and when the energy stops falling. Plain functions of a slab and arrays of a chain's state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.mc.slab_build import Slab


def metal_per_layer(slab: Slab, site_atom: np.ndarray) -> np.ndarray:
    """(n_layers,) metal atoms on each metal layer."""
    return np.bincount(slab.site_layer[site_atom >= 0], minlength=slab.n_layers)


def vdw_fraction(slab: Slab, site_atom: np.ndarray) -> float:
    """Share of the metal atoms on vdW-CrS2 sites, the better of the two stackings (slab_build)."""
    occupied = site_atom >= 0
    return float((slab.vdw_sites() & occupied).sum(axis=1).max() / max(occupied.sum(), 1))


def layer_thicknesses_A(slab: Slab, positions: np.ndarray) -> np.ndarray:
    """(n_layers,) thickness of each metal layer: the mean z of the anion layer above it minus that
    of the one below."""
    return np.diff(slab.anion_layer_z(positions))


@dataclass(frozen=True, eq=False)
class JumpCounts:
    horizontal: int  # hops within a layer
    vertical: np.ndarray  # (m,): hops that crossed 1, 2, … m layers

    @property
    def horizontal_per_vertical(self) -> float:
        total = int(self.vertical.sum())
        return self.horizontal / total if total else float("nan")


def jump_counts(jumps: np.ndarray) -> JumpCounts:
    """From a chain's ``jumps`` (n_layers, 2m + 1): accepted hops by the vacancy's origin layer and
    layer offset −m … m."""
    by_offset = np.asarray(jumps).sum(axis=0)
    m = len(by_offset) // 2
    return JumpCounts(int(by_offset[m]), by_offset[m + 1:] + by_offset[:m][::-1])


def vertical_displacements(slab: Slab, vacancy_start_site: np.ndarray, vacancy_site: np.ndarray) -> np.ndarray:
    """(n_vacancies,) each vacancy's layer now minus its layer at the start (up is positive)."""
    return slab.site_layer[vacancy_site] - slab.site_layer[vacancy_start_site]


def displacement_fractions(displacements: np.ndarray, beyond: int = 3) -> np.ndarray:
    """(beyond + 1,) share of vacancies now 0, 1, …, beyond − 1 layers from their start layer, and
    ``beyond`` or more (the study's histogram: 34, 48, 13 and 5% at 0, 1, 2 and ≥ 3 layers)."""
    counts = np.bincount(np.minimum(np.abs(displacements), beyond), minlength=beyond + 1)
    return counts / max(len(displacements), 1)


def plateau_step(steps: np.ndarray, energies_eV: np.ndarray, n_atoms: int, window_steps: int = 10_000,
                 tolerance_eV_per_atom: float = 1e-3) -> int | None:
    """The first recorded step s at which the energy fell by less than the tolerance per atom over
    the ``window_steps`` before it (E(s − window) − E(s) < tolerance × N; the study stops there),
    or None. Needs the energy recorded at s − window (a record interval that divides the window)."""
    energy_at = dict(zip(np.asarray(steps).tolist(), np.asarray(energies_eV).tolist()))
    for step, energy in energy_at.items():
        earlier = energy_at.get(step - window_steps)
        if earlier is not None and step >= window_steps and earlier - energy < tolerance_eV_per_atom * n_atoms:
            return int(step)
    return None
