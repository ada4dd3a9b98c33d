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
-> 0.06-0.07 s at 200,000 cells, the same values bit for bit. They stay float64 (float32 blocks gave only 0.05 s
more) and are the reference of the float32 sweeps in registers below.

The kernels for one literal width (large passes only: ``FIXED_MIN_WORK``) are written in LLVM IR (numba
intrinsics): the two CSR products (k <= 32, :func:`_row_product_ir`, :func:`_row_scatter_ir`) hold a row of ``B``
as a few explicit vectors of a power of two lanes (k = 20: 16 + 4), which LLVM maps onto the machine's registers
(AVX-512, AVX2 or SSE), with four accumulators of the output row (``X @ B``) or four rows of ``X.T @ W`` loaded
before any is stored; the HALS sweeps (k <= 24 with AVX-512, :func:`_hals_tiles_ir`) keep ``gram @ w`` of 16 rows
in registers through every coordinate update, in float32. numba's own loops over a literal width were unrolled
into scalar code (numba switches LLVM's SLP vectoriser off, numba PR 8852) and, with it switched on while they
compiled, kept the output in memory or in part of the registers; the blocked float64 sweeps load and store all of
``gram @ w`` for each coordinate. At 1,000,000 cells (one thread): ``X @ G.T`` 0.384 -> 0.289 s, ``X.T @ W``
0.454 -> 0.315 s (the same sums bit for bit), the sweeps 0.27 -> 0.10 s; hand-written C with AVX-512 intrinsics
does the products at 1.35 and 1.6-1.7 ns per stored value against 1.55 and 1.7 here. A 20-lane vector carried
round a loop was scalarised by LLVM (3.5x slower), hence the powers of two. The width is a ``numba.literally``
argument, whose dispatch retypes it on every call (14 ms a call): :func:`_call_with_width` calls the compiled
specialization directly. Tried and dropped: one fused kernel for the whole pass (product, sweeps and ``X.T @ W``
of each row while it is in cache: its loops vectorised worse), the output of ``X.T @ W`` split into 64-byte
aligned pieces (faster in C, not here), float64 sweeps in registers (latency-bound: one chain of 8 rows, no
faster than the blocks), per-chunk sums of ``X.T @ W`` that fit L1, columns in L1-sized blocks with per-row
segment pointers, ``G`` split into one cache line per row, ``W`` padded to 24 or 32 columns.

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

__all__ = ["csr_dense_product", "csr_dense_tproduct", "fixed_pays", "sweep_rows"]

_EPS32 = float(np.finfo(np.float32).eps)
_TINY = 1e-30

#: widths of ``B`` with kernels of their own in :func:`csr_dense_product` and :func:`csr_dense_tproduct` (each
#: compiled once per width and index types, 2-3 s, then loaded from numba's cache, ~1 s a process: the literal
#: width is found by a first typing pass)
MAX_FIXED_WIDTH = 32
#: multiply-adds of one product (stored values x width) from which the kernel of its width is used: ~0.6 s of the
#: generic loop, of which it saves 0.15-0.3 s per call; below, its compilation would not pay for itself in a fit
FIXED_MIN_WORK = 2e9


def fixed_pays(stored: int, width: int) -> bool:
    """Return whether products over ``stored`` values with ``width`` columns are large enough for the kernels
    compiled for the width (``FIXED_MIN_WORK``): the one rule of :func:`csr_dense_product`,
    :func:`csr_dense_tproduct`, ``RowData.row_pass`` and the Dask backend."""
    return stored * width >= FIXED_MIN_WORK


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


@njit(cache=True)
def _inverse_diagonal(gram: np.ndarray) -> np.ndarray:
    """Return ``1 / gram[j, j]`` where it is positive, else 0 (the coordinate is then never updated), in the
    dtype of ``gram`` (float32: the float64 quotient of two float32 rounds to the float32 quotient)."""
    k = gram.shape[0]
    inv = np.zeros(k, dtype=gram.dtype)
    for j in range(k):
        if gram[j, j] > 0.0:
            inv[j] = 1.0 / gram[j, j]
    return inv


@njit(cache=True)
def _chunk_totals(cross0: np.ndarray, quad0: np.ndarray) -> tuple[float, float]:
    """Add the per-chunk traces in chunk order (independent of the number of threads)."""
    total_cross0 = 0.0
    total_quad0 = 0.0
    for c in range(cross0.shape[0]):
        total_cross0 += cross0[c]
        total_quad0 += quad0[c]
    return total_cross0, total_quad0


@njit(cache=True, parallel=True)
def _sweep_rows_any(
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
    n = xg.shape[0]
    step = (n + n_chunks - 1) // n_chunks
    cross0 = np.zeros(n_chunks)
    quad0 = np.zeros(n_chunks)
    delta2 = delta * delta
    inv = _inverse_diagonal(gram)
    for c in prange(n_chunks):
        a, b = c * step, min(n, (c + 1) * step)
        if update == 1:
            cross0[c], quad0[c] = _sweep_block_hals(W, xg, gram, inv, row0, a, b, max_inner, delta2)
        else:
            cross0[c], quad0[c] = _sweep_chunk(W, xg, gram, inv, row0, a, b, update, max_inner, delta2)
    return _chunk_totals(cross0, quad0)


@njit(cache=True, parallel=True)
def _product_any(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """Set ``out = X @ B`` for any width of ``B``, four stored values of a row at a time: one update of the output
    row per four rows of ``B`` (its load-add-store chain, not the multiply-adds, bounded the one-value-at-a-time
    loop)."""
    n = indptr.shape[0] - 1
    r = B.shape[1]
    for i in prange(n):
        for j in range(r):
            out[i, j] = 0.0
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


# ---------------------------------------------------------------------------------------------------------------
# Row kernels written in LLVM IR: a row of ``B`` as explicit vectors of powers of two (k = 20: 16 + 4 lanes)


def _vector_parts(k: int) -> list[tuple[int, int]]:
    """Return ``(offset, lanes)`` pieces of a row of width ``k`` with lanes in 16, 8, 4, 2, 1 (k = 20: 16 + 4).

    LLVM splits vectors of a power of two into the machine's registers (AVX-512, AVX2 or SSE alike); it does not
    keep a 20-lane vector carried round a loop in registers (it scalarised it: 3.5x slower)."""
    out, off = [], 0
    for lanes in (16, 8, 4, 2, 1):
        while k - off >= lanes:
            out.append((off, lanes))
            off += lanes
    return out


def _splat(b: Any, value: Any, vt: Any) -> Any:
    """The scalar ``value`` in every lane of a vector of type ``vt``."""
    v = b.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count)
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), mask)


class _RowIR:
    """LLVM IR helpers of one row kernel: pointers into C-contiguous arrays, index loads, vectors of a row."""

    def __init__(self, context: Any, builder: Any, argtypes: Any, args: Any, k: int) -> None:
        self.b = builder
        self.k = k
        self.i64 = ir.IntType(64)
        self.parts = _vector_parts(k)
        self.vts = [ir.VectorType(ir.FloatType(), lanes) for _, lanes in self.parts]
        self.ptrs = [
            context.make_array(t)(context, builder, v).data for t, v in zip(argtypes[:5], args[:5], strict=True)
        ]
        self.signed = [getattr(t.dtype, "signed", True) for t in argtypes[:2]]
        self.row = context.cast(builder, args[5], argtypes[5], types.int64)
        self.start = self.index(0, self.row)  # the row's stored values: start .. stop
        self.stop = self.index(0, builder.add(self.row, self.const(1)))

    def const(self, value: int) -> Any:
        return ir.Constant(self.i64, value)

    def index(self, which: int, pos: Any) -> Any:
        """Load entry ``pos`` of ``indptr`` (which 0) or ``indices`` (1) as a 64-bit integer."""
        v = self.b.load(self.b.gep(self.ptrs[which], [pos]))
        if v.type.width == 64:
            return v
        return self.b.sext(v, self.i64) if self.signed[which] else self.b.zext(v, self.i64)

    def row_ptr(self, which: int, r: Any) -> Any:
        """Pointer to row ``r`` of the (n, k) float32 array argument ``which``."""
        return self.b.gep(self.ptrs[which], [self.b.mul(r, self.const(self.k))])

    def part_ptr(self, row: Any, j: int) -> Any:
        return self.b.bitcast(self.b.gep(row, [self.const(self.parts[j][0])]), self.vts[j].as_pointer())

    def load_row(self, row: Any) -> list[Any]:
        return [self.b.load(self.part_ptr(row, j), align=4) for j in range(len(self.parts))]

    def store_row(self, row: Any, values: list[Any]) -> None:
        for j, value in enumerate(values):
            self.b.store(value, self.part_ptr(row, j), align=4)

    def value(self, pos: Any) -> Any:
        """Load stored value ``pos`` of ``data``."""
        return self.b.load(self.b.gep(self.ptrs[2], [pos]))

    def axpy(self, acc: list[Any], value: Any, row: list[Any]) -> list[Any]:
        """``acc + value * row`` piece by piece: a multiply then an add (no fused multiply-add, as numba's loops)."""
        return [
            self.b.fadd(a, self.b.fmul(_splat(self.b, value, vt), x))
            for vt, a, x in zip(self.vts, acc, row, strict=True)
        ]

    def blocks(self, *names: str) -> list[Any]:
        """New basic blocks of the function being built, in order."""
        return [self.b.function.append_basic_block(name) for name in names]


def _row_kernel_signature(indptr: Any, indices: Any, data: Any, B: Any, out: Any, i: Any, width: Any) -> Any:
    """The signature of an IR row kernel for these argument types, or None when they do not suit it (a literal
    width, integer index arrays, float32 C-contiguous values, 2-D ``B`` and ``out``)."""
    ints = all(isinstance(t, types.Array) and isinstance(t.dtype, types.Integer) for t in (indptr, indices))
    floats = all(isinstance(t, types.Array) and t.dtype == types.float32 and t.layout == "C" for t in (data, B, out))
    if not (isinstance(width, types.IntegerLiteral) and ints and floats and B.ndim == 2 and out.ndim == 2):
        return None
    return types.void(indptr, indices, data, B, out, i, width)


_UNROLL = 4  # stored values per step of the row kernels (four independent accumulators / four rows in flight)


@intrinsic
def _row_product_ir(typingctx: Any, indptr: Any, indices: Any, data: Any, B: Any, out: Any, i: Any, width: Any):
    """Set row ``i`` of ``out`` (n, width) to ``X[i] @ B``: four accumulators of the row in vector registers, each
    summing every fourth stored value, added pairwise at the end."""
    sig = _row_kernel_signature(indptr, indices, data, B, out, i, width)
    if sig is None:
        return None
    k = width.literal_value

    def codegen(context, builder, sig, args):
        r = _RowIR(context, builder, sig.args, args, k)
        b = builder
        start, stop = r.start, r.stop
        zeros = [ir.Constant(vt, [0.0] * vt.count) for vt in r.vts]
        entry = b.block
        head, body, tail_head, tail_body, done = r.blocks("four", "four.body", "one", "one.body", "done")
        b.branch(head)
        b.position_at_end(head)
        p = b.phi(r.i64)
        p.add_incoming(start, entry)
        accs = [[b.phi(vt) for vt in r.vts] for _ in range(_UNROLL)]
        for acc in accs:
            for phi, zero in zip(acc, zeros, strict=True):
                phi.add_incoming(zero, entry)
        b.cbranch(b.icmp_signed("<=", b.add(p, r.const(_UNROLL)), stop), body, tail_head)
        b.position_at_end(body)
        for u in range(_UNROLL):
            q = b.add(p, r.const(u))
            row = r.load_row(r.row_ptr(3, r.index(1, q)))
            for phi, new in zip(accs[u], r.axpy(accs[u], r.value(q), row), strict=True):
                phi.add_incoming(new, body)
        p.add_incoming(b.add(p, r.const(_UNROLL)), body)
        b.branch(head)
        b.position_at_end(tail_head)  # the last stored values (fewer than four) into the first accumulator
        q = b.phi(r.i64)
        q.add_incoming(p, head)
        acc = [b.phi(vt) for vt in r.vts]
        for phi, a in zip(acc, accs[0], strict=True):
            phi.add_incoming(a, head)
        b.cbranch(b.icmp_signed("<", q, stop), tail_body, done)
        b.position_at_end(tail_body)
        row = r.load_row(r.row_ptr(3, r.index(1, q)))
        for phi, new in zip(acc, r.axpy(acc, r.value(q), row), strict=True):
            phi.add_incoming(new, tail_body)
        q.add_incoming(b.add(q, r.const(1)), tail_body)
        b.branch(tail_head)
        b.position_at_end(done)
        totals = [b.fadd(b.fadd(acc[j], accs[1][j]), b.fadd(accs[2][j], accs[3][j])) for j in range(len(r.parts))]
        r.store_row(r.row_ptr(4, r.row), totals)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _row_scatter_ir(typingctx: Any, indptr: Any, indices: Any, data: Any, B: Any, out: Any, i: Any, width: Any):
    """Add ``X[i, c] * B[i]`` to row ``c`` of ``out`` (m, width) for every stored value of row ``i``, in order.

    Four stored values per step: the four rows of ``out`` are loaded before any is stored (their updates overlap
    instead of waiting on each other's stores), which is exact when their columns differ; a step whose columns
    are not strictly increasing (a CSR matrix that is not canonical) goes one value at a time. Each row of ``out``
    gets the same additions in the same order as the one-at-a-time loop: the same sums bit for bit."""
    sig = _row_kernel_signature(indptr, indices, data, B, out, i, width)
    if sig is None:
        return None
    k = width.literal_value

    def codegen(context, builder, sig, args):
        r = _RowIR(context, builder, sig.args, args, k)
        b = builder
        start, stop = r.start, r.stop
        w = r.load_row(r.row_ptr(3, r.row))
        entry = b.block
        head, body, fast, tail_head, tail_body, done = r.blocks(
            "four", "four.body", "four.distinct", "one", "one.body", "done"
        )
        b.branch(head)
        b.position_at_end(head)
        p = b.phi(r.i64)
        p.add_incoming(start, entry)
        b.cbranch(b.icmp_signed("<=", b.add(p, r.const(_UNROLL)), stop), body, tail_head)
        b.position_at_end(body)
        cols = [r.index(1, b.add(p, r.const(u))) for u in range(_UNROLL)]
        distinct = b.icmp_signed("<", cols[0], cols[1])
        for u in range(1, _UNROLL - 1):
            distinct = b.and_(distinct, b.icmp_signed("<", cols[u], cols[u + 1]))
        b.cbranch(distinct, fast, tail_head)
        b.position_at_end(fast)
        rows = [r.row_ptr(4, c) for c in cols]
        olds = [r.load_row(row) for row in rows]
        for u in range(_UNROLL):
            r.store_row(rows[u], r.axpy(olds[u], r.value(b.add(p, r.const(u))), w))
        p.add_incoming(b.add(p, r.const(_UNROLL)), fast)
        b.branch(head)
        b.position_at_end(tail_head)  # the rest of the row, or one value at a time after a step of equal columns
        q = b.phi(r.i64)
        q.add_incoming(p, head)
        q.add_incoming(p, body)
        b.cbranch(b.icmp_signed("<", q, stop), tail_body, done)
        b.position_at_end(tail_body)
        row = r.row_ptr(4, r.index(1, q))
        r.store_row(row, r.axpy(r.load_row(row), r.value(q), w))
        q.add_incoming(b.add(q, r.const(1)), tail_body)
        b.branch(tail_head)
        b.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True)
def _tproduct_fixed(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, m: int, n_chunks: int, width: int
) -> np.ndarray:
    """``X.T @ B`` for one width of ``B`` (a literal): :func:`_row_scatter_ir` row by row, the same chunks and
    sums as :func:`_tproduct_any` bit for bit."""
    numba.literally(width)
    n = indptr.shape[0] - 1
    step = (n + n_chunks - 1) // n_chunks
    part = np.zeros((n_chunks, m, width), dtype=np.float32)
    for c in prange(n_chunks):
        dest = part[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            _row_scatter_ir(indptr, indices, data, B, dest, i, width)
    out = np.zeros((m, width))
    for c in range(n_chunks):
        out += part[c].astype(np.float64)
    return out


@njit(cache=True, parallel=True)
def _product_fixed(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, B: np.ndarray, out: np.ndarray, width: int
) -> None:
    """Set ``out = X @ B`` for one width of ``B`` (a literal): :func:`_row_product_ir` row by row."""
    numba.literally(width)
    n = indptr.shape[0] - 1
    for i in prange(n):
        _row_product_ir(indptr, indices, data, B, out, i, width)


def _host_features() -> dict[str, bool]:
    """The features numba compiles for, as LLVM names them: ``NUMBA_CPU_FEATURES`` when set, none for a named
    ``NUMBA_CPU_NAME`` without them (a portable build), else the host CPU's (empty when they cannot be read)."""
    from numba.core import config

    if config.CPU_FEATURES:
        return {f[1:]: f[0] == "+" for f in str(config.CPU_FEATURES).split(",") if len(f) > 1}
    if config.CPU_NAME:
        return {}
    try:
        from llvmlite import binding

        return dict(binding.get_host_cpu_features())
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - best effort
        return {}


_FEATURES = _host_features()
_FMA = bool(_FEATURES.get("fma", False))
_WIDE = bool(_FEATURES.get("avx512f", False))
#: float32 rows that the HALS sweeps of :func:`_hals_tiles_ir` keep in one vector register (16 with AVX-512)
_LANES = 16 if _WIDE else 8
#: widths with HALS sweeps of their own: ``gram @ w`` of a tile (k vectors) and the update's few must fit the
#: vector registers (32 with AVX-512, 16 with AVX2)
MAX_SWEEP_WIDTH = 24 if _WIDE else 10


@intrinsic
def _hals_tiles_ir(
    typingctx: Any,
    w: Any,
    x: Any,
    gram: Any,
    inv: Any,
    active: Any,
    traces: Any,
    max_inner: Any,
    delta2: Any,
    width: Any,
):
    """HALS sweeps of one block of rows, ``_LANES`` rows at a time with their ``gram @ w`` in vector registers.

    ``w``, ``x`` (k, _BLOCK) float32 hold the block's rows transposed (``w`` updated in place), ``gram`` (k, k) and
    ``inv`` (k,) float32, ``active`` (_BLOCK,) the rows that exist; ``traces`` (2, _BLOCK) float64 receives each
    row's ``w @ gram @ w`` and ``w @ x`` before the sweeps. Per tile of rows: ``gram @ w`` is built in registers
    (k vectors), then carried through every coordinate update of every sweep (the block kernel loads and stores
    all of it for each coordinate), with the rule of :func:`_sweep_block_hals` in float32: a coordinate with
    ``inv[j] == 0`` skipped, a row stopped when a sweep moves it by at most ``delta2`` times its first move
    squared; a tile stops when all its rows have. Multiply-adds are fused where the CPU has FMA.
    """

    def c_array(t: Any, dtype: Any, ndim: int) -> bool:
        return isinstance(t, types.Array) and t.dtype == dtype and t.ndim == ndim and t.layout == "C"

    f32 = types.float32
    arrays = c_array(w, f32, 2) and c_array(x, f32, 2) and c_array(gram, f32, 2) and c_array(inv, f32, 1)
    arrays = arrays and c_array(active, types.boolean, 1) and c_array(traces, types.float64, 2)
    if not isinstance(width, types.IntegerLiteral) or not arrays:
        return None
    k = width.literal_value
    sig = types.void(w, x, gram, inv, active, traces, max_inner, delta2, width)
    lanes = _LANES
    use_fma = _FMA

    def codegen(context, builder, sig, args):
        b = builder
        i64, f32, f64 = ir.IntType(64), ir.FloatType(), ir.DoubleType()
        vt = ir.VectorType(f32, lanes)
        vd = ir.VectorType(f64, lanes)
        mt = ir.VectorType(ir.IntType(1), lanes)
        wp, xp, gp, ip, ap, tp = (
            context.make_array(t)(context, b, v).data for t, v in zip(sig.args[:6], args[:6], strict=True)
        )
        n_inner = context.cast(b, args[6], sig.args[6], types.int64)
        d2 = b.fptrunc(context.cast(b, args[7], sig.args[7], types.float64), f32)
        fma = fma64 = None
        if use_fma:
            fma = cgutils.get_or_insert_function(b.module, ir.FunctionType(vt, [vt] * 3), f"llvm.fma.v{lanes}f32")
            fma64 = cgutils.get_or_insert_function(b.module, ir.FunctionType(vd, [vd] * 3), f"llvm.fma.v{lanes}f64")

        def madd(a: Any, c: Any, y: Any) -> Any:  # a * c + y
            if a.type == vd:
                return b.call(fma64, [a, c, y]) if fma64 is not None else b.fadd(y, b.fmul(a, c))
            return b.call(fma, [a, c, y]) if fma is not None else b.fadd(y, b.fmul(a, c))

        def const(v: int) -> Any:
            return ir.Constant(i64, v)

        def splat(value: Any) -> Any:
            return _splat(b, value, vt)

        def scalar(ptr: Any, idx: int) -> Any:
            return b.load(b.gep(ptr, [const(idx)]))

        def vec_ptr(base: Any, row: int, col: Any, ty: Any = vt) -> Any:  # (rows, _BLOCK) array, lanes from col
            return b.bitcast(b.gep(base, [b.add(const(row * _BLOCK), col)]), ty.as_pointer())

        zero = ir.Constant(vt, [0.0] * lanes)
        zero64 = ir.Constant(vd, [0.0] * lanes)
        fn = b.function
        entry = b.block
        tile_head, tile_body, sweep_head, sweep_body, tile_end, done = (
            fn.append_basic_block(n) for n in ("tile", "tile.load", "sweep", "sweep.body", "tile.end", "done")
        )
        b.branch(tile_head)
        b.position_at_end(tile_head)  # for col in 0, lanes, 2 lanes, ... < _BLOCK
        col = b.phi(i64)
        col.add_incoming(const(0), entry)
        b.cbranch(b.icmp_signed("<", col, const(_BLOCK)), tile_body, done)

        b.position_at_end(tile_body)  # gram @ w in registers, the traces of the rows as they came
        ws = [b.load(vec_ptr(wp, j, col), align=4) for j in range(k)]
        gw0 = [zero] * k
        for j in range(k):
            for q in range(k):
                gw0[q] = madd(ws[j], splat(scalar(gp, j * k + q)), gw0[q])
        quad = cross = zero64
        for j in range(k):
            wj = b.fpext(ws[j], vd)
            quad = madd(b.fpext(gw0[j], vd), wj, quad)
            cross = madd(wj, b.fpext(b.load(vec_ptr(xp, j, col), align=4), vd), cross)
        b.store(quad, vec_ptr(tp, 0, col, vd), align=8)
        b.store(cross, vec_ptr(tp, 1, col, vd), align=8)
        act_bytes = b.load(b.bitcast(b.gep(ap, [col]), ir.VectorType(ir.IntType(8), lanes).as_pointer()), align=1)
        act0 = b.icmp_unsigned("!=", act_bytes, ir.Constant(ir.VectorType(ir.IntType(8), lanes), [0] * lanes))
        b.branch(sweep_head)

        b.position_at_end(sweep_head)  # while it < max_inner and a row of the tile is active
        it = b.phi(i64)
        gws = [b.phi(vt) for _ in range(k)]
        act = b.phi(mt)
        first = b.phi(vt)
        it.add_incoming(const(0), tile_body)
        for phi, v in zip(gws, gw0, strict=True):
            phi.add_incoming(v, tile_body)
        act.add_incoming(act0, tile_body)
        first.add_incoming(zero, tile_body)
        any_active = b.icmp_unsigned("!=", b.bitcast(act, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0))
        b.cbranch(b.and_(b.icmp_signed("<", it, n_inner), any_active), sweep_body, tile_end)

        b.position_at_end(sweep_body)
        cur = list(gws)
        move = zero
        for j in range(k):
            dj = scalar(ip, j)
            update, merged = fn.append_basic_block(f"coord{j}"), fn.append_basic_block(f"coord{j}.done")
            before = b.block
            b.cbranch(b.fcmp_ordered("==", dj, ir.Constant(f32, 0.0)), merged, update)
            b.position_at_end(update)
            ptr = vec_ptr(wp, j, col)
            old = b.load(ptr, align=4)
            new = madd(b.fsub(b.load(vec_ptr(xp, j, col), align=4), cur[j]), splat(dj), old)
            new = b.select(b.fcmp_ordered(">", zero, new), zero, new)  # max(new, 0)
            new = b.select(act, new, old)
            diff = b.fsub(new, old)
            moved = madd(diff, diff, move)
            b.store(new, ptr, align=4)
            updated = [madd(diff, splat(scalar(gp, j * k + q)), g) for q, g in enumerate(cur)]
            b.branch(merged)
            b.position_at_end(merged)
            nxt = []
            for g_old, g_new in zip(cur, updated, strict=True):
                phi = b.phi(vt)
                phi.add_incoming(g_old, before)
                phi.add_incoming(g_new, update)
                nxt.append(phi)
            mphi = b.phi(vt)
            mphi.add_incoming(move, before)
            mphi.add_incoming(moved, update)
            cur, move = nxt, mphi
        is_first = b.icmp_signed("==", it, const(0))
        keep_first = b.and_(act, b.fcmp_unordered("!=", move, zero))  # moved at all in the first sweep
        keep_later = b.and_(act, b.not_(b.fcmp_ordered("<=", move, b.fmul(splat(d2), first))))
        end = b.block
        it.add_incoming(b.add(it, const(1)), end)
        for phi, v in zip(gws, cur, strict=True):
            phi.add_incoming(v, end)
        act.add_incoming(b.select(is_first, keep_first, keep_later), end)
        first.add_incoming(b.select(is_first, b.select(act, move, first), first), end)
        b.branch(sweep_head)

        b.position_at_end(tile_end)
        col.add_incoming(b.add(col, const(lanes)), tile_end)
        b.branch(tile_head)
        b.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _sweep_block_hals_ir(
    W: np.ndarray,
    xg: np.ndarray,
    gram32: np.ndarray,
    inv32: np.ndarray,
    row0: int,
    start: int,
    stop: int,
    max_inner: int,
    delta2: float,
    width: int,
) -> tuple[float, float]:
    """HALS sweeps of rows ``start .. stop`` of ``xg`` in float32 blocks of ``_BLOCK`` rows (:func:`_hals_tiles_ir`);
    returns their cross0, quad0 (float64, added row by row)."""
    cross0 = 0.0
    quad0 = 0.0
    w = np.zeros((width, _BLOCK), dtype=np.float32)
    x = np.zeros((width, _BLOCK), dtype=np.float32)
    traces = np.zeros((2, _BLOCK))
    active = np.zeros(_BLOCK, dtype=np.bool_)
    for b0 in range(start, stop, _BLOCK):
        nr = min(_BLOCK, stop - b0)
        for t in range(_BLOCK):
            active[t] = t < nr
            for j in range(width):
                w[j, t] = W[row0 + b0 + t, j] if t < nr else 0.0
                x[j, t] = xg[b0 + t, j] if t < nr else 0.0
        _hals_tiles_ir(w, x, gram32, inv32, active, traces, max_inner, delta2, width)
        for t in range(nr):
            quad0 += traces[0, t]
            cross0 += traces[1, t]
            for j in range(width):
                W[row0 + b0 + t, j] = w[j, t]
    return cross0, quad0


@njit(cache=True, parallel=True)
def _sweep_rows_fixed(
    W: np.ndarray,
    xg: np.ndarray,
    gram: np.ndarray,
    row0: int,
    max_inner: int,
    delta: float,
    n_chunks: int,
    width: int,
) -> tuple[float, float]:
    """:func:`_sweep_rows_any` for HALS with the sweeps compiled for one width (a literal)."""
    numba.literally(width)
    n = xg.shape[0]
    step = (n + n_chunks - 1) // n_chunks
    cross0 = np.zeros(n_chunks)
    quad0 = np.zeros(n_chunks)
    gram32 = gram.astype(np.float32)
    inv32 = _inverse_diagonal(gram32)
    for c in prange(n_chunks):
        a, b = c * step, min(n, (c + 1) * step)
        cross0[c], quad0[c] = _sweep_block_hals_ir(W, xg, gram32, inv32, row0, a, b, max_inner, delta * delta, width)
    return _chunk_totals(cross0, quad0)


def sweep_rows(
    W: np.ndarray,
    xg: np.ndarray,
    gram: np.ndarray,
    row0: int,
    update: int,
    max_inner: int,
    delta: float,
    n_chunks: int,
    *,
    fixed: bool | None = None,
) -> tuple[float, float]:
    """Update rows ``row0 .. row0 + len(xg)`` of ``W`` in place, each on its own; return their cross0, quad0.

    The rule, the stopping and the returned traces are :func:`_sweep_rows_any`'s. Many rows of HALS sweeps
    (``n * k^2 * max_inner >= FIXED_MIN_WORK``) of a width up to ``MAX_SWEEP_WIDTH`` run the kernel compiled for
    their width (:func:`_hals_tiles_ir`): float32 arithmetic, as ``W`` is stored and as scikit-learn's coordinate
    descent runs on float32 data, with ``gram @ w`` of 16 rows (8 without AVX-512) held in registers through the
    sweeps; 0.041 -> 0.025 s for 200,000 rows x 5 sweeps at k = 20, each row's objective within 1e-5 of the float64
    kernel's (the tests). ``fixed`` True or False forces or forbids it (True only where the width allows).
    """
    n, k = xg.shape
    use = update == 1 and 1 <= k <= MAX_SWEEP_WIDTH and gram.dtype == np.float64 and gram.flags.c_contiguous
    if use and fixed is None:
        use = n * k * k * max(max_inner, 1) >= FIXED_MIN_WORK
    elif use:
        use = bool(fixed)
    if use:
        return _call_with_width(_sweep_rows_fixed, W, xg, gram, row0, max_inner, delta, n_chunks, k)
    return _sweep_rows_any(W, xg, gram, row0, update, max_inner, delta, n_chunks)


_ENTRIES: dict[tuple[Any, ...], Any] = {}


def _call_with_width(kernel: Any, *args: Any) -> Any:
    """Call a numba kernel whose last argument is a width it compiles for (``numba.literally``), through the
    compiled specialization itself after the first call.

    numba's dispatcher types the width as int64 on every call, finds no such specialization and retries with the
    literal: 14 ms a call (measured), which was more than the kernel at 100,000 cells. Here the arguments are typed
    (~30 us) and the specialization's entry point called directly (~10 us)."""
    key = (kernel, *(kernel.typeof_pyval(a) for a in args[:-1]), types.literal(int(args[-1])))
    entry = _ENTRIES.get(key)
    if entry is not None:
        return entry(*args)
    out = kernel(*args)  # compiles the specialization, or loads it from numba's cache
    cres = kernel.overloads.get(key[1:])
    if cres is not None:
        _ENTRIES[key] = cres.entry_point
    return out


def _fixed_width(data: np.ndarray, B: np.ndarray, fixed: bool | None) -> bool:
    """Whether a product over ``data`` with ``B`` runs the kernel compiled for its width (None: by size): widths
    up to ``MAX_FIXED_WIDTH``, float32 values and a C-contiguous float32 ``B`` only."""
    r = B.shape[1]
    if not 1 <= r <= MAX_FIXED_WIDTH or data.dtype != np.float32 or B.dtype != np.float32:
        return False
    if not B.flags.c_contiguous:
        return False
    return fixed_pays(data.size, r) if fixed is None else bool(fixed)


def csr_dense_product(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    B: np.ndarray,
    *,
    fixed: bool | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return ``X @ B`` (n, r), float32, for a CSR matrix ``X`` (n, m) and a dense float32 ``B`` (m, r).

    ``out``: a C-contiguous float32 (n, r) array to write it into (and return), e.g. one kept across the
    iterations of a fit: a fresh one costs its page faults every time (13-100 ms per 80 MB measured here).

    Large products (``FIXED_MIN_WORK``) with widths up to ``MAX_FIXED_WIDTH`` run a kernel compiled for that width
    (:func:`_row_product_ir`; its sums are in another order than the generic loop's: equal to float32 rounding);
    the others (or ``fixed=False``; ``fixed=True`` forces it where the types allow) the generic loop.
    """
    n = indptr.shape[0] - 1
    if out is None:
        out = np.empty((n, B.shape[1]), dtype=np.float32)
    elif out.shape != (n, B.shape[1]) or out.dtype != np.float32 or not out.flags.c_contiguous:
        msg = f"out must be a C-contiguous float32 array of shape {(n, B.shape[1])}, got {out.dtype} {out.shape}"
        raise ValueError(msg)
    if _fixed_width(data, B, fixed):
        _call_with_width(_product_fixed, indptr, indices, data, B, out, B.shape[1])
    else:
        _product_any(indptr, indices, data, B, out)
    return out


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
    compiled for that width (:func:`_row_scatter_ir`, the same values bit for bit); the others (or
    ``fixed=False``; ``fixed=True`` forces it where the types allow) the generic loop.
    """
    if not _fixed_width(data, B, fixed):
        return _tproduct_any(indptr, indices, data, B, m, n_chunks)
    return _call_with_width(_tproduct_fixed, indptr, indices, data, B, m, n_chunks, B.shape[1])
