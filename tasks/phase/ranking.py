"""Energies of enumerated cells, by a potential (batched by total atom count, one forward pass per
batch) and by the cluster expansion, without relaxation: the ranking that decides which cells are
relaxed. A task takes a chunk of a few hundred to thousands of cells in their compact form and
rebuilds the structures itself, so nothing large travels to the worker."""

from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from tasks.outcome import Outcome, worker_name
from tasks.phase.cells import without_vacancies
from tasks.phase.lattice import Lattice
from tasks.potential import PotentialFiles


@dataclass(frozen=True, eq=False)
class CellChunk:
    """Some rows of the enumerated-cells table, in compact form."""

    rows: np.ndarray  # (n,) their rows in the table
    vacancy_fraction: np.ndarray  # (n,) x: vacancies per metal site (Lattice.vacancy_fraction of each cell)
    ncells: np.ndarray  # (n,) primitive cells per cell
    hnf: np.ndarray  # (n, 9) supercell matrices (icet's Hermite normal form, row-major)
    occupation: list[np.ndarray]  # per cell, the index of each site's species in the lattice's list

    def __len__(self) -> int:
        return len(self.ncells)


@dataclass(frozen=True)
class ClusterExpansionModel:
    """What a worker needs to evaluate the fitted CE: the cluster space's cutoffs and the fit."""

    cutoffs_A: tuple[float, ...]
    parameters: tuple[float, ...]  # of the energy per site above ``line``
    identity: str  # what it was fitted on (the keys of work ranked with it depend on this)
    line: tuple[float, float, float, float]  # (x_lo, e_lo, x_hi, e_hi) eV per site


def line_at(line: Sequence[float], x: np.ndarray) -> np.ndarray:
    """The straight line through (x_lo, e_lo) and (x_hi, e_hi), at ``x``."""
    x_lo, e_lo, x_hi, e_hi = line
    return e_lo + (np.asarray(x, dtype=float) - x_lo) * (e_hi - e_lo) / (x_hi - x_lo)


@dataclass(frozen=True, eq=False)
class RankedChunk:
    n_atoms: np.ndarray  # (n,) atoms without vacancies
    energy_eV_per_atom: np.ndarray  # (n,) the potential's (a committee's mean)
    deviation_eV_per_atom: np.ndarray  # (n,) a committee's energy spread; NaN for one model
    ce_eV_per_atom: np.ndarray  # (n,) the cluster expansion's; NaN without one


def potential_energies(model, structures: Sequence[Atoms], max_atoms: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Energies (eV) and committee spreads per atom (NaN for one model), in batches of at most
    ``max_atoms`` atoms (a single larger cell goes alone). A batch that fails (an ASE calculator's
    SCF that does not converge) is redone cell by cell, and the cells that fail alone are NaN."""
    energy = np.full(len(structures), np.nan)
    spread = np.full(len(structures), np.nan)
    start = 0
    while start < len(structures):
        stop, atoms = start, 0
        while stop < len(structures) and (stop == start or atoms + len(structures[stop]) <= max_atoms):
            atoms += len(structures[stop])
            stop += 1
        try:
            energy[start:stop], spread[start:stop] = _evaluate(model, structures[start:stop])
        except Exception:  # noqa: BLE001 - one bad cell must not cost its whole batch
            for k in range(start, stop):
                try:
                    energy[k:k + 1], spread[k:k + 1] = _evaluate(model, structures[k:k + 1])
                except Exception:  # noqa: BLE001 - left NaN: unranked, counted in the status
                    pass
        start = stop
    n_atoms = np.array([len(s) for s in structures], dtype=float)
    return energy / n_atoms, spread


def _evaluate(model, structures: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    from tasks.nnp.batch import AtomsBatch

    batch = AtomsBatch.from_atoms(structures, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        out = model(batch, forces=False)
    energy = out["energy"].detach().cpu().numpy()
    spread = out["energy_deviation_per_atom"].detach().cpu().numpy() if "energy_deviation_per_atom" in out \
        else np.full(len(structures), np.nan)
    return energy, spread


def decoration_energies_per_atom(model, chunk: CellChunk, ideal: Sequence[Atoms], max_atoms: int,
                                 lattice: Lattice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """potential_energies of the real cells, for a potential with energies per atom: the cells of
    one supercell share their sites (CellBuilder), so their neighbour pairs are found once per
    supercell and each cell keeps those between its occupied sites. With the ``lattice`` they
    were enumerated on, the pairs come from its primitive cell's neighbours (no search per
    supercell); otherwise, or if a cell's sites are not its lattice points, from a search."""
    from tasks.mc.decorations import decoration_energies
    from tasks.mc.energy import EnergyRequest
    from tasks.mc.sites import SiteLattice, site_pairs

    cutoff = float(model.cutoff_A)
    # each cell's supercell, and the first cell of each
    _, first, supercell = np.unique(np.column_stack([chunk.ncells, chunk.hnf]), axis=0, return_index=True,
                                    return_inverse=True)
    sites = [SiteLattice(ideal[k].get_scaled_positions(), (True, True, True), np.zeros(len(ideal[k]), bool))
             for k in first]
    cells = [ideal[k].cell.array for k in first]
    pairs = primitive_neighbours(lattice, cutoff).pairs(sites, cells, cutoff) if lattice is not None else None
    if pairs is None:
        pairs = [site_pairs(s, cell, cutoff, skin_A=0.0) for s, cell in zip(sites, cells)]
    requests = [EnergyRequest(atoms.numbers, atoms.cell.array, pairs[s], lattice=sites[s])
                for atoms, s in zip(ideal, supercell.ravel())]
    members = decoration_energies(model, requests, max_atoms)
    n_atoms = np.array([np.count_nonzero(a.numbers) for a in ideal], dtype=float)
    spread = members.std(axis=0) / n_atoms if len(members) > 1 else np.full(len(ideal), np.nan)
    return members.mean(axis=0) / n_atoms, spread


@functools.lru_cache(maxsize=8)
def primitive_neighbours(lattice: Lattice, reach_A: float):
    from tasks.mc.lattice_pairs import PrimitiveNeighbours

    primitive = lattice.primitive()
    return PrimitiveNeighbours.of(primitive.get_scaled_positions(), primitive.cell.array, reach_A)


def rank_chunk(chunk: CellChunk, lattice: Lattice, model, ce: ClusterExpansionModel | None,
               max_atoms: int) -> RankedChunk:
    from tasks.potential import atomic_energy_factory

    ideal = [lattice.cell_atoms(h, int(n), occ) for h, n, occ in zip(chunk.hnf, chunk.ncells, chunk.occupation)]
    real = [without_vacancies(a) for a in ideal]
    if getattr(model, "atomic_energies", None) is not None or atomic_energy_factory(model) is not None:
        energy, spread = decoration_energies_per_atom(model, chunk, ideal, max_atoms, lattice)
    else:  # an ASE calculator, say: whole structures
        energy, spread = potential_energies(model, real, max_atoms)
    n_atoms = np.array([len(a) for a in real])
    ce_energy = np.full(len(real), np.nan)
    if ce is not None:
        per_site = lattice.predict(ce, ideal) + line_at(ce.line, chunk.vacancy_fraction)
        ce_energy = per_site * np.array([len(a) for a in ideal]) / n_atoms
    return RankedChunk(n_atoms, energy, spread, ce_energy)


def rank_batch(keys: list[str], chunks: list[CellChunk], lattice: Lattice, potential: PotentialFiles,
               ce: ClusterExpansionModel | None, max_atoms: int = 16384) -> list[Outcome]:
    """The chunks' energies, the potential loaded once; a failure fails its chunk alone."""
    where = worker_name()
    model = potential.load()
    outcomes = []
    for key, chunk in zip(keys, chunks, strict=True):
        start = time.perf_counter()
        try:
            value = rank_chunk(chunk, lattice, model, ce, max_atoms)
        except Exception as exc:  # noqa: BLE001 - recorded per chunk; a later launch retries it
            outcomes.append(Outcome(key, error=f"{type(exc).__name__}: {exc}", error_kind="calculation",
                                    traceback=traceback.format_exc(), duration_s=time.perf_counter() - start,
                                    worker=where))
        else:
            outcomes.append(Outcome(key, value=value, duration_s=time.perf_counter() - start, worker=where))
    return outcomes
