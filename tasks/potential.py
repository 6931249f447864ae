"""The one interface every potential offers to MD, relaxation, committees, selection, exploration
and ranking, and the one loader for potential files.

A potential is called as ``potential(batch, pairs=None, *, forces=True, stress=False)`` and returns
``energy`` (B,) in eV, ``forces`` (N, 3) in eV/Å and, if asked, ``stress`` (B, 6) in eV/Å³ (ASE's
sign, Voigt order xx yy zz yz xz xy). ``pairs`` is a neighbour list of at least ``cutoff_A`` that
the caller may pass to reuse it (MD keeps one with a skin); a potential that does not need one
ignores it. A committee adds ``force_deviation`` (B,) and ``energy_deviation_per_atom`` (B,).

Optional capabilities, detected by the functions below rather than by the class:
  ``atomic_energy_fn(batch, pairs)``: pair vectors (P, 3) → atomic energies (M, N); a repulsion
      blend needs it, and it gives per-atom energies.
  ``atomic_energies(batch, pairs, only_atoms=None)``: atomic energies (M, N) without gradients, by a
      faster path than ``atomic_energy_fn`` (Monte Carlo sums them over the atoms a move touched;
      ``only_atoms`` names those, and the others' may be 0).
  ``fingerprints(batch)``: per-structure feature vectors for farthest-point selection.
  ``descriptor_networks()``: (descriptor, networks) when the energy is the sum over atoms of the
      networks of their symmetry-function features and nothing else (else None); Monte Carlo then
      keeps the features between steps (tasks.mc.site_features).
  ``shares_evaluation_with(other)`` and ``evaluate_together(members, batch, pairs, ...)``: members of
      a committee that can be evaluated in one pass (Behler–Parrinello networks on one descriptor).

Every file is a ``torch.save``'d dict whose ``"format"`` names the class that reads it; formats
are listed in FORMATS as import paths, so loading imports only what a file needs.
"""

from __future__ import annotations

import hashlib
import importlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.graph import Pairs

# format → "module:Class" whose ``from_payload(payload, dtype, device)`` reads it
FORMATS: dict[str, str] = {
    "campaign-bpnn-1": "tasks.nnp.model:BehlerParrinello",
    "campaign-committee-1": "tasks.nnp.committee:Committee",
    "campaign-blended-1": "tasks.nnp.repulsion:Blended",
    "campaign-ase-calculator-1": "tasks.ase_potential:AseCalculatorPotential",
}


@runtime_checkable
class Potential(Protocol):
    def __call__(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True,
                 stress: bool = False) -> dict[str, torch.Tensor]: ...

    @property
    def cutoff_A(self) -> float: ...

    @property
    def elements(self) -> tuple[str, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def identity(self) -> str: ...

    def to_bytes(self) -> bytes: ...

    def save(self, path: str | Path) -> str: ...


class SavedAsPayload:
    """to_bytes / save / identity for a potential that describes itself as one dict (to_payload)."""

    def to_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.to_payload(), buffer)
        return buffer.getvalue()

    def save(self, path: str | Path) -> str:
        """Write the file; returns its content hash (sha256), which is also identity()."""
        data = self.to_bytes()
        Path(path).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def identity(self) -> str:
        """sha256 of the file content: equal for a potential and its saved and loaded copy."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def register_format(name: str, class_path: str) -> None:
    """Teach load_potential a format: ``class_path`` is "module:Class" with a classmethod
    ``from_payload(payload, dtype, device)``."""
    if FORMATS.get(name, class_path) != class_path:
        raise ValueError(f"format {name!r} is already read by {FORMATS[name]}")
    FORMATS[name] = class_path


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def resolve_device(device: str | torch.device) -> str | torch.device:
    """"auto" takes the worker's GPU when it has one (SLURM jobs with gres), else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def read_payload(data: bytes | str | Path, name: str | None = None) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray)):
        name, data = name or str(data), Path(data).read_bytes()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file at all
        raise ValueError(f"{name or 'data'} is not a potential file: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ValueError(f"{name or 'data'} is not a potential file of a known format "
                         f"(found {found!r}; known: {sorted(FORMATS)})")
    return payload


def from_payload(payload: dict[str, Any], dtype: str | torch.dtype = "float64", device: str | torch.device = "cpu"):
    """The potential a payload describes (also used for potentials nested in another's file)."""
    module, _, name = FORMATS[payload["format"]].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.from_payload(payload, as_dtype(dtype), resolve_device(device))


def load_potential(data: bytes | str | Path, dtype: str | torch.dtype = "float64",
                   device: str | torch.device = "cpu"):
    """Any potential file (bytes or a path), whatever its format."""
    return from_payload(read_payload(data), dtype, device)


@dataclass(frozen=True)
class PotentialFiles:
    """The potential a task loads (the files travel to the worker, not the live model): one file,
    or several averaged as a committee. ``device`` auto: the worker's GPU if it has one."""

    models: tuple[bytes, ...]
    dtype: str = "float64"
    device: str = "auto"

    def load(self):
        from tasks.active.explore import CommitteeFiles

        if len(self.models) > 1:
            return CommitteeFiles(self.models, self.dtype, self.device).load()
        return load_potential(self.models[0], self.dtype, self.device)

    def identity(self) -> str:
        """What keys of work done with this potential depend on: its files' bytes."""
        return hashlib.sha256(b"".join(hashlib.sha256(m).digest() for m in self.models)).hexdigest()


def atomic_energy_factory(potential):
    """The potential's atomic_energy_fn, or None if it cannot give energies per atom."""
    return getattr(potential, "atomic_energy_fn", None)


def per_atom_energies(potential, batch: AtomsBatch, pairs: Pairs | None = None,
                      only_atoms=None) -> torch.Tensor:
    """Atomic energies (M, N) (M = 1 for a single model), for potentials that have them. With
    ``only_atoms`` (N,) bool, the energies of the other atoms may come back as 0 (a potential whose
    fast path can skip them does)."""
    from tasks.nnp.graph import pair_vectors

    pairs = pairs if pairs is not None else batch.pairs(potential.cutoff_A)
    fast = getattr(potential, "atomic_energies", None)
    if fast is not None:
        return fast(batch, pairs, only_atoms)
    factory = atomic_energy_factory(potential)
    if factory is None:
        raise TypeError(f"{type(potential).__name__} does not give energies per atom")
    with torch.no_grad():
        return factory(batch, pairs)(pair_vectors(batch.positions, batch.cells, pairs))
