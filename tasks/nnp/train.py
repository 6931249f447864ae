"""Fit a Behler–Parrinello model (or a committee, one seed and one split per member) to labels.

Loss = w_E ⟨(ΔE / N_atoms)²⟩ + w_F ⟨ΔF²⟩ over frames and force components (or the relative force
error of the MoS2 study, ``relative_force_floor_eV_per_A``); Adam with exponential learning-rate
decay. The weights are constant, or follow DeePMD-kit's prefactor schedule
w(t) = w_limit + (w_start − w_limit) · lr(t) / lr(0), which fits forces first and energies last.
Early stopping is on the held-out validation split only, scored with the final weights, keeping the
best state; without a validation split every epoch runs and the last state is kept. With a
repulsion (DP-Tab) the network is trained inside the blend: the loss is on the blended model's
energies and forces, so the network learns what the table leaves to it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from ase import Atoms
from pydantic import Field

from tasks.nnp.batch import AtomsBatch, concat_batches
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.graph import Pairs
from tasks.nnp.model import BehlerParrinello, ModelSettings, descriptor_features
from tasks.nnp.repulsion import Blended, PairRepulsion, PairTable, RepulsionSettings
from tasks.settings import StrictModel


class TrainSettings(StrictModel):
    """How a committee member is trained (the campaign's committee spec derives from it)."""

    # Defaults measured by scripts/bench_training.py (300 tblite-labeled 3×3 MoS2 cells, README:
    # "Training settings"): 64×64 with these cutoffs and a 100:10 energy:force weight gets a tenth of
    # the energy error and 20% less force error than 16×16, 5.0/3.6 Å, 1:10.
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    radial_cutoff_A: float = Field(6.0, gt=0)
    angular_cutoff_A: float = Field(4.0, gt=0)
    max_epochs: int = Field(1000, ge=1)
    patience_epochs: int = Field(200, ge=1)
    frames_per_step: int = Field(8, ge=1)
    learning_rate: float = Field(5e-3, gt=0)
    lr_decay_per_epoch: float = Field(0.993, gt=0, le=1, description="0.993: the rate falls 1000× in 1000 epochs")
    energy_weight: float = Field(100.0, ge=0, description="w_E, or its start value with energy_weight_limit")
    force_weight: float = Field(10.0, ge=0, description="w_F, or its start value with force_weight_limit")
    energy_weight_limit: float | None = Field(None, ge=0, description="DeePMD's limit_pref_e: w_E moves "
                                              "from energy_weight to this as the learning rate decays")
    force_weight_limit: float | None = Field(None, ge=0, description="DeePMD's limit_pref_f")
    # None, not 1.0, by default: settings enter task keys without their None fields, so existing
    # campaigns keep their keys.
    relative_force_floor_eV_per_A: float | None = Field(
        None, gt=0, description="set: the force term is on the relative force error ΔF_i / (|F_i| + floor) "
        "(the MoS2 study: 1 eV/Å); unset: on ΔF")
    validation_fraction: float = Field(0.2, ge=0, lt=1, description="held-out frames for early stopping; "
                                       "0: no early stopping, all max_epochs run")
    dtype: Literal["float32", "float64"] = "float64"
    device: str = Field("auto", description="auto: the GPU when there is one (train_member), else the CPU")
    repulsion: RepulsionSettings | None = Field(None, description="DP-Tab: train inside a repulsion blend")

    def loss_weights(self, lr_fraction: float) -> tuple[float, float]:
        """(w_E, w_F) when the learning rate is ``lr_fraction`` of its start value (1 at the start,
        → 0 at the end): constant weights, or DeePMD's prefactor schedule where a limit is set."""
        def weight(start: float, limit: float | None) -> float:
            return start if limit is None else limit + (start - limit) * lr_fraction
        return weight(self.energy_weight, self.energy_weight_limit), weight(self.force_weight, self.force_weight_limit)


@dataclass(frozen=True, eq=False)
class LabeledData:
    """Frames with labels, kept as tensors with their neighbour pairs (computed once)."""

    parts: list[tuple[AtomsBatch, Pairs]]
    energy_eV: torch.Tensor  # (F,)
    forces_eV_per_A: list[torch.Tensor]  # per frame (n, 3)
    elements: tuple[str, ...]


@dataclass
class TrainReport:
    seed: int
    epochs: int
    best_epoch: int
    n_train: int
    n_validation: int
    train_energy_rmse_meV_per_atom: float
    train_force_rmse_eV_per_A: float
    validation_energy_rmse_meV_per_atom: float
    validation_force_rmse_eV_per_A: float
    wall_s: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # epoch, train loss, validation loss


def prepare(frames: Sequence[Atoms], elements: Sequence[str], cutoff_A: float, dtype: torch.dtype,
            device: str = "cpu") -> LabeledData:
    parts, energies, forces = [], [], []
    for atoms in frames:
        batch = AtomsBatch.from_atoms([atoms], dtype=dtype, device=device)
        parts.append((batch, batch.pairs(cutoff_A)))
        energies.append(atoms.get_potential_energy())
        forces.append(torch.as_tensor(atoms.get_forces(), dtype=dtype, device=device))
    return LabeledData(parts, torch.as_tensor(energies, dtype=dtype, device=device), forces, tuple(elements))


def _features(model: BehlerParrinello, data: LabeledData, idx: Sequence[int]):
    with torch.no_grad():
        for k in idx:
            batch, pairs = data.parts[k]
            species = model.species(batch.numbers)
            yield species, descriptor_features(model.descriptor, species, batch, pairs)


def fit_normalisation_and_references(model: BehlerParrinello, data: LabeledData, idx: Sequence[int]) -> None:
    """Feature mean/std per element, and reference energies by least squares on composition
    (isolated-atom frames, where present, fix their element's reference exactly)."""
    n_el = model.settings.descriptor.n_elements
    sums = [[] for _ in range(n_el)]
    composition = np.zeros((len(idx), n_el))
    for row, (species, features) in enumerate(_features(model, data, idx)):
        for e in range(n_el):
            sums[e].append(features[species == e])
        composition[row] = np.bincount(species.cpu().numpy(), minlength=n_el)
    atomic = model.atomic
    with torch.no_grad():
        for e in range(n_el):
            x = torch.cat(sums[e]) if sums[e] else torch.zeros(0, atomic.feature_mean.shape[1])
            if len(x) > 1:
                atomic.feature_mean[e] = x.mean(0)
                atomic.feature_std[e] = torch.clamp(x.std(0), min=1e-3)
        energies = data.energy_eV[list(idx)].cpu().numpy()
        reference = np.linalg.lstsq(composition, energies, rcond=None)[0]
        for row in range(len(idx)):
            if composition[row].sum() == 1:  # an isolated atom
                reference[int(np.argmax(composition[row]))] = energies[row]
        atomic.reference_energy_eV.copy_(torch.as_tensor(reference))


def _errors(model: torch.nn.Module, data: LabeledData, idx: Sequence[int], frames_per_step: int,
            create_graph: bool):
    """Yield (energy error per atom (B,), force errors (n, 3), label forces (n, 3)) per minibatch."""
    for start in range(0, len(idx), frames_per_step):
        chunk = idx[start:start + frames_per_step]
        batch, pairs = concat_batches([data.parts[k] for k in chunk])
        out = model(batch, pairs, create_graph=create_graph)
        n_atoms = torch.as_tensor(batch.n_atoms, dtype=out["energy"].dtype, device=out["energy"].device)
        de = (out["energy"] - data.energy_eV[chunk]) / n_atoms
        label = torch.cat([data.forces_eV_per_A[k] for k in chunk])
        yield de, out["forces"] - label, label


def rmse(model: torch.nn.Module, data: LabeledData, idx: Sequence[int]) -> tuple[float, float]:
    """(energy RMSE meV/atom, force RMSE eV/Å)."""
    if len(idx) == 0:
        return float("nan"), float("nan")
    des, dfs = [], []
    for de, df, _ in _errors(model, data, list(idx), 32, create_graph=False):
        des.append(de.detach())
        dfs.append(df.detach())
    de, df = torch.cat(des), torch.cat(dfs)
    return float(de.pow(2).mean().sqrt()) * 1e3, float(df.pow(2).mean().sqrt())


def split(n_frames: int, validation_fraction: float, seed: int,
          always_train: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded share of the frames held out, never those in
    ``always_train``."""
    fixed = np.zeros(n_frames, bool)
    fixed[list(always_train)] = True
    order = np.flatnonzero(~fixed)[np.random.default_rng(seed).permutation(int((~fixed).sum()))]
    n_val = int(round(validation_fraction * n_frames))
    return np.sort(np.concatenate([order[n_val:], np.flatnonzero(fixed)])), np.sort(order[:n_val])


def isolated_atom_frames(data: LabeledData) -> list[int]:
    """Single-atom frames: they fix their element's reference energy (fit_normalisation_and_references),
    so a model that never trained on one is off by the cohesive energy on it."""
    return [k for k, (batch, _) in enumerate(data.parts) if int(batch.n_atoms[0]) == 1]


def pair_cutoff_A(settings: TrainSettings) -> float:
    """The neighbour-list cutoff prepare() needs for models these settings train."""
    cutoffs = [settings.radial_cutoff_A, settings.angular_cutoff_A]
    if settings.repulsion is not None:  # Blended's default table cutoff, 2 R_a − R_c
        cutoffs.append(2 * settings.repulsion.r_outer_A - settings.repulsion.r_inner_A)
    return max(cutoffs)


def blended(network: BehlerParrinello, repulsion: RepulsionSettings, table: PairTable | None) -> Blended:
    """The network inside the repulsion blend the settings ask for."""
    if repulsion.kind == "dimer_table":
        if table is None:
            raise ValueError("repulsion kind 'dimer_table' needs the PairTable of the dimer scans")
        pair = PairRepulsion(table.elements, table)
    else:
        pair = PairRepulsion(network.elements)
    return Blended(network, pair.to(network.device), repulsion.r_inner_A, repulsion.r_outer_A)


def network_of(model: torch.nn.Module) -> BehlerParrinello:
    """The trainable Behler–Parrinello network of a model or of a blend around one."""
    return model.inner if isinstance(model, Blended) else model


def train_device(settings: TrainSettings, data: LabeledData) -> str | torch.device:
    """"auto" trains where the data were prepared (train_member prepares them on the GPU if any)."""
    return data.energy_eV.device if settings.device == "auto" else settings.device


def train_model(data: LabeledData, settings: TrainSettings, seed: int, warm_start: torch.nn.Module | None = None,
                table: PairTable | None = None) -> tuple[torch.nn.Module, TrainReport]:
    """One model with its own seed and its own train/validation split. With ``settings.repulsion``
    the result is the blend (its table is ``table`` for kind dimer_table); a blended warm start
    continues as the blend it is."""
    start_time = time.perf_counter()
    dtype = getattr(torch, settings.dtype)
    device = train_device(settings, data)
    train_idx, val_idx = split(len(data.parts), settings.validation_fraction, seed, isolated_atom_frames(data))
    if warm_start is not None:
        model = copy.deepcopy(warm_start).to(dtype=dtype, device=device)
    else:
        descriptor = DescriptorSettings(elements=data.elements, radial_cutoff_A=settings.radial_cutoff_A,
                                        angular_cutoff_A=settings.angular_cutoff_A)
        model = BehlerParrinello(ModelSettings(descriptor, settings.hidden), dtype=dtype, seed=seed).to(device)
        fit_normalisation_and_references(model, data, train_idx)
    if settings.repulsion is not None and not isinstance(model, Blended):
        model = blended(model, settings.repulsion, table)
    network = network_of(model)
    network.seed = seed
    optimiser = torch.optim.Adam(network.atomic.nets.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=settings.lr_decay_per_epoch)
    rng = np.random.default_rng(seed)
    final_weights = settings.loss_weights(0.0)  # what early stopping scores: the schedule's end point
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    history = []
    epoch = 0
    for epoch in range(1, settings.max_epochs + 1):
        w_energy, w_force = settings.loss_weights(scheduler.get_last_lr()[0] / settings.learning_rate)
        order = train_idx[rng.permutation(len(train_idx))].tolist()
        total = 0.0
        for de, df, label in _errors(model, data, order, settings.frames_per_step, create_graph=True):
            loss = batch_loss(de, df, label, (w_energy, w_force), settings.relative_force_floor_eV_per_A)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(de)
        scheduler.step()
        if len(val_idx) == 0:  # nothing held out: no early stopping, the last state is kept
            history.append((epoch, total / max(1, len(train_idx)), float("nan")))
            best = (float("nan"), epoch, None)
            continue
        val_loss = dataset_loss(model, data, val_idx, final_weights, settings.relative_force_floor_eV_per_A)
        history.append((epoch, total / max(1, len(train_idx)), val_loss))
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= settings.patience_epochs:
            break
    if best[2] is not None:
        model.load_state_dict(best[2])
    e_tr, f_tr = rmse(model, data, train_idx)
    e_va, f_va = rmse(model, data, val_idx)
    return model, TrainReport(seed, epoch, best[1], len(train_idx), len(val_idx), e_tr, f_tr, e_va, f_va,
                              time.perf_counter() - start_time, history)


def batch_loss(de: torch.Tensor, df: torch.Tensor, label_forces: torch.Tensor, weights: tuple[float, float],
               relative_force_floor_eV_per_A: float | None = None) -> torch.Tensor:
    """w_E ⟨de²⟩ + w_F ⟨df²⟩ over frames and force components; with a floor, each atom's force error
    is divided by |F_i| + floor first, DeePMD-kit's ``relative_f`` and the MoS2 study's Eq. 4:
    "E(f_i) = |F_i − F_i^w| / (|F_i| + level)", F_i the label, F_i^w the model's force, level 1
    eV/Å. Short-range frames (dimers, interstitials) carry forces near 100 eV/Å; relative errors
    keep them from drowning the near-equilibrium frames' fractions of an eV/Å."""
    w_energy, w_force = weights
    if relative_force_floor_eV_per_A is not None:
        df = df / (label_forces.norm(dim=1, keepdim=True) + relative_force_floor_eV_per_A)
    return w_energy * de.pow(2).mean() + w_force * df.pow(2).mean()


def dataset_loss(model, data: LabeledData, idx: Sequence[int], weights: tuple[float, float],
                 relative_force_floor_eV_per_A: float | None = None) -> float:
    """batch_loss over frames ``idx`` in minibatches of 32, averaged weighted by their frames (the
    validation loss early stopping scores)."""
    total, count = 0.0, 0
    for de, df, label in _errors(model, data, list(idx), 32, create_graph=False):
        total += float(batch_loss(de, df, label, weights, relative_force_floor_eV_per_A).detach()) * len(de)
        count += len(de)
    return total / max(1, count)


def train_committee(data: LabeledData, settings: TrainSettings, seeds: Sequence[int],
                    warm_start: Sequence[torch.nn.Module] | None = None, table: PairTable | None = None):
    """N members, each with its own seed and split; returns (models, reports)."""
    results = [train_model(data, settings, seed, warm_start[k] if warm_start else None, table)
               for k, seed in enumerate(seeds)]
    return [m for m, _ in results], [r for _, r in results]
