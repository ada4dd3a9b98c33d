"""Numba kernels of the nearest-neighbour searches of :mod:`spatialmultiomics.align._integrate`.

Imported lazily (numba costs ~0.4 s to import). Distances are computed by BLAS in blocks by the caller; these
kernels only keep the ``k`` smallest entries of each row (a sorted insertion, 2-5 ns per entry where
``numpy.argpartition`` costs ~20 ns). They run on one thread: measured on the shared 2-core machine, a
``prange`` version was 3-7x slower per entry (its threads wait for each other on a loaded machine). No logging,
no I/O, no AnnData here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["merge_block", "topk_rows"]


@njit(cache=True, inline="always")
def _insert(bd: np.ndarray, bi: np.ndarray, val: float, j: int) -> None:
    """Insert ``(val, j)`` into the ascending arrays ``bd``/``bi`` (length k), dropping the largest."""
    pos = bd.shape[0] - 1
    while pos > 0 and bd[pos - 1] > val:
        bd[pos] = bd[pos - 1]
        bi[pos] = bi[pos - 1]
        pos -= 1
    bd[pos] = val
    bi[pos] = j


@njit(cache=True)
def topk_rows(D: np.ndarray, k: int, skip_from: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of ``D`` (float32, (n, m)), ascending: (values, columns).

    With ``skip_from >= 0``, row ``r`` ignores column ``skip_from + r`` (a point is not its own neighbour).
    Missing entries (k > m) are ``inf`` / -1.
    """
    n, m = D.shape
    vals = np.full((n, k), np.inf, dtype=np.float32)
    cols = np.full((n, k), -1, dtype=np.int64)
    for r in range(n):
        bd = vals[r]
        bi = cols[r]
        skip = skip_from + r if skip_from >= 0 else -1
        for j in range(m):
            v = D[r, j]
            if v < bd[k - 1] and j != skip:
                _insert(bd, bi, v, j)
    return vals, cols


@njit(cache=True)
def merge_block(
    best_d: np.ndarray, best_i: np.ndarray, rows: np.ndarray, D: np.ndarray, cols: np.ndarray, skip_self: bool
) -> None:
    """Merge the candidates ``D`` (len(rows), len(cols)) into the running best lists of the queries ``rows``.

    ``best_d``/``best_i`` (n_queries, k) are ascending and updated in place; ``cols`` are the candidates' global
    indices. ``rows`` must be distinct (each query sees a candidate list once). With ``skip_self``, query ``q``
    ignores candidate ``q``.
    """
    k = best_d.shape[1]
    for r in range(rows.shape[0]):
        q = rows[r]
        bd = best_d[q]
        bi = best_i[q]
        for m in range(cols.shape[0]):
            v = D[r, m]
            if v < bd[k - 1]:
                j = cols[m]
                if skip_self and j == q:
                    continue
                _insert(bd, bi, v, j)
