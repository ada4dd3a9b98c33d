"""Array kernels of the joint NMF: block products, update rules and the Frobenius loss.

Conventions (see :mod:`spatialmultiomics._keys`): the weighted joint matrix is ``X = [s_1 X_1 | s_2 X_2 | ...]``
(n_cells x n_features) and is factorized as ``X ~ W @ G`` where ``G = [G_1 | G_2 | ...]`` (k x n_features) holds the
feature loadings in *weighted* units (``G_b = s_b H_b``). The joint matrix is never built: every product goes
block by block, a sparse block is only ever multiplied with a dense matrix of k columns, and the blocks stay as
the caller gave them (float32, dense C-contiguous or CSR/CSC).

Inside the solvers the cell loadings are stored transposed, ``Wt = W.T`` of shape (k, n_cells), so that both
factors are updated by the same row-wise kernels: an update of ``A`` (k, p) needs only the Gram matrix of the
other factor (k, k) and the cross term ``XA`` (k, p) (``G @ X.T`` for ``Wt``, ``Wt @ X`` for ``G``).

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "cross_g",
    "cross_w",
    "frobenius_loss",
    "hals_sweep",
    "mu_step",
    "squared_norm",
    "sum_and_squared_norm",
    "total_sum",
]

_EPS32 = float(np.finfo(np.float32).eps)
_TINY = 1e-30  # floor of a multiplicative-update denominator: avoids 0 / 0, stays a normal float32
_CHUNK = 1 << 20  # elements per chunk for float64 reductions, to avoid a float64 copy of a big block


def _values(X: Any) -> np.ndarray:
    """Return the stored values of a dense or sparse block as a 1-D array (a view when possible)."""
    return X.data if sp.issparse(X) else np.asarray(X).reshape(-1)


def squared_norm(X: Any) -> float:
    """Return ``||X||_F^2`` of a dense or sparse (canonical, no duplicates) block, accumulated in float64."""
    return sum_and_squared_norm(X)[1]


def sum_and_squared_norm(X: Any) -> tuple[float, float]:
    """Return the sum of all entries and ``||X||_F^2`` of a dense or sparse (canonical) block, in float64.

    One pass over the stored values, in float64 chunks small enough to stay in cache (chunks of 1 << 20 values were
    about twice as slow at 24 M values: every chunk was a fresh allocation).
    """
    v = _values(X)
    total = square = 0.0
    step = 1 << 16
    for start in range(0, v.size, step):
        c = v[start : start + step].astype(np.float64)
        total += float(c.sum())
        square += float(np.dot(c, c))
    return total, square


def total_sum(X: Any) -> float:
    """Return the sum of all entries of a dense or sparse block, accumulated in float64."""
    return float(_values(X).sum(dtype=np.float64))


def cross_w(blocks: Sequence[Any], scales: np.ndarray, offsets: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Return ``G @ X.T`` (= ``(X @ G.T).T``) for the weighted joint matrix ``X = [s_b X_b]``.

    Parameters
    ----------
    blocks
        The blocks ``X_b``, each of shape (n_cells, n_features_b), float32 dense or sparse.
    scales
        Array of shape (n_blocks,): the multiplier ``s_b`` of each block.
    offsets
        Array of shape (n_blocks + 1,): column offsets of the blocks in the joint matrix.
    G
        Array of shape (r, n_features), float32 (``r`` is usually k).

    Returns
    -------
    Array of shape (r, n_cells), float32, C-contiguous.
    """
    out: np.ndarray | None = None
    for X, s, a, b in zip(blocks, scales, offsets[:-1], offsets[1:], strict=True):
        Gb = G[:, a:b] if s == 1.0 else G[:, a:b] * np.float32(s)  # (r, m_b), small
        part = (X @ Gb.T).T if sp.issparse(X) else Gb @ X.T  # (r, n)
        if out is None:
            out = np.ascontiguousarray(part, dtype=np.float32)
        else:
            out += part
    if out is None:  # pragma: no cover - callers always pass at least one block
        msg = "cross_w needs at least one block."
        raise ValueError(msg)
    return out


def cross_g(
    blocks: Sequence[Any],
    scales: np.ndarray,
    offsets: np.ndarray,
    Wt: np.ndarray,
    transposed: Sequence[Any] | None = None,
) -> np.ndarray:
    """Return ``Wt @ X`` (= ``(X.T @ W).T``) for the weighted joint matrix ``X = [s_b X_b]``.

    Parameters
    ----------
    blocks, scales, offsets
        As in :func:`cross_w`.
    Wt
        Array of shape (r, n_cells), float32.
    transposed
        Optional ``[X_b.T for X_b in blocks]`` made once by the caller (for sparse blocks, building the transposed
        view costs more than a small product).

    Returns
    -------
    Array of shape (r, n_features), float32, C-contiguous.
    """
    out = np.empty((Wt.shape[0], int(offsets[-1])), dtype=np.float32)
    W = np.ascontiguousarray(Wt.T) if any(sp.issparse(X) for X in blocks) else None
    for i, (X, s, a, b) in enumerate(zip(blocks, scales, offsets[:-1], offsets[1:], strict=True)):
        dest = out[:, a:b]
        if sp.issparse(X):
            XT = X.T if transposed is None else transposed[i]
            np.copyto(dest, (XT @ W).T)
        else:
            np.matmul(Wt, X, out=dest)
        if s != 1.0:
            dest *= np.float32(s)
    return out


def hals_sweep(A: np.ndarray, gram: np.ndarray, XA: np.ndarray) -> None:
    """Update ``A`` in place by one HALS / coordinate-descent sweep over its rows.

    Minimises ``||X - A.T @ B||_F^2`` over ``A >= 0`` one row (component) at a time, with the other factor ``B``
    fixed, using only ``gram = B @ B.T`` and ``XA = B @ X.T`` (Cichocki & Phan 2009; scikit-learn's ``'cd'``).
    Rows whose Gram diagonal is 0 (an empty component) are left unchanged.

    Parameters
    ----------
    A
        Array of shape (k, p), float32, C-contiguous; updated in place.
    gram
        Array of shape (k, k): Gram matrix of the fixed factor.
    XA
        Array of shape (k, p): cross term of the data with the fixed factor.
    """
    for j in range(A.shape[0]):
        d = float(gram[j, j])
        if d <= 0.0:
            continue
        step = gram[j] @ A  # (p,)
        step -= XA[j]
        step *= np.float32(1.0 / d)
        row = A[j]
        row -= step
        np.maximum(row, 0.0, out=row)


def mu_step(A: np.ndarray, gram: np.ndarray, XA: np.ndarray) -> None:
    """Update ``A`` in place by one multiplicative update (Lee & Seung 2001, Frobenius loss).

    ``A <- A * XA / (gram @ A)``, where the denominator is floored at ``eps32 * max(denominator)`` (plus a tiny
    absolute floor) so that it never divides by zero; the floor is relative, so it does not depend on the
    units of the data. Arguments as in :func:`hals_sweep`.
    """
    den = gram @ A
    floor = _EPS32 * float(den.max(initial=0.0)) + _TINY
    np.maximum(den, floor, out=den)
    np.divide(XA, den, out=den)
    A *= den


def _rows_per_chunk(X: Any) -> int:
    """Return how many rows of block ``X`` hold about ``_CHUNK`` stored values."""
    width = X.nnz / max(X.shape[0], 1) if sp.issparse(X) else X.shape[1]
    return max(1, int(_CHUNK // max(width, 1.0)))


def _cross_exact(X: Any, Wt: np.ndarray, Gb: np.ndarray) -> float:
    """Return ``sum(X * (W @ Gb))`` = ``tr(W.T X Gb.T)`` with products and sums in float64, chunk by chunk.

    ``X`` (n, m) is a float32 block, ``Wt`` (k, n) float32 and ``Gb`` (k, m) float64. Only one chunk of ``X``
    (about ``_CHUNK`` values) is ever converted to float64.
    """
    total = 0.0
    if sp.issparse(X) and X.format == "csc":  # column chunks are the cheap slices of a CSC matrix
        W64 = Wt.T.astype(np.float64)
        step = max(1, int(_CHUNK // max(X.nnz / max(X.shape[1], 1), 1.0)))
        for c0 in range(0, X.shape[1], step):
            sub = X[:, c0 : c0 + step].astype(np.float64)
            total += float(np.sum((sub.T @ W64) * Gb[:, c0 : c0 + step].T))
        return total
    step = _rows_per_chunk(X)
    for r0 in range(0, X.shape[0], step):
        sub = X[r0 : r0 + step]
        sub = sub.astype(np.float64) if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)
        total += float(np.sum((sub @ Gb.T) * Wt[:, r0 : r0 + step].T))
    return total


def frobenius_loss(
    norm_x2: float,
    blocks: Sequence[Any],
    scales: np.ndarray,
    offsets: np.ndarray,
    Wt: np.ndarray,
    G: np.ndarray,
) -> float:
    """Return ``||X - W @ G||_F^2 = ||X||^2 - 2 tr(W.T X G.T) + tr(W.T W G G.T)`` without forming the residual.

    With a good fit the three terms nearly cancel, so the trace terms are accumulated in float64 from float64
    products (the data are converted chunk by chunk; nothing the size of a block is allocated in float64).

    Parameters
    ----------
    norm_x2
        ``||X||_F^2`` of the weighted joint matrix (float64).
    blocks, scales, offsets
        The joint matrix ``X = [s_b X_b]``, as in :func:`cross_w`.
    Wt
        Array of shape (k, n_cells): the transposed cell loadings.
    G
        Array of shape (k, n_features): the weighted feature loadings.

    Returns
    -------
    The squared Frobenius norm of the residual, clipped at 0.
    """
    G64 = G.astype(np.float64)
    cross = 0.0
    for X, s, a, b in zip(blocks, scales, offsets[:-1], offsets[1:], strict=True):
        cross += float(s) * _cross_exact(X, Wt, G64[:, a:b])
    k, n = Wt.shape
    WtW = np.zeros((k, k))
    step = max(1, _CHUNK // max(k, 1))
    for c0 in range(0, n, step):
        chunk = Wt[:, c0 : c0 + step].astype(np.float64)
        WtW += chunk @ chunk.T
    quad = float(np.sum(WtW * (G64 @ G64.T)))
    return max(norm_x2 - 2.0 * cross + quad, 0.0)
