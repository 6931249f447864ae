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
import os
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from numba import get_num_threads, njit, set_num_threads

from tasks.nnp.kernel_source import KernelShape, kernel_source

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
    text = kernel_source(shape, kernel)
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


def run_kernel(shape: KernelShape, kernel: str, *args) -> None:
    """``kernel`` ('features' or 'gradient') of this shape on as many threads as torch uses."""
    module = kernels_for(shape, kernel)
    threads = torch.get_num_threads()
    if threads <= 1:
        getattr(module, f"{kernel}_serial")(*args)
        return
    with _PARALLEL_LOCK:
        before = get_num_threads()
        set_num_threads(min(threads, before))
        try:
            getattr(module, f"{kernel}_parallel")(*args)
        finally:
            set_num_threads(before)


@njit(cache=True)
def scatter_pair_gradient(pi, pj, psys, unit, r, pair_grad, forces, virial, with_virial):
    """forces (M, N, 3): F_i += dE/dv_p for i(p) = i, −= for j(p) = i; virial (M, B, 3, 3) += v_p ⊗ dE/dv_p.
    Serial: two pairs of different centres write the same atom."""
    for p in range(len(pi)):
        i = pi[p]
        j = pj[p]
        for m in range(pair_grad.shape[1]):
            for x in range(3):
                g = pair_grad[p, m, x]
                forces[m, i, x] += g
                forces[m, j, x] -= g
            if with_virial:
                s = psys[p]
                for x in range(3):
                    vx = unit[p, x] * r[p]
                    for y in range(3):
                        virial[m, s, x, y] += vx * pair_grad[p, m, y]


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
