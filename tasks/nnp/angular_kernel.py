"""The angular (G4) sums and their pair-vector gradient as one compiled loop per centre atom (CPU).

The torch path (descriptor_terms.TorchAngularTerms) materialises several (triplets × 18) arrays
per evaluation; on a CPU every pass over them costs more than the arithmetic. Here each triplet
(a, b) of angular pairs sharing a centre is visited once, its cos θ and powers are computed in
registers and added straight into the centre's feature rows (or, for the gradient, into the two
pairs' rows). Nothing of size "triplets" is ever stored, so no triplet list is built either.

Loops run in parallel over centre atoms (numba prange): a centre writes only its own feature
rows and the rows of its own pairs, so there are no races. Inference only: training needs
gradients of these sums with respect to network weights, which the torch path provides.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numba import get_num_threads, njit, prange, set_num_threads


@njit(cache=True, inline="always")
def _ipow(x, n):
    out = 1.0
    base = x
    while n > 0:
        if n & 1:
            out *= base
        base *= base
        n >>= 1
    return out


@njit(cache=True, inline="always")
def _powers(cos, lambdas, zetas, power, slope):
    """power[l·Z + z] = 2^{1−ζ}(1 + λ cos)^ζ and its cos-derivative (base clamped at 0)."""
    n_z = len(zetas)
    for li in range(len(lambdas)):
        lam = lambdas[li]
        base = max(1.0 + lam * cos, 0.0)
        for zi in range(n_z):
            z = zetas[zi]
            scale = 2.0 ** (1 - z)
            power[li * n_z + zi] = scale * _ipow(base, z)
            slope[li * n_z + zi] = scale * z * _ipow(base, z - 1) * lam


def _angular_features(segment, unit, q, neighbour_type, pair_type, lambdas, zetas, out):
    """out[centre · n_pair_types + type(a, b), e·LZ + lz] += q_e(a) q_e(b) P_lz(cos θ_ab)."""
    n_centres = len(segment) - 1
    n_pt = out.shape[0] // max(n_centres, 1)
    n_eta = q.shape[1]
    n_lz = len(lambdas) * len(zetas)
    for centre in prange(n_centres):
        # float64 scratch whatever the input dtype: accumulating in float64 costs nothing here
        power = np.empty(n_lz)
        slope = np.empty(n_lz)
        for a in range(segment[centre], segment[centre + 1]):
            for b in range(a + 1, segment[centre + 1]):
                cos = unit[a, 0] * unit[b, 0] + unit[a, 1] * unit[b, 1] + unit[a, 2] * unit[b, 2]
                _powers(cos, lambdas, zetas, power, slope)
                row = centre * n_pt + pair_type[neighbour_type[a], neighbour_type[b]]
                for e in range(n_eta):
                    w = q[a, e] * q[b, e]
                    for k in range(n_lz):
                        out[row, e * n_lz + k] += w * power[k]


def _angular_pair_gradient(segment, unit, r, q, dq, neighbour_type, pair_type, lambdas, zetas, grad, out):
    """dE/dv of every angular pair (Pa, M, 3) from dE/dG of M models, grad (channels, M, η·LZ)."""
    n_centres = len(segment) - 1
    n_pt = grad.shape[0] // max(n_centres, 1)
    n_models = grad.shape[1]
    n_eta = q.shape[1]
    n_lz = len(lambdas) * len(zetas)
    for centre in prange(n_centres):
        power = np.empty(n_lz)
        slope = np.empty(n_lz)
        dcos_da = np.empty(3)
        dcos_db = np.empty(3)
        for a in range(segment[centre], segment[centre + 1]):
            inv_ra = 1.0 / r[a]
            for b in range(a + 1, segment[centre + 1]):
                cos = unit[a, 0] * unit[b, 0] + unit[a, 1] * unit[b, 1] + unit[a, 2] * unit[b, 2]
                _powers(cos, lambdas, zetas, power, slope)
                inv_rb = 1.0 / r[b]
                for x in range(3):
                    dcos_da[x] = (unit[b, x] - cos * unit[a, x]) * inv_ra
                    dcos_db[x] = (unit[a, x] - cos * unit[b, x]) * inv_rb
                row = centre * n_pt + pair_type[neighbour_type[a], neighbour_type[b]]
                for m in range(n_models):
                    de_dcos = 0.0
                    de_dra = 0.0
                    de_drb = 0.0
                    for e in range(n_eta):
                        v = 0.0
                        s = 0.0
                        for k in range(n_lz):
                            g = grad[row, m, e * n_lz + k]
                            v += g * power[k]
                            s += g * slope[k]
                        de_dcos += s * q[a, e] * q[b, e]
                        de_dra += v * q[b, e] * dq[a, e]
                        de_drb += v * q[a, e] * dq[b, e]
                    for x in range(3):
                        out[a, m, x] += de_dra * unit[a, x] + de_dcos * dcos_da[x]
                        out[b, m, x] += de_drb * unit[b, x] + de_dcos * dcos_db[x]


# prange runs as range in the serial builds; one worker thread (the usual Dask worker) uses them
_SERIAL = (njit(cache=True)(_angular_features), njit(cache=True)(_angular_pair_gradient))
# not cached: both builds would share one cache index entry (same function, same signature)
_PARALLEL = (njit(parallel=True)(_angular_features), njit(parallel=True)(_angular_pair_gradient))
# numba's default threading layer must not be entered by two threads at once
_PARALLEL_LOCK = threading.Lock()


def _run(which: int, *args) -> None:
    threads = torch.get_num_threads()
    if threads <= 1:
        _SERIAL[which](*args)
        return
    with _PARALLEL_LOCK:
        before = get_num_threads()
        set_num_threads(min(threads, before))
        try:
            _PARALLEL[which](*args)
        finally:
            set_num_threads(before)


def angular_features(segment, unit, q, neighbour_type, pair_type, lambdas, zetas, out) -> None:
    _run(0, segment, unit, q, neighbour_type, pair_type, lambdas, zetas, out)


def angular_pair_gradient(segment, unit, r, q, dq, neighbour_type, pair_type, lambdas, zetas, grad, out) -> None:
    _run(1, segment, unit, r, q, dq, neighbour_type, pair_type, lambdas, zetas, grad, out)
