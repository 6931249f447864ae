"""Trust-window classification and candidate selection (DP-GEN's model deviation rule)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

ACCURATE, CANDIDATE, FAILED = "accurate", "candidate", "failed"
HISTOGRAM_EDGES_EV_PER_A = np.concatenate([np.linspace(0.0, 0.5, 26), [np.inf]])  # 0.02 eV/Å bins + overflow


def classify(deviation_eV_per_A: np.ndarray, trust_lo: float, trust_hi: float) -> np.ndarray:
    """accurate below trust_lo, candidate in [trust_lo, trust_hi), failed at or above trust_hi."""
    d = np.asarray(deviation_eV_per_A)
    return np.where(d < trust_lo, ACCURATE, np.where(d < trust_hi, CANDIDATE, FAILED))


def deviation_histogram(deviation_eV_per_A: np.ndarray) -> np.ndarray:
    return np.histogram(np.asarray(deviation_eV_per_A), bins=HISTOGRAM_EDGES_EV_PER_A)[0]


def select_candidates(fingerprints: np.ndarray, deviation: np.ndarray, trajectory: Sequence[str],
                      step: np.ndarray, max_candidates: int, min_separation: int) -> list[int]:
    """Farthest-point sampling on structure fingerprints among candidate frames, starting from
    the most deviating one; frames of one trajectory closer than ``min_separation`` steps to a
    chosen one are skipped. Returns indices into the given arrays, in the order chosen."""
    n = len(deviation)
    if n == 0 or max_candidates <= 0:
        return []
    x = np.asarray(fingerprints, dtype=np.float64)
    trajectory = np.asarray(trajectory)
    allowed = np.ones(n, dtype=bool)
    chosen: list[int] = []
    distance = np.full(n, np.inf)
    nxt = int(np.argmax(deviation))
    while True:
        chosen.append(nxt)
        near = (trajectory == trajectory[nxt]) & (np.abs(step - step[nxt]) < min_separation)
        allowed &= ~near
        distance = np.minimum(distance, np.linalg.norm(x - x[nxt], axis=1))
        if len(chosen) >= max_candidates or not allowed.any():
            return chosen
        nxt = int(np.flatnonzero(allowed)[np.argmax(distance[allowed])])


def structure_fingerprints(model, structures, chunk: int = 256) -> np.ndarray:
    """(F, n_elements · n_features): per structure, the mean of the model's normalised descriptors
    over each element's atoms (zeros for an absent element). Structures are evaluated as batches."""
    import torch

    from tasks.nnp.batch import AtomsBatch
    from tasks.nnp.model import descriptor_features

    n_el = model.settings.descriptor.n_elements
    out = [np.zeros((0, n_el * model.settings.descriptor.n_features))]
    with torch.no_grad():
        for lo in range(0, len(structures), chunk):
            batch = AtomsBatch.from_atoms([s.to_atoms() for s in structures[lo:lo + chunk]], dtype=model.dtype,
                                          device=model.device)
            pairs = batch.pairs(model.cutoff_A)
            species = model.species(batch.numbers)
            features = descriptor_features(model.descriptor, species, batch, pairs)
            x = (features - model.atomic.feature_mean[species]) / model.atomic.feature_std[species]
            group = batch.system * n_el + species  # (structure, element) of every atom
            sums = torch.zeros((batch.n_systems * n_el, x.shape[1]), dtype=x.dtype, device=x.device)
            sums.index_add_(0, group, x)
            counts = torch.bincount(group, minlength=batch.n_systems * n_el).clamp(min=1).to(x.dtype)
            out.append((sums / counts[:, None]).reshape(batch.n_systems, -1).cpu().numpy())
    return np.concatenate(out)
