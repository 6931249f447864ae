"""Compiled CPU kernels for symmetry functions: load (and cache) the generated source of a shape,
and run its serial or parallel build.

The source for a KernelShape is written once to a cache folder as a module named by its hash, so
numba's on-disk cache next to it spares later processes (Dask workers) the compile. The folder is
$CAMPAIGN_KERNEL_CACHE, else $XDG_CACHE_HOME/campaign/kernels (~/.cache/...), else a temporary one.
Loops run in parallel over centre atoms when torch has more than one thread: a centre writes only
its own feature row and the rows of its own pairs, so there are no races.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from numba import get_num_threads, njit, set_num_threads, typeof
from numba.core import config as numba_config
from numba.core.compiler_lock import global_compiler_lock

from tasks.nnp.kernel_source import KERNEL_ARGUMENTS, KernelShape, kernel_source

# numba's default threading layer must not be entered by two threads at once
_PARALLEL_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()


def _cache_folder() -> Path:
    explicit = os.environ.get("CAMPAIGN_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "campaign" / "kernels"


def _write_once(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    if path.exists() and path.read_text() == text:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # several workers may write the same module at once: each writes its own file, then renames
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


@lru_cache(maxsize=None)
def kernels_for(shape: KernelShape, kernel: str) -> ModuleType:
    return generated_module(kernel_source(shape, kernel))


def generated_module(text: str) -> ModuleType:
    """The module of this generated source text, written once to the kernel cache (numba's on-disk
    cache then sits beside it) and imported once per process."""
    name = "campaign_kernel_" + hashlib.sha256(text.encode()).hexdigest()[:20]
    with _LOAD_LOCK:
        if name in sys.modules:
            return sys.modules[name]
        try:
            path = _write_once(_cache_folder(), name, text)
        except OSError:  # read-only home: compile every process, from a private folder
            path = _write_once(Path(tempfile.mkdtemp(prefix="campaign-kernels-")), name, text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
        return module


# numba leaves LLVM's SLP vectoriser off (numba#8705: miscompiled integer code). The gradient
# kernel is written for it: its per-model statements become one SIMD lane per committee member
# (kernel_source._gradient). It is switched on for that compile alone, and
# tests/test_descriptor_terms.py checks the result against autograd in float32 and float64.
_SLP_KERNELS = frozenset({"gradient"})


def _compile_with_slp(dispatcher, args) -> None:
    with global_compiler_lock:  # numba's config is global: no other compile may see the switch
        before = numba_config.SLP_VECTORIZE
        numba_config.SLP_VECTORIZE = 1
        try:
            dispatcher.compile(tuple(typeof(a) for a in args))
        finally:
            numba_config.SLP_VECTORIZE = before


def kernel_arguments(kernel: str, arguments: dict[str, object]) -> tuple:
    """``arguments`` by name → the positional order of the generated ``def`` line; a name missing
    or unknown is an error, never a silent shift of every argument after it."""
    names = KERNEL_ARGUMENTS[kernel]
    missing = [name for name in names if name not in arguments]
    unexpected = sorted(set(arguments) - set(names))
    if missing or unexpected:
        raise TypeError(f"{kernel} kernel: missing arguments {missing}, unexpected arguments {unexpected}; "
                        f"it takes {names}")
    return tuple(arguments[name] for name in names)


def run_kernel(shape: KernelShape, kernel: str, **arguments) -> None:
    """``kernel`` ('features' or 'gradient') of this shape, its arguments by name (KERNEL_ARGUMENTS),
    on as many threads as torch uses."""
    args = kernel_arguments(kernel, arguments)
    module = kernels_for(shape, kernel)
    threads = torch.get_num_threads()
    build = getattr(module, f"{kernel}_serial" if threads <= 1 else f"{kernel}_parallel")
    if kernel in _SLP_KERNELS and not build.signatures:
        _compile_with_slp(build, args)
    if threads <= 1:
        build(*args)
        return
    with _PARALLEL_LOCK:
        before = get_num_threads()
        set_num_threads(min(threads, before))
        try:
            build(*args)
        finally:
            set_num_threads(before)


@njit(cache=True)
def scatter_pair_gradient(pi, pj, psys, unit, r, pair_grad, forces, virial, with_virial):
    """pair_grad (P, 3, M) → forces (M, N, 3): F_i += dE/dv_p for i(p) = i, −= for j(p) = i; virial
    (M, B, 3, 3) += v_p ⊗ dE/dv_p. Serial: two pairs of different centres write the same atom."""
    for p in range(len(pi)):
        i = pi[p]
        j = pj[p]
        for m in range(pair_grad.shape[2]):
            for x in range(3):
                g = pair_grad[p, x, m]
                forces[m, i, x] += g
                forces[m, j, x] -= g
            if with_virial:
                s = psys[p]
                for x in range(3):
                    vx = unit[p, x] * r[p]
                    for y in range(3):
                        virial[m, s, x, y] += vx * pair_grad[p, y, m]


@njit(cache=True, error_model="numpy")
def committee_force_statistics(member_forces, system, mean_forces, deviation):
    """member_forces (M, N, 3) → mean_forces (N, 3) and, into deviation (B,) (zeros on entry), DP-GEN's
    max over atoms of sqrt(mean_m ‖F_mi − ⟨F_i⟩‖²). A NaN spread stays NaN in its system's maximum."""
    n_models = member_forces.shape[0]
    for i in range(member_forces.shape[1]):
        squared = 0.0
        for x in range(3):
            mean = 0.0
            for m in range(n_models):
                mean += member_forces[m, i, x]
            mean /= n_models
            mean_forces[i, x] = mean
            for m in range(n_models):
                d = member_forces[m, i, x] - mean
                squared += d * d
        spread = math.sqrt(squared / n_models)
        s = system[i]
        if spread > deviation[s] or spread != spread:  # a NaN, once in, is never compared away
            deviation[s] = spread


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
