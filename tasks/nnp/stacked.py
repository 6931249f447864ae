"""M members' per-element networks as stacked weights, with the gradient written out (inference).

For a committee the members' first layers read the same features, so they are one matrix
product (F × M·H); the later layers are one batched product over members. The backward pass of a
tanh MLP is three lines, cheaper than autograd's graph for small networks evaluated every MD step.
Each member's feature normalisation is folded into its first layer:
  ((f − μ)/σ) W + b = f (W/σ) + (b − (μ/σ) W),
and NN(isolated atom) is the network at raw features f = 0.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from tasks.nnp.model import AtomicNetworks


@dataclass(frozen=True, eq=False)
class ElementStack:
    first_weight: torch.Tensor  # (F, M·H1), normalisation folded in
    first_bias: torch.Tensor  # (M·H1,)
    weights: tuple[torch.Tensor, ...]  # (M, H_k, H_k+1) for the later layers; the last has width 1
    biases: tuple[torch.Tensor, ...]  # (M, 1, H_k+1)
    offset: torch.Tensor  # (M, 1): reference energy − NN(isolated atom)

    @property
    def n_models(self) -> int:
        return self.offset.shape[0]

    def _hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, m = x.shape[0], self.n_models
        h = torch.tanh(torch.addmm(self.first_bias, x, self.first_weight)).reshape(n, m, -1).transpose(0, 1)
        layers = [h]
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            layers.append(torch.tanh(torch.baddbmm(b, layers[-1], w)))
        return layers

    def _output(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.biases[-1], last_hidden, self.weights[-1])[..., 0] + self.offset

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Atomic energies (M, n) of n atoms of this element with raw features x (n, F)."""
        return self._output(self._hidden(x)[-1])

    def energies_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, n) energies and their gradient with respect to the features, (M, n, F)."""
        layers = self._hidden(x)
        energies = self._output(layers[-1])
        delta = self.weights[-1].transpose(1, 2) * (1.0 - layers[-1] * layers[-1])  # (M, n, H_last)
        for w, h in zip(reversed(self.weights[:-1]), reversed(layers[:-1])):
            delta = torch.bmm(delta, w.transpose(1, 2)) * (1.0 - h * h)
        first = self.first_weight.reshape(x.shape[1], self.n_models, -1).permute(1, 2, 0)  # (M, H1, F)
        return energies, torch.bmm(delta, first)


def _linears(net: torch.nn.Sequential) -> list[torch.nn.Linear]:
    return [layer for layer in net if isinstance(layer, torch.nn.Linear)]


def _stack_element(networks: Sequence["AtomicNetworks"], e: int) -> ElementStack:
    members = [_linears(n.nets[e]) for n in networks]
    mean = torch.stack([n.feature_mean[e] for n in networks])  # (M, F)
    std = torch.stack([n.feature_std[e] for n in networks])
    w1 = torch.stack([layers[0].weight.T for layers in members]) / std[:, :, None]  # (M, F, H1)
    b1 = torch.stack([layers[0].bias for layers in members]) - torch.einsum("mf,mfh->mh", mean, w1)
    m_models, n_features, width = w1.shape
    weights = tuple(torch.stack([layers[k].weight.T for layers in members]) for k in range(1, len(members[0])))
    biases = tuple(torch.stack([layers[k].bias for layers in members])[:, None, :] for k in range(1, len(members[0])))
    bare = ElementStack(first_weight=w1.permute(1, 0, 2).reshape(n_features, m_models * width),
                        first_bias=b1.reshape(-1), weights=weights, biases=biases,
                        offset=torch.zeros((m_models, 1), dtype=w1.dtype, device=w1.device))
    isolated = bare.energies(torch.zeros((1, n_features), dtype=w1.dtype, device=w1.device))  # (M, 1)
    reference = torch.stack([n.reference_energy_eV[e] for n in networks])[:, None]
    return dataclasses.replace(bare, offset=reference - isolated)


# the tensors of each network, found once: Module attribute lookup costs more than the networks'
# evaluation here. Training and load_state_dict change tensors in place and .to() swaps their data,
# both seen by the key below; nothing in this package assigns new Parameter objects.
_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# rebuilt when any weight, normalisation or reference energy changes (version or storage)
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensors(network: "AtomicNetworks") -> list[torch.Tensor]:
    if network not in _TENSORS:
        _TENSORS[network] = [network.feature_mean, network.feature_std, network.reference_energy_eV,
                             *(t for net in network.nets for layer in _linears(net) for t in (layer.weight, layer.bias))]
    return _TENSORS[network]


def stacked_networks(networks: Sequence["AtomicNetworks"]) -> list[ElementStack]:
    """One ElementStack per element of these M networks (same descriptor settings)."""
    key = (tuple(id(n) for n in networks),
           tuple((t.data_ptr(), t._version, t.dtype) for n in networks for t in _tensors(n)))
    cached = _STACKS.get(networks[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        stacks = [_stack_element(networks, e) for e in range(len(networks[0].nets))]
    _STACKS[networks[0]] = (key, stacks)
    return stacks
