"""Numba kernels of the joint NMF for large inputs: per-row sweeps of the cell loadings, CSR products.

Imported lazily (numba costs ~0.4 s to import) and only for inputs large enough to pay for it; see
:mod:`spatialmultiomics.factorize._rowpass`, which holds the NumPy reference of every kernel here and decides
what runs where. The row sweeps, which NumPy can only do column by column over all cells, ``X @ G.T`` and
``X.T @ W`` (float32 partial sums per chunk of rows, float64 across chunks) are numba's; the block scales are
folded into the small matrices by the caller. Rows are split into ``n_chunks`` contiguous chunks, a number fixed
by the caller from the shapes only, and the per-chunk sums are added in chunk order: the results do not depend
on the number of threads.

What bounds them (issue 15; 2-core machine, one thread, 200,000 cells x 2,000 genes at 10 % + 40 proteins,
k = 20, CPU time under other jobs' load, so +-20 %): none is bound by memory bandwidth (reading the CSR once
takes ~0.04 s) or by multiply-adds (~0.01 s per product at the SIMD peak), all by dependent instructions and
branches. ``X @ G.T`` updates its output row once per four stored values (the load-add-store chain of one update
per value bounded it): 0.20-0.26 -> 0.15-0.17 s, without padding ``G`` to 32 columns any more. The row sweeps
(10 per row from a random start) went four rows in lockstep, so that the chains of coordinate updates of different
rows overlap (each row still gets exactly its own updates), with a branch-free update (a coordinate clamped at
zero made the old branches unpredictable) and the axpys in a function of their own, which LLVM vectorises (it did
not inside the parallel loop): 0.49-0.54 -> 0.28-0.38 s. The HALS sweeps now go 64 rows at a time, transposed,
the rows along the SIMD lanes (a coordinate's update and the k axpys of ``gram @ w`` are each one loop over the
block's rows, no dependence between lanes, a row that stopped kept by a select): at <= 5 sweeps a row, 0.15-0.16
-> 0.06-0.07 s at 200,000 cells, the same values bit for bit (float32 blocks gave 0.05 s more and were dropped:
they change the values).

Why a compile-time width was slower at first (the width ``k`` as a closure constant, ``G`` padded to 24 or 32
columns, scalar accumulators, loops of 8: all 1.2-4x slower): numba switches LLVM's SLP vectoriser off (numba PR
8852), so a loop over a constant width is unrolled into scalar code (the assembly: 24 ``vfmadd231ss`` per stored
value; the same loop in C, gcc -O3 -march=native, 0.38 s against 0.11 s). With the SLP vectoriser on while they
compile (:func:`_slp_compiled`), the kernels for one literal width are the fastest: ``X.T @ W`` 0.18-0.22 ->
0.12-0.13 s at 200,000 cells (the row of ``W`` stays in registers; the same sums bit for bit), ``X @ G.T`` two
stored values per update 0.15 -> 0.11 s at k = 20 (1.3-1.6x at k = 8 to 32). They run only for large products
(``FIXED_MIN_WORK``), where their compilation pays. Tried and dropped: one fused kernel for the whole pass
(product, sweeps and ``X.T @ W`` of each row while it is in cache: 0.59 s against 0.40 s with the old kernels,
0.75 s against 0.26 s with the width kernels and the blocked sweeps: its loops vectorise worse), per-chunk sums of
``X.T @ W`` that fit L1 and columns in L1-sized blocks with per-row segment pointers (slower), 4 or 8 stored values
per update in the width kernels, ``W`` padded to 24 or 32 columns (within 10 %). What is left in the products is
the random access to rows of ``G.T`` / ``X.T @ W`` (80 bytes each, in L2): about 2.3-2.6 ns per stored value at
1,000,000 cells.

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from numba import njit, prange
from numba.core import config as numba_config

__all__ = ["csr_dense_product", "csr_dense_tproduct", "sweep_rows"]

_EPS32 = float(np.finfo(np.float32).eps)
_TINY = 1e-30

#: widths of ``B`` with kernels of their own in :func:`csr_dense_product` and :func:`csr_dense_tproduct` (each
#: compiled once per width and index types, 2-3 s, then loaded from numba's cache, ~1 s a process: the literal
#: width is found by a first typing pass)
MAX_FIXED_WIDTH = 32
#: multiply-adds of one product (stored values x width) from which the kernel of its width is used: ~0.6 s of the
#: generic loop, of which it saves 0.15-0.3 s per call; below, its compilation would not pay for itself in a fit
FIXED_MIN_WORK = 2e9
_SLP_LOCK = threading.Lock()
_SLP_READY: set[tuple[Any, ...]] = set()


@contextmanager
def _slp_compiled(key: tuple[Any, ...]) -> Iterator[None]:
    """Compile the kernels called inside with LLVM's SLP vectoriser on, once per ``key`` (types and width).

    numba switches the SLP vectoriser off by default since 0.57 (miscompilations reported in other code, numba
    PR 8852), and the switch is process-wide, so it is set only while a specialization is compiled (or loaded from
    the cache), under a lock; the tests check the kernel compiled this way against :func:`_tproduct_any` bit for bit.
    Other numba code compiled by another thread at that moment gets the vectoriser too.
    """
    if key in _SLP_READY:
        yield
        return
    with _SLP_LOCK:
        before = numba_config.SLP_VECTORIZE
        numba_config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            numba_config.SLP_VECTORIZE = before
        _SLP_READY.add(key)


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


@njit(cache=True, inline="always")
def _axpy(a: float, x: np.ndarray, y: np.ndarray) -> None:
    """Set ``y += a * x`` for 1-D arrays (written on whole rows so that LLVM vectorises it)."""
    for q in range(y.shape[0]):
        y[q] += a * x[q]


_GROUP = 4  # rows swept in lockstep: their coordinate updates are independent chains that the CPU overlaps


@njit(cache=True)
def _sweep_chunk(
    W: np.ndarray,
    xg: np.ndarray,
    gram: np.ndarray,
    inv: np.ndarray,
    row0: int,
    start: int,
    stop: int,
    update: int,
    max_inner: int,
    delta2: float,
) -> tuple[float, float]:
    """Sweep rows ``start .. stop`` of ``xg`` (rows ``row0 + start ..`` of ``W``); return their cross0, quad0."""
    k = xg.shape[1]
    cross0 = 0.0
    quad0 = 0.0
    w = np.empty((_GROUP, k))
    gw = np.empty((_GROUP, k))
    first = np.zeros(_GROUP)
    move = np.zeros(_GROUP)
    active = np.zeros(_GROUP, dtype=np.bool_)
    for g0 in range(start, stop, _GROUP):
        nr = min(_GROUP, stop - g0)
        for t in range(nr):
            i = g0 + t
            for j in range(k):
                w[t, j] = W[row0 + i, j]
            _gram_times(gram, w[t], gw[t])
            for j in range(k):
                quad0 += gw[t, j] * w[t, j]
                cross0 += w[t, j] * np.float64(xg[i, j])
            active[t] = True
        if update == 0:
            continue
        for it in range(max_inner):
            for t in range(nr):
                move[t] = 0.0
            if update == 1:
                for j in range(k):
                    dj = inv[j]
                    if dj == 0.0:
                        continue
                    for t in range(nr):
                        if active[t]:  # no branch on the data (a mispredicted one costs more than the axpy)
                            new = max(w[t, j] + (np.float64(xg[g0 + t, j]) - gw[t, j]) * dj, 0.0)
                            diff = new - w[t, j]
                            move[t] += diff * diff
                            w[t, j] = new
                            _axpy(diff, gram[j], gw[t])
            else:
                for t in range(nr):
                    if active[t]:
                        top = 0.0
                        for j in range(k):
                            top = max(top, gw[t, j])
                        floor = _EPS32 * top + _TINY
                        for j in range(k):
                            new = w[t, j] * np.float64(xg[g0 + t, j]) / max(gw[t, j], floor)
                            move[t] += (new - w[t, j]) ** 2
                            w[t, j] = new
                        _gram_times(gram, w[t], gw[t])
            n_active = 0
            for t in range(nr):
                if active[t]:
                    if it == 0:
                        first[t] = move[t]
                        active[t] = move[t] != 0.0
                    elif move[t] <= delta2 * first[t]:
                        active[t] = False
                    n_active += active[t]
            if n_active == 0:
                break
        for t in range(nr):
            for j in range(k):
                W[row0 + g0 + t, j] = np.float32(w[t, j])
    return cross0, quad0


_BLOCK = 64  # rows of a block of the HALS sweeps, stored transposed: (k, _BLOCK) float64, three of them fit L1


@njit(cache=True)
def _sweep_block_hals(
    W: np.ndarray,
    xg: np.ndarray,
    gram: np.ndarray,
    inv: np.ndarray,
    row0: int,
    start: int,
    stop: int,
    max_inner: int,
    delta2: float,
) -> tuple[float, float]:
    """HALS sweeps of rows ``start .. stop`` of ``xg``, ``_BLOCK`` rows at a time, the rows along the SIMD lanes.

    A block is held transposed (``w``, ``xg`` and ``gram @ w`` as (k, _BLOCK)), so the update of coordinate j is
    one vectorised loop over the block's rows and the update of ``gram @ w`` k of them, with no dependence between
    lanes. A row that has stopped keeps its values (its change is set to zero): each row gets exactly the updates,
    in the same order and the same float64 arithmetic, as :func:`_sweep_chunk` gives it alone (checked bit for bit).
    Returns the rows' cross0, quad0 as :func:`_sweep_chunk`, summed row by row in the same order.
    """
    k = xg.shape[1]
    cross0 = 0.0
    quad0 = 0.0
    w = np.zeros((k, _BLOCK))
    gw = np.zeros((k, _BLOCK))
    x = np.zeros((k, _BLOCK))
    diff = np.zeros(_BLOCK)
    move = np.zeros(_BLOCK)
    first = np.zeros(_BLOCK)
    active = np.zeros(_BLOCK, dtype=np.bool_)
    for b0 in range(start, stop, _BLOCK):
        nr = min(_BLOCK, stop - b0)
        for t in range(_BLOCK):
            active[t] = t < nr
            for j in range(k):
                w[j, t] = W[row0 + b0 + t, j] if t < nr else 0.0
                x[j, t] = np.float64(xg[b0 + t, j]) if t < nr else 0.0
        # gram @ w in the order of _gram_times (a zero w_j adds zeros there and is skipped there: the same values)
        for q in range(k):
            for t in range(_BLOCK):
                gw[q, t] = 0.0
        for j in range(k):
            for q in range(k):
                g = gram[j, q]
                for t in range(_BLOCK):
                    gw[q, t] += w[j, t] * g
        for t in range(nr):
            for j in range(k):
                quad0 += gw[j, t] * w[j, t]
                cross0 += w[j, t] * x[j, t]
        for it in range(max_inner):
            for t in range(_BLOCK):
                move[t] = 0.0
            for j in range(k):
                dj = inv[j]
                if dj == 0.0:
                    continue
                for t in range(_BLOCK):
                    old = w[j, t]
                    new = max(old + (x[j, t] - gw[j, t]) * dj, 0.0)
                    new = new if active[t] else old
                    diff[t] = new - old
                    move[t] += diff[t] * diff[t]
                    w[j, t] = new
                for q in range(k):
                    g = gram[j, q]
                    for t in range(_BLOCK):
                        gw[q, t] += diff[t] * g
            n_active = 0
            for t in range(nr):
                if active[t]:
                    if it == 0:
                        first[t] = move[t]
                        active[t] = move[t] != 0.0
                    elif move[t] <= delta2 * first[t]:
                        active[t] = False
                    n_active += active[t]
            if n_active == 0:
                break
        for t in range(nr):
            for j in range(k):
                W[row0 + b0 + t, j] = np.float32(w[j, t])
    return cross0, quad0


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

    The update of one coordinate waits for the previous one, so HALS goes ``_BLOCK`` rows at a time with the rows
    along the SIMD lanes (:func:`_sweep_block_hals`) and the multiplicative rule in groups of ``_GROUP`` rows swept
    in lockstep (:func:`_sweep_chunk`); either way each row gets exactly the updates it would get alone (checked bit
    for bit: blocks against the row kernel, groups of 1, 2, 4, 8). The diagonal of ``gram`` is inverted once (a
    multiplication instead of a division per update).

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
    inv = np.zeros(k)
    for j in range(k):
        if gram[j, j] > 0.0:
            inv[j] = 1.0 / gram[j, j]
    for c in prange(n_chunks):
        a, b = c * step, min(n, (c + 1) * step)
        if update == 1:
            cross0[c], quad0[c] = _sweep_block_hals(W, xg, gram, inv, row0, a, b, max_inner, delta2)
        else:
            cross0[c], quad0[c] = _sweep_chunk(W, xg, gram, inv, row0, a, b, update, max_inner, delta2)
    total_cross0 = 0.0
    total_quad0 = 0.0
    for c in range(n_chunks):  # fixed order: independent of the number of threads
        total_cross0 += cross0[c]
        total_quad0 += quad0[c]
    return total_cross0, total_quad0


@njit(cache=True, parallel=True)
def _product_any(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``X @ B`` for any width of ``B``, four stored values of a row at a time: one update of the output row per
    four rows of ``B`` (its load-add-store chain, not the multiply-adds, bounded the one-value-at-a-time loop)."""
    n = indptr.shape[0] - 1
    r = B.shape[1]
    out = np.zeros((n, r), dtype=np.float32)
    for i in prange(n):
        p = indptr[i]
        stop = indptr[i + 1]
        while p + 4 <= stop:
            v0, v1, v2, v3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            c0, c1, c2, c3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
            for j in range(r):
                out[i, j] += (v0 * B[c0, j] + v1 * B[c1, j]) + (v2 * B[c2, j] + v3 * B[c3, j])
            p += 4
        while p < stop:
            v0 = data[p]
            c0 = indices[p]
            for j in range(r):
                out[i, j] += v0 * B[c0, j]
            p += 1
    return out


@njit(cache=True, parallel=True)
def _tproduct_any(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, m: int, n_chunks: int
) -> np.ndarray:
    """``X.T @ B`` for any width of ``B`` (the loop over its columns vectorised by LLVM's loop vectoriser)."""
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


@njit(cache=True, parallel=True)
def _tproduct_fixed(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, m: int, n_chunks: int, width: int
) -> np.ndarray:
    """``X.T @ B`` compiled for one width of ``B`` (a literal): the loop over the columns is unrolled, the row of
    ``B`` stays in registers and the SLP vectoriser packs the updates (compile it under :func:`_slp_compiled`).

    The loop nest repeats :func:`_tproduct_any`'s on purpose: shared through an inlined helper over ``part[c]``
    it lost the vectorisation (0.36 s against 0.12 s at 200,000 cells).
    """
    numba.literally(width)
    n = indptr.shape[0] - 1
    step = (n + n_chunks - 1) // n_chunks
    part = np.zeros((n_chunks, m, width), dtype=np.float32)
    for c in prange(n_chunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            for p in range(indptr[i], indptr[i + 1]):
                v = data[p]
                col = indices[p]
                for j in range(width):
                    part[c, col, j] += v * B[i, j]
    out = np.zeros((m, width))
    for c in range(n_chunks):
        out += part[c].astype(np.float64)
    return out


@njit(cache=True, parallel=True)
def _product_fixed(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, width: int) -> np.ndarray:
    """``X @ B`` compiled for one width of ``B`` (a literal), two stored values at a time: the output row stays in
    registers and the SLP vectoriser packs the updates (compile it under :func:`_slp_compiled`)."""
    numba.literally(width)
    n = indptr.shape[0] - 1
    out = np.zeros((n, width), dtype=np.float32)
    for i in prange(n):
        p = indptr[i]
        stop = indptr[i + 1]
        while p + 2 <= stop:
            v0, v1 = data[p], data[p + 1]
            c0, c1 = indices[p], indices[p + 1]
            for j in range(width):
                out[i, j] += v0 * B[c0, j] + v1 * B[c1, j]
            p += 2
        if p < stop:
            v0 = data[p]
            c0 = indices[p]
            for j in range(width):
                out[i, j] += v0 * B[c0, j]
    return out


def _fixed_width(data: np.ndarray, r: int, fixed: bool | None) -> bool:
    """Whether a product over ``data`` with ``r`` columns runs the kernel compiled for its width (None: by size)."""
    if not 1 <= r <= MAX_FIXED_WIDTH:
        return False
    return data.size * r >= FIXED_MIN_WORK if fixed is None else bool(fixed)


def csr_dense_product(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, *, fixed: bool | None = None
) -> np.ndarray:
    """Return ``X @ B`` (n, r), float32, for a CSR matrix ``X`` (n, m) and a dense float32 ``B`` (m, r).

    Large products (``FIXED_MIN_WORK``) with widths up to ``MAX_FIXED_WIDTH`` run a kernel compiled for that width
    with the SLP vectoriser (1.3-1.6x faster at r = 8 to 32 than the generic loop, whose sums are in another order:
    equal to float32 rounding); the others (or ``fixed=False``; ``fixed=True`` forces it) the generic loop.
    """
    r = B.shape[1]
    if not _fixed_width(data, r, fixed):
        return _product_any(indptr, indices, data, B)
    with _slp_compiled(("product", r, indptr.dtype.str, indices.dtype.str, data.dtype.str, B.dtype.str)):
        return _product_fixed(indptr, indices, data, B, r)


def csr_dense_tproduct(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    B: np.ndarray,
    m: int,
    n_chunks: int,
    *,
    fixed: bool | None = None,
) -> np.ndarray:
    """Return ``X.T @ B`` (m, r), float64, for a CSR matrix ``X`` (n, m) and a dense float32 ``B`` (n, r).

    Rows go in ``n_chunks`` fixed chunks (float32 partial sums) added in chunk order in float64 (independent of the
    number of threads). Large products (``FIXED_MIN_WORK``) with widths up to ``MAX_FIXED_WIDTH`` run a kernel
    compiled for that width with the SLP vectoriser (1.5-1.7x faster at r = 15 and 20, the same values bit for
    bit); the others (or ``fixed=False``; ``fixed=True`` forces it) the generic loop.
    """
    r = B.shape[1]
    if not _fixed_width(data, r, fixed):
        return _tproduct_any(indptr, indices, data, B, m, n_chunks)
    with _slp_compiled(("tproduct", r, indptr.dtype.str, indices.dtype.str, data.dtype.str, B.dtype.str)):
        return _tproduct_fixed(indptr, indices, data, B, m, n_chunks, r)
