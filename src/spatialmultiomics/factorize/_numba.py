"""Numba kernels of the joint NMF for large inputs: per-row sweeps of the cell loadings, CSR products.

Imported lazily (numba costs ~0.4 s to import) and only for inputs large enough to pay for it; see
:mod:`spatialmultiomics.factorize._rowpass`, which holds the NumPy reference of every kernel here and decides
what runs where. Measured on the 2-core machine (100,000 cells, one thread): the CSR @ dense product is only
vectorised over whole blocks of 32 columns (30 columns 127 ms, 32 columns 75 ms), so the caller pads ``G`` to a
multiple of 32 rows for ``X @ G.T`` (75 ms vs SciPy's 86 ms); the row sweeps, which NumPy can only do column by
column over all cells, and ``X.T @ W`` with float64 accumulation across chunks are numba's too. The block scales
are folded into the small matrices by the caller. Rows are split into ``n_chunks`` contiguous chunks, a number fixed by the caller from the shapes only, and the
per-chunk sums are added in chunk order: the results do not depend on the number of threads.

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["csr_dense_product", "csr_dense_tproduct", "sweep_rows"]

_EPS32 = float(np.finfo(np.float32).eps)
_TINY = 1e-30


@njit(cache=True, inline="always")
def _gram_times(gram: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Set ``out = gram @ w`` for a symmetric ``gram`` (k, k), as k vectorisable row updates."""
    k = w.shape[0]
    for q in range(k):
        out[q] = 0.0
    for j in range(k):
        wj = w[j]
        if wj != 0.0:
            for q in range(k):
                out[q] += wj * gram[j, q]


@njit(cache=True, parallel=True)
def sweep_rows(
    W: np.ndarray,
    xg: np.ndarray,
    gram: np.ndarray,
    row0: int,
    update: int,
    max_inner: int,
    delta: float,
    n_chunks: int,
) -> tuple[float, float]:
    """Update rows ``row0 .. row0 + len(xg)`` of ``W`` in place, each on its own, with ``G`` fixed.

    ``xg`` (r, k) float32 holds ``X @ G.T`` of those rows and ``gram`` (k, k) float64 ``G @ G.T``. ``update`` 1:
    coordinate-descent (HALS) sweeps over the k entries of a row, keeping ``gram @ w`` up to date by vectorised
    axpys; 2: multiplicative updates of the whole row. Each row repeats its sweep up to ``max_inner`` times,
    until a sweep moves it by at most ``delta`` times its first move (float64 arithmetic, float32 storage).

    Returns
    -------
    cross0, quad0
        ``tr(W.T X G.T)`` and ``tr(W.T W gram)`` of the rows as they were before the update (the error of the
        factors the pass started from, at no extra cost), summed per chunk of rows in a fixed order.
    """
    n, k = xg.shape
    step = (n + n_chunks - 1) // n_chunks
    cross0 = np.zeros(n_chunks)
    quad0 = np.zeros(n_chunks)
    delta2 = delta * delta
    for c in prange(n_chunks):
        w = np.empty(k)
        gw = np.empty(k)
        for i in range(c * step, min(n, (c + 1) * step)):
            for j in range(k):
                w[j] = W[row0 + i, j]
            _gram_times(gram, w, gw)
            for j in range(k):
                quad0[c] += gw[j] * w[j]
                cross0[c] += w[j] * np.float64(xg[i, j])
            if update == 0:
                continue
            first = 0.0
            for it in range(max_inner):
                move = 0.0
                if update == 1:
                    for j in range(k):
                        d = gram[j, j]
                        if d <= 0.0:
                            continue
                        new = w[j] + (np.float64(xg[i, j]) - gw[j]) / d
                        if new < 0.0:
                            new = 0.0
                        diff = new - w[j]
                        if diff != 0.0:
                            move += diff * diff
                            w[j] = new
                            for q in range(k):
                                gw[q] += diff * gram[j, q]
                else:
                    top = 0.0
                    for j in range(k):
                        top = max(top, gw[j])
                    floor = _EPS32 * top + _TINY
                    for j in range(k):
                        new = w[j] * np.float64(xg[i, j]) / max(gw[j], floor)
                        move += (new - w[j]) ** 2
                        w[j] = new
                    _gram_times(gram, w, gw)
                if it == 0:
                    first = move
                    if first == 0.0:
                        break
                elif move <= delta2 * first:
                    break
            for j in range(k):
                W[row0 + i, j] = np.float32(w[j])
    total_cross0 = 0.0
    total_quad0 = 0.0
    for c in range(n_chunks):  # fixed order: independent of the number of threads
        total_cross0 += cross0[c]
        total_quad0 += quad0[c]
    return total_cross0, total_quad0


@njit(cache=True, parallel=True)
def csr_dense_product(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Return ``X @ B`` (n, r), float32, for a CSR matrix ``X`` (n, m) and a dense float32 ``B`` (m, r)."""
    n = indptr.shape[0] - 1
    r = B.shape[1]
    out = np.zeros((n, r), dtype=np.float32)
    for i in prange(n):
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            col = indices[p]
            for j in range(r):
                out[i, j] += v * B[col, j]
    return out


@njit(cache=True, parallel=True)
def csr_dense_tproduct(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, m: int, n_chunks: int
) -> np.ndarray:
    """Return ``X.T @ B`` (m, r), float64, for a CSR matrix ``X`` (n, m) and a dense float32 ``B`` (n, r).

    Rows go in ``n_chunks`` fixed chunks (float32 partial sums) added in chunk order in float64 (independent of the
    number of threads).
    """
    n = indptr.shape[0] - 1
    r = B.shape[1]
    step = (n + n_chunks - 1) // n_chunks
    part = np.zeros((n_chunks, m, r), dtype=np.float32)
    for c in prange(n_chunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            for p in range(indptr[i], indptr[i + 1]):
                v = data[p]
                col = indices[p]
                for j in range(r):
                    part[c, col, j] += v * B[i, j]
    out = np.zeros((m, r))
    for c in range(n_chunks):
        out += part[c].astype(np.float64)
    return out
