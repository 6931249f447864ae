"""Which feature columns the CPU kernels write for one batch, and where.

A feature block of an element (radial) or element pair (angular) absent from the batch is zero on
every atom, and so is its derivative. Inference leaves such blocks out: an S/Cr/Mo model on a MoS2
or a Cr(1-x)S batch keeps 120 of its 234 features, and the networks' largest matrix products (the
first layer and dE/dG) shrink by as much. Descriptor features for training keep every block.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tasks.nnp.descriptors import DescriptorSettings


@dataclass(frozen=True, eq=False)
class FeatureLayout:
    columns: np.ndarray  # (F_kept,) each written column's index in the full feature vector
    radial_base: np.ndarray  # (E,) first column of the radial block of neighbour element t; -1 if left out
    angular_base: np.ndarray  # (pair types,) first column of the pair type's angular block; -1 if left out
    complete: bool  # every block kept: columns are 0..F-1

    @property
    def n_features(self) -> int:
        return len(self.columns)


def feature_layout(settings: DescriptorSettings, species: np.ndarray | None = None) -> FeatureLayout:
    """Blocks of the elements present in ``species`` (per-atom element indices); all if None."""
    n = settings.n_elements
    present = (tuple(bool(c) for c in np.bincount(species, minlength=n)[:n]) if species is not None
               else (True,) * n)
    width = len(settings.angular_m) * len(settings.lambdas) * len(settings.zetas)
    return _layout(n, len(settings.radial_m), width, tuple(settings.element_pairs), present)


@lru_cache(maxsize=None)
def _layout(n_elements: int, n_m: int, width: int, pair_types: tuple[tuple[int, int], ...],
            present: tuple[bool, ...]) -> FeatureLayout:
    columns: list[np.ndarray] = []
    radial_base = np.full(n_elements, -1, dtype=np.int64)
    for t in range(n_elements):
        if present[t]:
            radial_base[t] = sum(len(c) for c in columns)
            columns.append(t * n_m + np.arange(n_m))
    angular_base = np.full(len(pair_types), -1, dtype=np.int64)
    for k, (a, b) in enumerate(pair_types):
        if present[a] and present[b]:
            angular_base[k] = sum(len(c) for c in columns)
            columns.append(n_elements * n_m + k * width + np.arange(width))
    kept = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    return FeatureLayout(kept, radial_base, angular_base, complete=all(present))
