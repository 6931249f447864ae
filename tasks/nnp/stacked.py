"""M members' per-element networks as stacked weights, with the gradient written out (inference).

For a committee the members' first layers read the same features, so they are one matrix
product (F × M·H); the later layers are one batched product over members. The backward pass of a
tanh MLP is three lines, cheaper than autograd's graph for small networks evaluated every MD step.
Each member's feature normalisation is folded into its first layer:
  ((f − μ)/σ) W + b = f (W/σ) + (b − (μ/σ) W),
and NN(isolated atom) is the network at raw features f = 0.

The stack runs on s = σ(2z) instead of h = tanh(z) = 2s − 1 (the same network: torch's sigmoid
costs a third of its tanh on CPU, and tanh is most of the networks' time in a committee). A layer
reading h reads s through W' = 2W, b' = b − 1ᵀW; a hidden layer's W', b' are doubled once more
for the 2z; the slope ds/d(2z) is s − s².
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from tasks.nnp.feature_layout import FeatureLayout
    from tasks.nnp.model import AtomicNetworks


@dataclass(frozen=True, eq=False)
class ElementStack:
    first_weight: torch.Tensor  # (F, M·H1), normalisation folded in; all weights in the σ(2z) form
    first_bias: torch.Tensor  # (M·H1,)
    weights: tuple[torch.Tensor, ...]  # (M, H_k, H_k+1) for the later layers; the last has width 1
    biases: tuple[torch.Tensor, ...]  # (M, 1, H_k+1)
    offset: torch.Tensor  # (M, 1): reference energy − NN(isolated atom)
    first_transposed: torch.Tensor  # (M, H1, F) = first_weight for dE/dG, contiguous
    _restricted: dict = field(default_factory=dict, init=False, repr=False)  # FeatureLayout → stack

    @property
    def n_models(self) -> int:
        return self.offset.shape[0]

    def restricted(self, layout: "FeatureLayout") -> "ElementStack":
        """This stack reading only the feature columns of ``layout`` (the others are zero)."""
        if layout.complete:
            return self
        if layout not in self._restricted:  # layouts are cached, so identity is the key
            first = self.first_weight[torch.as_tensor(layout.columns, device=self.first_weight.device)]
            self._restricted[layout] = dataclasses.replace(self, first_weight=first,
                                                           first_transposed=_transposed(first, self.n_models))
        return self._restricted[layout]

    def _hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, m = x.shape[0], self.n_models
        s = torch.addmm(self.first_bias, x, self.first_weight).sigmoid_().reshape(n, m, -1).transpose(0, 1)
        layers = [s]
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            layers.append(torch.baddbmm(b, layers[-1], w).sigmoid_())
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
        delta = torch.addcmul(layers[-1], layers[-1], layers[-1], value=-1.0).mul_(self.weights[-1].transpose(1, 2))
        for w, s in zip(reversed(self.weights[:-1]), reversed(layers[:-1])):
            delta = torch.bmm(delta, w.transpose(1, 2)).mul_(torch.addcmul(s, s, s, value=-1.0))  # (M, n, H_k)
        return energies, torch.bmm(delta, self.first_transposed)


def _transposed(first_weight: torch.Tensor, n_models: int) -> torch.Tensor:
    """(F, M·H1) → (M, H1, F)."""
    return first_weight.reshape(first_weight.shape[0], n_models, -1).permute(1, 2, 0).contiguous()


def _linears(net: torch.nn.Sequential) -> list[torch.nn.Linear]:
    return [layer for layer in net if isinstance(layer, torch.nn.Linear)]


def _stack_element(networks: Sequence["AtomicNetworks"], e: int) -> ElementStack:
    members = [_linears(n.nets[e]) for n in networks]
    mean = torch.stack([n.feature_mean[e] for n in networks])  # (M, F)
    std = torch.stack([n.feature_std[e] for n in networks])
    w1 = torch.stack([layers[0].weight.T for layers in members]) / std[:, :, None]  # (M, F, H1)
    b1 = torch.stack([layers[0].bias for layers in members]) - torch.einsum("mf,mfh->mh", mean, w1)
    m_models, n_features, width = w1.shape
    weights, biases = [], []
    for k in range(1, len(members[0])):  # to the σ(2z) form (module docstring)
        w = torch.stack([layers[k].weight.T for layers in members])
        b = torch.stack([layers[k].bias for layers in members])[:, None, :] - w.sum(dim=1, keepdim=True)
        doubling = 2.0 if k < len(members[0]) - 1 else 1.0  # hidden layers feed a σ(2z)
        weights.append(2.0 * doubling * w)
        biases.append(doubling * b)
    first = 2.0 * w1.permute(1, 0, 2).reshape(n_features, m_models * width)
    bare = ElementStack(first_weight=first, first_transposed=_transposed(first, m_models),
                        first_bias=2.0 * b1.reshape(-1), weights=tuple(weights), biases=tuple(biases),
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


_VERSION = operator.attrgetter("_version")


def stacked_networks(networks: Sequence["AtomicNetworks"]) -> list[ElementStack]:
    """One ElementStack per element of these M networks (same descriptor settings)."""
    tensors = [t for n in networks for t in _tensors(n)]
    # maps over C getters: this check runs at every evaluation, for every tensor of every member
    key = (tuple(map(id, networks)), tuple(map(_VERSION, tensors)), tuple(map(torch.Tensor.data_ptr, tensors)),
           tensors[0].dtype)  # .to(dtype) moves every tensor to new storage, so one dtype suffices
    cached = _STACKS.get(networks[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        stacks = [_stack_element(networks, e) for e in range(len(networks[0].nets))]
    _STACKS[networks[0]] = (key, stacks)
    return stacks
