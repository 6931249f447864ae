"""The Behler–Parrinello model: one feed-forward network per element over symmetry functions.

E = Σ_i [ e_ref(Z_i) + NN_Zi(x_i) − NN_Zi(x_i⁰) ], with x_i the normalised features of atom i and
x_i⁰ those of an isolated atom (all features zero). An isolated atom therefore has exactly its
reference energy, and cohesive energies come out as the data say.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers

from tasks.nnp.batch import AtomsBatch
from tasks.nnp.cpu_inference import cpu_outputs, kernel_features
from tasks.nnp.derivatives import outputs_from_pair_gradient, potential_outputs, single_model
from tasks.nnp.descriptors import DescriptorSettings, SymmetryFunctions
from tasks.nnp.graph import Pairs, pair_vectors
from tasks.potential import SavedAsPayload, read_payload

FORMAT = "campaign-bpnn-1"


@dataclass(frozen=True)
class ModelSettings:
    descriptor: DescriptorSettings
    hidden: tuple[int, ...] = (32, 32)

    def to_dict(self) -> dict:
        return {"descriptor": self.descriptor.to_dict(), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSettings":
        d = dict(data["descriptor"])
        for key in ("elements", "radial_m", "angular_m", "zetas", "lambdas"):
            d[key] = tuple(d[key])
        return cls(descriptor=DescriptorSettings(**d), hidden=tuple(data["hidden"]))


def _element_net(n_in: int, hidden: tuple[int, ...]) -> torch.nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.Tanh()]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


class AtomicNetworks(torch.nn.Module):
    """Per-element networks plus normalisation and reference energies (no descriptors)."""

    def __init__(self, settings: ModelSettings):
        super().__init__()
        d = settings.descriptor
        self.nets = torch.nn.ModuleList(_element_net(d.n_features, settings.hidden) for _ in d.elements)
        self.register_buffer("feature_mean", torch.zeros(d.n_elements, d.n_features))
        self.register_buffer("feature_std", torch.ones(d.n_elements, d.n_features))
        self.register_buffer("reference_energy_eV", torch.zeros(d.n_elements))

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Atomic energies (N,)."""
        x = (features - self.feature_mean[species]) / self.feature_std[species]
        energies = self.reference_energy_eV[species].clone()
        for e, net in enumerate(self.nets):
            mask = species == e
            if not bool(mask.any()):
                continue
            isolated = (-self.feature_mean[e] / self.feature_std[e])[None]
            energies = energies.masked_scatter(mask, energies[mask] + (net(x[mask]) - net(isolated)).squeeze(-1))
        return energies


class BehlerParrinello(torch.nn.Module, SavedAsPayload):
    def __init__(self, settings: ModelSettings, dtype: torch.dtype = torch.float64, seed: int = 0):
        super().__init__()
        self.settings = settings
        self.seed = seed
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.descriptor = SymmetryFunctions(settings.descriptor)
            self.atomic = AtomicNetworks(settings)
        self.to(dtype)
        z = [atomic_numbers[s] for s in settings.descriptor.elements]
        lookup = torch.full((max(z) + 1,), -1, dtype=torch.long)
        lookup[z] = torch.arange(len(z))
        self.register_buffer("species_of_z", lookup)

    @property
    def dtype(self) -> torch.dtype:
        return self.atomic.feature_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.atomic.feature_mean.device

    @property
    def cutoff_A(self) -> float:
        return self.descriptor.max_cutoff_A

    @property
    def elements(self) -> tuple[str, ...]:
        return self.settings.descriptor.elements

    def descriptor_networks(self):
        """(descriptor, [networks]): the energy is the sum over atoms of the networks of their
        features, nothing else (Monte Carlo keeps features between steps: tasks.mc.site_features)."""
        return self.descriptor, [self.atomic]

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        if int(numbers.max()) >= len(self.species_of_z) or bool((self.species_of_z[numbers] < 0).any()):
            missing = sorted(set(numbers.tolist()) - {atomic_numbers[s] for s in self.settings.descriptor.elements})
            raise ValueError(f"model knows {self.settings.descriptor.elements}, not atomic numbers {missing}")
        return self.species_of_z[numbers]

    def atomic_energy_fn(self, batch: AtomsBatch, pairs: Pairs):
        """pair vectors (P, 3) → atomic energies (1, N)."""
        species = self.species(batch.numbers)

        def atomic_energies(vectors: torch.Tensor) -> torch.Tensor:
            return self.atomic(self.descriptor(vectors, species, pairs), species)[None]

        return atomic_energies

    def forward(self, batch: AtomsBatch, pairs: Pairs | None = None, *, forces: bool = True, stress: bool = False,
                create_graph: bool = False) -> dict[str, torch.Tensor]:
        """energy (B,), forces (N, 3), stress (B, 6) in eV, eV/Å, eV/Å³. create_graph keeps forces
        differentiable with respect to the weights (training)."""
        if create_graph:
            out = potential_outputs(self.atomic_energy_fn, self.cutoff_A, batch, pairs, forces=forces, stress=stress,
                                    create_graph=True)
        else:
            out = shared_descriptor_outputs(self.descriptor, [self.atomic], self.species(batch.numbers), batch, pairs,
                                            forces=forces, stress=stress)
        return single_model(out)

    # -- capabilities (tasks/potential.py) -------------------------------------------------------
    def shares_evaluation_with(self, other) -> bool:
        """Members with equal descriptor settings run on one descriptor evaluation."""
        return isinstance(other, BehlerParrinello) and other.settings.descriptor == self.settings.descriptor

    def evaluate_together(self, members, batch: AtomsBatch, pairs: Pairs | None, *, forces: bool,
                          stress: bool) -> dict[str, torch.Tensor]:
        """energy (M, B), forces (M, N, 3), stress (M, B, 6) of members that share this descriptor."""
        return shared_descriptor_outputs(self.descriptor, [m.atomic for m in members], self.species(batch.numbers),
                                         batch, pairs, forces=forces, stress=stress)

    def atomic_energy_fn_together(self, members, batch: AtomsBatch, pairs: Pairs):
        """pair vectors (P, 3) → atomic energies (M, N) of members sharing this descriptor."""
        species = self.species(batch.numbers)

        def atomic_energies(vectors: torch.Tensor) -> torch.Tensor:
            features = self.descriptor(vectors, species, pairs)
            return torch.stack([m.atomic(features, species) for m in members])

        return atomic_energies

    def atomic_energies(self, batch: AtomsBatch, pairs: Pairs, only_atoms: np.ndarray | None = None) -> torch.Tensor:
        """Atomic energies (1, N), no gradients: on a CPU the compiled kernels (see
        atomic_energies_together for ``only_atoms``)."""
        return self.atomic_energies_together([self], batch, pairs, only_atoms)

    def atomic_energies_together(self, members, batch: AtomsBatch, pairs: Pairs,
                                 only_atoms: np.ndarray | None = None) -> torch.Tensor:
        """Atomic energies (M, N) of members sharing this descriptor, no gradients; with
        ``only_atoms`` (N,) bool those of the others may be 0 (the compiled kernels skip them)."""
        with torch.no_grad():
            return shared_descriptor_outputs(self.descriptor, [m.atomic for m in members], self.species(batch.numbers),
                                             batch, pairs, forces=False, stress=False, atomic=True,
                                             only_atoms=only_atoms)["atomic_energies"]

    def fingerprints(self, batch: AtomsBatch, pairs: Pairs | None = None) -> torch.Tensor:
        """(B, n_elements · n_features): per structure, the mean of the normalised descriptors over
        each element's atoms (zeros for an absent element)."""
        pairs = pairs if pairs is not None else batch.pairs(self.cutoff_A)
        n_el = self.settings.descriptor.n_elements
        species = self.species(batch.numbers)
        with torch.no_grad():
            features = descriptor_features(self.descriptor, species, batch, pairs)
            x = (features - self.atomic.feature_mean[species]) / self.atomic.feature_std[species]
            group = batch.system * n_el + species  # (structure, element) of every atom
            sums = torch.zeros((batch.n_systems * n_el, x.shape[1]), dtype=x.dtype, device=x.device)
            sums.index_add_(0, group, x)
            counts = torch.bincount(group, minlength=batch.n_systems * n_el).clamp(min=1).to(x.dtype)
            return (sums / counts[:, None]).reshape(batch.n_systems, -1)

    # -- persistence --------------------------------------------------------------------------
    def hyperparameters(self) -> dict:
        return {"settings": self.settings.to_dict(), "seed": self.seed}

    def to_payload(self) -> dict:
        """Model and hyperparameters (float64 weights on the CPU, whatever the model's dtype)."""
        state = {k: v.detach().cpu().to(torch.float64) for k, v in self.state_dict().items()}
        return {"format": FORMAT, "hyperparameters": self.hyperparameters(), "state": state}

    @classmethod
    def from_payload(cls, payload: dict, dtype: torch.dtype = torch.float64,
                     device: str | torch.device = "cpu") -> "BehlerParrinello":
        hp = payload["hyperparameters"]
        model = cls(ModelSettings.from_dict(hp["settings"]), dtype=torch.float64, seed=hp["seed"])
        model.load_state_dict(payload["state"])
        return model.to(device=device, dtype=dtype)

    @classmethod
    def from_bytes(cls, data: bytes, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                   name: str = "model") -> "BehlerParrinello":
        payload = read_payload(data, name)
        if payload["format"] != FORMAT:
            raise ValueError(f"{name} is not a campaign BPNN model file (its format is {payload['format']})")
        return cls.from_payload(payload, dtype, device)

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> "BehlerParrinello":
        return cls.from_bytes(Path(path).read_bytes(), dtype, device, name=str(path))


def shared_descriptor_outputs(descriptor: SymmetryFunctions, networks, species: torch.Tensor, batch: AtomsBatch,
                              pairs: Pairs | None, *, forces: bool, stress: bool, atom_weights: torch.Tensor | None = None,
                              atomic: bool = False, only_atoms: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """energy (M, B), forces (M, N, 3), stress (M, B, 6) of M networks on one descriptor evaluation;
    with ``atom_weights`` (N,) forces and stress are those of Σ_i c_i E_i (a repulsion blend's
    share of the network), with ``atomic`` the atomic energies (M, N) come too (on a CPU only those
    of ``only_atoms``, if given: cpu_inference.cpu_outputs).

    On a CPU the compiled kernels do it (cpu_inference.py). Elsewhere autograd runs only through
    the small per-element networks (dE/dG); the descriptor's analytic factors are contracted with
    all M gradients at once (DescriptorTerms.vector_grad)."""
    pairs = pairs if pairs is not None else batch.pairs(descriptor.max_cutoff_A)
    if batch.device.type == "cpu":
        return cpu_outputs(descriptor, networks, species, batch, pairs, forces=forces, stress=stress,
                           atom_weights=atom_weights, atomic=atomic, only_atoms=only_atoms)
    with torch.no_grad():
        vectors = pair_vectors(batch.positions, batch.cells, pairs)
        terms = descriptor.terms(vectors, species, pairs)
        features = terms.features()
    if not (forces or stress):
        with torch.no_grad():
            energies = torch.stack([net(features, species) for net in networks])
        out = outputs_from_pair_gradient(batch, pairs, vectors, energies, None, forces=False, stress=False)
        return {**out, "atomic_energies": energies} if atomic else out
    with torch.enable_grad():
        x = features.requires_grad_()
        energies = torch.stack([net(x, species) for net in networks])
        de_dg = torch.stack([torch.autograd.grad(energies[m].sum(), x, retain_graph=m < len(networks) - 1)[0]
                             for m in range(len(networks))])
    with torch.no_grad():
        if atom_weights is not None:  # E_i depends on G_i alone: weighting E_i weights its row of dE/dG
            de_dg = de_dg * atom_weights[None, :, None]
        out = outputs_from_pair_gradient(batch, pairs, vectors, energies.detach(), terms.vector_grad(de_dg),
                                         forces=forces, stress=stress)
        return {**out, "atomic_energies": energies.detach()} if atomic else out


def descriptor_features(descriptor: SymmetryFunctions, species: torch.Tensor, batch: AtomsBatch,
                        pairs: Pairs) -> torch.Tensor:
    """Features (N, n_features) in atom order, without gradients."""
    if batch.device.type == "cpu":
        return kernel_features(descriptor, species, batch, pairs, slopes=False).in_atom_order()
    with torch.no_grad():
        return descriptor.terms(pair_vectors(batch.positions, batch.cells, pairs), species, pairs).features()


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
