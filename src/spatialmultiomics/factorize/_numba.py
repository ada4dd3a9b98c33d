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

The kernels for one literal width (k <= 32, large products only: ``FIXED_MIN_WORK``) are written in LLVM IR
(numba intrinsics, :func:`_row_product_ir`, :func:`_row_scatter_ir`): a row of ``B`` is a few explicit vectors of
a power of two lanes (k = 20: 16 + 4), which LLVM maps onto the machine's registers (AVX-512, AVX2 or SSE), with
four accumulators of the output row (``X @ B``) or four rows of ``X.T @ W`` loaded before any is stored. numba's
own loops over a literal width were unrolled into scalar code (numba switches LLVM's SLP vectoriser off, numba PR
8852) and, with the SLP vectoriser switched on while they compiled, kept the output in memory or in part of the
registers: at 1,000,000 cells the IR kernels took ``X @ G.T`` from 0.384 to 0.313 s and ``X.T @ W`` from 0.454 to
0.339 s (1.9 -> 1.6 and 2.4 -> 1.8 ns per stored value against 1.35 and 1.73 ns for the same loops in C with
AVX-512 intrinsics), ``X.T @ W`` with the same sums bit for bit. A 20-lane vector carried round a loop was
scalarised by LLVM (3.5x slower), hence the powers of two; fused multiply-adds were no faster. Tried and dropped
before: one fused kernel for the whole pass (product, sweeps and ``X.T @ W`` of each row while it is in cache:
0.75 s against 0.26 s with the separate kernels at 200,000 cells: its loops vectorised worse), per-chunk sums of
``X.T @ W`` that fit L1, columns in L1-sized blocks with per-row segment pointers, ``G`` split into one cache line
per row, ``W`` padded to 24 or 32 columns (all slower or within 10 %).

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic

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

    def splat(self, value: Any, j: int) -> Any:
        vt = self.vts[j]
        lanes = vt.count
        v = self.b.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        return self.b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), mask)

    def axpy(self, acc: list[Any], value: Any, row: list[Any]) -> list[Any]:
        """``acc + value * row`` piece by piece: a multiply then an add (no fused multiply-add, as numba's loops)."""
        return [
            self.b.fadd(a, self.b.fmul(self.splat(value, j), x)) for j, (a, x) in enumerate(zip(acc, row, strict=True))
        ]

    def blocks(self, *names: str) -> list[Any]:
        """New basic blocks of the function being built, in order."""
        return [self.b.function.append_basic_block(name) for name in names]


def _row_kernel_types(indptr: Any, indices: Any, data: Any, B: Any, out: Any) -> bool:
    """Whether the arguments suit the IR row kernels: integer index arrays, float32 C-contiguous values."""
    ints = all(isinstance(t, types.Array) and isinstance(t.dtype, types.Integer) for t in (indptr, indices))
    floats = all(isinstance(t, types.Array) and t.dtype == types.float32 and t.layout == "C" for t in (data, B, out))
    return ints and floats and B.ndim == 2 and out.ndim == 2


_UNROLL = 4  # stored values per step of the row kernels (four independent accumulators / four rows in flight)


@intrinsic
def _row_product_ir(typingctx: Any, indptr: Any, indices: Any, data: Any, B: Any, out: Any, i: Any, width: Any):
    """Set row ``i`` of ``out`` (n, width) to ``X[i] @ B``: four accumulators of the row in vector registers, each
    summing every fourth stored value, added pairwise at the end."""
    if not isinstance(width, types.IntegerLiteral) or not _row_kernel_types(indptr, indices, data, B, out):
        return None
    k = width.literal_value
    sig = types.void(indptr, indices, data, B, out, i, width)

    def codegen(context, builder, sig, args):
        r = _RowIR(context, builder, sig.args, args, k)
        b = builder
        start = r.index(0, r.row)
        stop = r.index(0, b.add(r.row, r.const(1)))
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
            for phi, new in zip(accs[u], r.axpy(accs[u], b.load(b.gep(r.ptrs[2], [q])), row), strict=True):
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
        for phi, new in zip(acc, r.axpy(acc, b.load(b.gep(r.ptrs[2], [q])), row), strict=True):
            phi.add_incoming(new, tail_body)
        q.add_incoming(b.add(q, r.const(1)), tail_body)
        b.branch(tail_head)
        b.position_at_end(done)
        dest = r.row_ptr(4, r.row)
        for j in range(len(r.parts)):
            total = b.fadd(b.fadd(acc[j], accs[1][j]), b.fadd(accs[2][j], accs[3][j]))
            b.store(total, r.part_ptr(dest, j), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _row_scatter_ir(typingctx: Any, indptr: Any, indices: Any, data: Any, B: Any, out: Any, i: Any, width: Any):
    """Add ``X[i, c] * B[i]`` to row ``c`` of ``out`` (m, width) for every stored value of row ``i``, in order.

    Four stored values per step: the four rows of ``out`` are loaded before any is stored (their updates overlap
    instead of waiting on each other's stores), which is exact when their columns differ; a step whose columns
    are not strictly increasing (a CSR matrix that is not canonical) goes one value at a time. Each row of ``out``
    gets the same additions in the same order as the one-at-a-time loop: the same sums bit for bit."""
    if not isinstance(width, types.IntegerLiteral) or not _row_kernel_types(indptr, indices, data, B, out):
        return None
    k = width.literal_value
    sig = types.void(indptr, indices, data, B, out, i, width)

    def codegen(context, builder, sig, args):
        r = _RowIR(context, builder, sig.args, args, k)
        b = builder
        start = r.index(0, r.row)
        stop = r.index(0, b.add(r.row, r.const(1)))
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
            new = r.axpy(olds[u], b.load(b.gep(r.ptrs[2], [b.add(p, r.const(u))])), w)
            for j, value in enumerate(new):
                b.store(value, r.part_ptr(rows[u], j), align=4)
        p.add_incoming(b.add(p, r.const(_UNROLL)), fast)
        b.branch(head)
        b.position_at_end(tail_head)  # the rest of the row, or one value at a time after a step of equal columns
        q = b.phi(r.i64)
        q.add_incoming(p, head)
        q.add_incoming(p, body)
        b.cbranch(b.icmp_signed("<", q, stop), tail_body, done)
        b.position_at_end(tail_body)
        row = r.row_ptr(4, r.index(1, q))
        new = r.axpy(r.load_row(row), b.load(b.gep(r.ptrs[2], [q])), w)
        for j, value in enumerate(new):
            b.store(value, r.part_ptr(row, j), align=4)
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


def _fixed_width(data: np.ndarray, B: np.ndarray, fixed: bool | None) -> bool:
    """Whether a product over ``data`` with ``B`` runs the kernel compiled for its width (None: by size): widths
    up to ``MAX_FIXED_WIDTH``, float32 values and a C-contiguous float32 ``B`` only."""
    r = B.shape[1]
    if not 1 <= r <= MAX_FIXED_WIDTH or data.dtype != np.float32 or B.dtype != np.float32:
        return False
    if not B.flags.c_contiguous:
        return False
    return data.size * r >= FIXED_MIN_WORK if fixed is None else bool(fixed)


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
        _product_fixed(indptr, indices, data, B, out, B.shape[1])
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
    return _tproduct_fixed(indptr, indices, data, B, m, n_chunks, B.shape[1])
