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


def structure_fingerprints(potential, structures, chunk: int = 256) -> np.ndarray:
    """(F, D): one feature vector per structure, for farthest-point selection. A potential with the
    fingerprints capability gives its own (Behler–Parrinello: the mean normalised descriptor of
    each element's atoms); any other gets radial_distribution_fingerprints. Structures are
    evaluated as batches of ``chunk``."""
    import torch

    from tasks.nnp.batch import AtomsBatch

    own = getattr(potential, "fingerprints", None)
    elements = fingerprint_elements(potential, structures)
    out = []
    with torch.no_grad():
        for lo in range(0, len(structures), chunk):
            batch = AtomsBatch.from_atoms([s.to_atoms() for s in structures[lo:lo + chunk]], dtype=potential.dtype,
                                          device=potential.device)
            x = own(batch) if own is not None else radial_distribution_fingerprints(batch, elements)
            out.append(x.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def fingerprint_elements(potential, structures) -> tuple[int, ...]:
    """Atomic numbers the fallback fingerprints are laid out by: the potential's elements, or
    (a potential for any element) those in the structures."""
    from ase.data import atomic_numbers

    if potential.elements:
        return tuple(sorted(atomic_numbers[e] for e in potential.elements))
    return tuple(sorted({int(z) for s in structures for z in s.numbers}))


def radial_distribution_fingerprints(batch, atomic_numbers: Sequence[int], cutoff_A: float = 5.0,
                                     width_A: float = 0.1):
    """(B, n_el² · n_bins): per structure and ordered element pair (a, b), the Gaussian-smeared
    histogram of b-neighbour distances around each a atom, averaged over the a atoms (zeros for
    an absent element). For potentials without descriptors of their own."""
    import torch

    from tasks.nnp.graph import pair_vectors

    n_el = len(atomic_numbers)
    lookup = torch.full((int(batch.numbers.max()) + 1,), -1, dtype=torch.long, device=batch.device)
    known = [z for z in atomic_numbers if z < len(lookup)]
    lookup[list(known)] = torch.tensor([atomic_numbers.index(z) for z in known], dtype=torch.long,
                                       device=batch.device)
    species = lookup[batch.numbers]
    if bool((species < 0).any()):
        raise ValueError(f"fingerprints laid out for atomic numbers {list(atomic_numbers)}")
    centres = torch.arange(width_A, cutoff_A, width_A, dtype=batch.dtype, device=batch.device)
    pairs = batch.pairs(cutoff_A)
    r = torch.linalg.norm(pair_vectors(batch.positions, batch.cells, pairs), dim=1)
    smeared = torch.exp(-0.5 * ((r[:, None] - centres[None]) / width_A) ** 2)  # (P, n_bins)
    group = (pairs.system * n_el + species[pairs.i]) * n_el + species[pairs.j]
    sums = torch.zeros((batch.n_systems * n_el * n_el, len(centres)), dtype=r.dtype, device=r.device)
    sums.index_add_(0, group, smeared)
    counts = torch.bincount(batch.system * n_el + species, minlength=batch.n_systems * n_el).clamp(min=1)
    per_atom = sums.reshape(batch.n_systems, n_el, n_el, -1) / counts.reshape(batch.n_systems, n_el, 1, 1).to(r.dtype)
    return per_atom.reshape(batch.n_systems, -1)
