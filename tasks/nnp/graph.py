"""Neighbour pairs and angular triplets of a batch of systems, from vesin.

Index arrays are computed without gradients (numpy, per system); distance vectors are then
formed in torch from positions and cells, so energies differentiate with respect to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from vesin import NeighborList


@dataclass(frozen=True)
class Pairs:
    """Directed neighbour pairs (i → j) within a cutoff, as global atom indices of the batch."""

    i: torch.Tensor  # (P,) long
    j: torch.Tensor  # (P,) long
    shift: torch.Tensor  # (P, 3) integer cell shifts, as the float dtype
    system: torch.Tensor  # (P,) long: the system of the pair
    # structures derived from this list alone (the force and virial sums of derivatives.py), kept
    # with it so a pair list reused over MD steps builds them once
    derived: dict = field(default_factory=dict, compare=False, repr=False)


def neighbour_pairs(positions: np.ndarray, cells: np.ndarray, pbc: np.ndarray, n_atoms: np.ndarray,
                    cutoff_A: float, dtype: torch.dtype, device: torch.device | str = "cpu",
                    systems: np.ndarray | None = None) -> Pairs:
    """Full (both directions) neighbour list of every system in the batch, or of ``systems`` only
    (indices stay those of the whole batch).

    positions (N, 3), cells (B, 3, 3), pbc (B, 3), n_atoms (B,): systems are consecutive blocks.
    """
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    parts_i, parts_j, parts_s, parts_b = [], [], [], []
    # sorted by centre within a system, and systems are consecutive blocks: the joined list is
    # sorted by centre, as the kernels need. vesin's threads follow torch's (one-thread runs stay so).
    calculator = NeighborList(cutoff=float(cutoff_A), full_list=True, sorted=True, n_threads=torch.get_num_threads())
    for b in range(len(n_atoms)) if systems is None else np.sort(systems):
        start, n = starts[b], n_atoms[b]
        points = np.ascontiguousarray(positions[start:start + n], dtype=np.float64)
        periodic = np.asarray(pbc[b], dtype=bool)
        box = cells[b] if periodic.any() else np.zeros((3, 3))
        i, j, s = calculator.compute(points=points, box=np.asarray(box, dtype=np.float64), periodic=periodic,
                                     quantities="ijS")
        parts_i.append(i.astype(np.int64) + start)
        parts_j.append(j.astype(np.int64) + start)
        parts_s.append(s)
        parts_b.append(np.full(len(i), b, dtype=np.int64))
    i, j, s, b = (np.concatenate(parts) for parts in (parts_i, parts_j, parts_s, parts_b))
    return Pairs(
        i=torch.as_tensor(i, dtype=torch.long, device=device),
        j=torch.as_tensor(j, dtype=torch.long, device=device),
        shift=torch.as_tensor(s.reshape(-1, 3), dtype=dtype, device=device),
        system=torch.as_tensor(b, dtype=torch.long, device=device),
    )


def replace_systems(pairs: Pairs, fresh: Pairs, systems: np.ndarray, n_systems: int) -> Pairs:
    """``pairs`` with the blocks of ``systems`` taken from ``fresh`` (pairs of those systems only).
    Both lists are sorted by centre and systems are consecutive atom blocks, so each system's
    pairs are one contiguous block: the result is these blocks in system order, copied as runs of
    consecutive systems from the same list (a few runs: MD rebuilds a few systems per step)."""
    old_bounds = np.searchsorted(pairs.system.cpu().numpy(), np.arange(n_systems + 1))
    new_bounds = np.searchsorted(fresh.system.cpu().numpy(), np.arange(n_systems + 1))
    taken = np.zeros(n_systems, dtype=bool)
    taken[systems] = True
    starts = np.flatnonzero(np.diff(taken, prepend=~taken[0])) if n_systems else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n_systems)
    runs = [(fresh, new_bounds) if taken[first] else (pairs, old_bounds) for first in starts]
    return Pairs(*(torch.cat([getattr(source, name)[bounds[first]:bounds[end]]
                              for (source, bounds), first, end in zip(runs, starts, ends)])
                   for name in ("i", "j", "shift", "system")))


def index_maps(atoms: torch.Tensor, systems: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New index of each kept atom and system (bool masks), −1 for dropped ones (order kept)."""
    def renumber(mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, torch.cumsum(mask.long(), 0) - 1, torch.full_like(mask, -1, dtype=torch.long))

    return renumber(atoms), renumber(systems)


def subset_pairs(pairs: Pairs, atom_map: torch.Tensor, system_map: torch.Tensor) -> Pairs:
    """The pairs among kept atoms, renumbered. ``atom_map`` (N,) and ``system_map`` (B,) give each
    old atom and system its new index, −1 if dropped. Both maps keep order, so the list stays sorted
    by centre and each system's pairs stay a valid list with the same skin: the systems that keep
    all their atoms keep their neighbours unchanged."""
    keep = (atom_map[pairs.i] >= 0) & (atom_map[pairs.j] >= 0)
    return Pairs(i=atom_map[pairs.i[keep]], j=atom_map[pairs.j[keep]], shift=pairs.shift[keep],
                 system=system_map[pairs.system[keep]])


def pair_vectors(positions: torch.Tensor, cells: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """r_j + S·cell − r_i for every pair: differentiable in positions and cells."""
    offsets = torch.einsum("pk,pkx->px", pairs.shift, cells[pairs.system])
    return positions[pairs.j] - positions[pairs.i] + offsets


def triplets(center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs sorted by center atom: every (a, b), a < b, of two pairs sharing their center.

    Vectorised: pair a at local position l in a segment of c pairs partners with the c-l-1
    pairs after it.
    """
    n = len(center)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    boundaries = np.flatnonzero(np.diff(center)) + 1
    seg_start = np.concatenate([[0], boundaries])
    seg_len = np.diff(np.concatenate([seg_start, [n]]))
    local = np.arange(n) - np.repeat(seg_start, seg_len)
    partners = np.repeat(seg_len, seg_len) - local - 1
    a = np.repeat(np.arange(n), partners)
    # offset of each b from its a: 1, 2, ..., partners
    first = np.concatenate([[0], np.cumsum(partners)[:-1]])
    b = a + 1 + (np.arange(len(a)) - np.repeat(first, partners))
    return a, b
