"""Sums of rows into groups, the workhorse of descriptors and forces, fast on CPU.

``index_add`` on CPU walks the index one row at a time (0.7 ms for 31,000 rows of 18 floats on
one thread); the same sum as a sparse CSR matrix product runs 6x faster and also serves CUDA.
A neighbour list fixes the index for many MD steps, so the matrix is built once per list.
With autograd (training), index_add is used: its backward is dense and well supported.
"""

from __future__ import annotations

import warnings

import torch


class RowSum:
    """out[rows[k]] += sign[k] · values[cols[k]] for values of shape (n_cols, ...) → (n_rows, ...)."""

    def __init__(self, rows: torch.Tensor, n_rows: int, n_cols: int, cols: torch.Tensor | None = None,
                 sign: torch.Tensor | None = None, sparse: bool = False):
        self.rows = rows
        self.identity = cols is None  # values row k goes to rows[k]
        self.cols = cols if cols is not None else torch.arange(len(rows), device=rows.device)
        self.sign = sign
        self.n_rows, self.n_cols = n_rows, n_cols
        # building the matrix costs about five index_adds: ask for it only for sums used many times
        self.sparse = sparse
        self._matrices: dict[torch.dtype, torch.Tensor] = {}

    def _matrix(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._matrices:
            weights = self.sign.to(dtype) if self.sign is not None else torch.ones(len(self.rows), dtype=dtype,
                                                                                  device=self.rows.device)
            coo = torch.sparse_coo_tensor(torch.stack([self.rows, self.cols]), weights, (self.n_rows, self.n_cols),
                                          check_invariants=False)  # indices come from our own neighbour list
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._matrices[dtype] = coo.coalesce().to_sparse_csr()
        return self._matrices[dtype]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        shape = (self.n_rows, *values.shape[1:])
        if values.requires_grad or not self.sparse:
            picked = values if self.identity else values.index_select(0, self.cols)
            if self.sign is not None:
                picked = picked * self.sign.to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
            return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add(0, self.rows, picked)
        if values.shape[0] == 0 or self.n_rows == 0:
            return torch.zeros(shape, dtype=values.dtype, device=values.device)
        return (self._matrix(values.dtype) @ values.reshape(values.shape[0], -1)).reshape(shape)
