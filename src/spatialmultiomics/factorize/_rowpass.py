"""The weighted joint matrix as row-major data, and one fused pass over its rows (NumPy reference or numba).

:class:`RowData` holds the blocks ``X_b`` of ``X = [s_1 X_1 | s_2 X_2 | ...]`` as one CSR part and one dense part
(each a view of the caller's block when there is only one of its kind, else one stacked copy), with the column
scales kept apart so that they are folded into the small matrices and the data are never rescaled or copied.

:meth:`RowData.row_pass` is the whole cost of a solver iteration: for every row it computes ``xg = X[i] @ G.T``,
updates the cell loadings ``W[i]`` with ``G`` fixed (coordinate-descent sweeps or multiplicative updates,
repeated while they still move the row) and, with the new rows, returns everything the next update of ``G`` and
the loss need (``X.T @ W``, ``W.T @ W``, ``tr(W.T X G.T)``, ``tr(W.T W G G.T)``, and the same traces of the rows
before the update). Sums are float64 (float32 within chunks of rows for ``X.T @ W`` of large inputs), factors
float32. Large inputs use the numba kernels of :mod:`spatialmultiomics.factorize._numba` (imported lazily) for
``X @ G.T``, the row sweeps and ``X.T @ W``; small ones the NumPy code here, which is also their reference in the tests.

No logging, no I/O, no AnnData here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from spatialmultiomics.factorize._kernels import squared_norm

__all__ = ["NUMBA_MIN_WORK", "PassStats", "RowData", "numba_available", "numba_pays", "row_sweeps"]

#: multiply-adds per pass (2 x stored values x k) above which the numba kernels are used (their import costs ~0.4 s)
NUMBA_MIN_WORK = 4e7
_CHUNK = 1 << 20  # values of float64 temporaries per chunk in the NumPy code
_SUM_ROWS = 4096  # rows per float64 chunk of Gram matrices (small chunks: no fresh pages each time)
_REDUCE_BYTES = 64 << 20  # memory budget of the per-chunk partial sums of the numba kernels
_MAX_CHUNKS = 32
_EPS32 = float(np.finfo(np.float32).eps)
_TINY = 1e-30
UPDATES = {"none": 0, "hals": 1, "mu": 2}


def numba_available() -> bool:
    """Return whether numba can be imported (it is only imported when a large input needs it)."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is installed in the test environment
        return False
    return True


def numba_pays(stored: int, k: int) -> bool:
    """Return whether a pass over ``stored`` values with ``k`` factors (``2 * stored * k`` multiply-adds) is large
    enough for the numba kernels (``NUMBA_MIN_WORK``) and numba can be imported."""
    return 2.0 * stored * k >= NUMBA_MIN_WORK and numba_available()


class PassStats(NamedTuple):
    """Sums accumulated by one pass over the rows, with the cell loadings as stored after the pass.

    Attributes
    ----------
    XtW
        Array (n_features, k), float64: ``X.T @ W`` of the weighted joint matrix.
    WtW
        Array (k, k), float64: ``W.T @ W``.
    cross
        ``tr(W.T X G.T)`` (float64).
    quad
        ``tr(W.T W gram)`` where ``gram`` is the Gram matrix passed (``G @ G.T``).
    cross0, quad0
        The same traces for ``W`` as it was before the pass (equal to ``cross``, ``quad`` without an update).
    """

    XtW: np.ndarray
    WtW: np.ndarray
    cross: float
    quad: float
    cross0: float = 0.0
    quad0: float = 0.0


def row_sweeps(
    w: np.ndarray, xg: np.ndarray, gram: np.ndarray, update: int, max_inner: int, delta: float
) -> np.ndarray:
    """Update the rows of ``w`` (r, k) in place, each on its own, as the numba kernel does; return ``w``.

    ``update`` 1: coordinate-descent (HALS) sweeps over the k entries of each row,
    ``w_j <- max(0, w_j + (xg_j - gram[j] @ w) / gram[j, j])``; 2: multiplicative updates
    ``w <- w * xg / max(gram @ w, eps32 * max(gram @ w) + 1e-30)``. Each row repeats its sweep up to ``max_inner``
    times and stops once a sweep moves it by at most ``delta`` times its first move (Euclidean norms), or at once
    if the first sweep did not move it. Rows are independent, so this equals a loop over the rows.
    """
    k = w.shape[1]
    rows = np.arange(w.shape[0])
    first = np.zeros(w.shape[0])
    delta2 = delta * delta
    for it in range(max_inner):
        if rows.size == 0:
            break
        wa, xa = w[rows], xg[rows]
        before = wa.copy()
        if update == 1:
            for j in range(k):
                d = float(gram[j, j])
                if d <= 0.0:
                    continue
                wa[:, j] = np.maximum(wa[:, j] + (xa[:, j] - wa @ gram[j]) / d, 0.0)
        else:
            gw = wa @ gram
            floor = _EPS32 * gw.max(axis=1, initial=0.0) + _TINY
            wa *= xa / np.maximum(gw, floor[:, None])
        move = np.einsum("ij,ij->i", wa - before, wa - before)
        w[rows] = wa
        if it == 0:
            first[:] = move
            rows = rows[move > 0.0]
        else:
            rows = rows[move > delta2 * first[rows]]
    return w


_KERNEL_LOCK = threading.RLock()


def _thread_safe_layer() -> bool:
    """Return whether numba's threading layer may be entered from several threads at once (OpenMP, TBB)."""
    import numba

    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel kernel has run yet in this process: not known, so not assumed
        return False


@contextmanager
def _numba_threads(n: int) -> Iterator[None]:
    """Run the numba kernels of the block on ``n`` threads (at most numba's pool), then restore the setting.

    The setting is local to the calling thread. Several threads (the Dask backend's chunk tasks on a threaded
    worker) run kernels at the same time only under a thread-safe threading layer; under numba's ``workqueue``
    layer, which aborts on concurrent use, they take turns.
    """
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        with nullcontext() if _thread_safe_layer() else _KERNEL_LOCK:
            yield
    finally:
        numba.set_num_threads(before)


def _scratch_rows(scratch: np.ndarray | None, n: int, k: int) -> np.ndarray:
    """Return an (n, k) float32 C-contiguous array: a view of the start of ``scratch`` when it is large enough."""
    if scratch is not None and scratch.dtype == np.float32 and scratch.flags.c_contiguous and scratch.size >= n * k:
        return scratch.reshape(-1)[: n * k].reshape(n, k)
    return np.empty((n, k), dtype=np.float32)


def _n_chunks(n: int, width: int, k: int) -> int:
    """Return the number of row chunks of the numba kernels: a function of the shapes only (deterministic)."""
    by_memory = _REDUCE_BYTES // max(8 * k * max(width, 1), 1)
    return int(max(1, min(_MAX_CHUNKS, n // 1024 + 1, by_memory)))


@dataclass(eq=False)
class RowData:
    """The weighted joint matrix ``X = [s_b X_b]`` as one CSR part and one dense part (n_cells rows each).

    Attributes
    ----------
    sparse
        CSR matrix (n, m_s), float32, or None: the sparse blocks side by side (unscaled).
    dense
        Array (n, m_d), float32, C-contiguous, or None: the dense blocks side by side (unscaled).
    cols_s, cols_d
        Integer arrays: the columns of the joint matrix held by each part, in order.
    scale_s, scale_d
        Float64 arrays: the scale ``s_b`` of each of those columns.
    n_features
        Columns of the joint matrix.
    norm_x2
        ``||X||_F^2`` of the weighted joint matrix.
    n_threads
        Threads of the numba kernels (fixed chunks: the results do not depend on it). On a busy machine more
        threads than free cores cost far more than they give (OpenMP threads spin at every barrier: measured 2.2x
        slower with 2 threads than with 1 on the 2-core machine shared with other jobs), hence the default 1.
    weighted_sum
        The sum of all entries of the weighted joint matrix when it was computed with the norms (see
        :meth:`build`), else None (:meth:`total_sum` computes it).
    """

    sparse: sp.csr_matrix | None
    dense: np.ndarray | None
    cols_s: np.ndarray
    cols_d: np.ndarray
    scale_s: np.ndarray
    scale_d: np.ndarray
    n_features: int
    norm_x2: float
    n_threads: int = 1
    weighted_sum: float | None = None

    @classmethod
    def build(
        cls,
        blocks: Sequence[Any],
        scales: Sequence[float],
        *,
        n_threads: int = 1,
        squared_norms: Sequence[float] | None = None,
        sums: Sequence[float] | None = None,
    ) -> RowData:
        """Split validated float32 blocks (dense C-contiguous or CSR/CSC) into a CSR part and a dense part.

        A single sparse (dense) block is used as it is (a CSC block is converted to CSR once); several are
        stacked into one copy. ``squared_norms``, ``sums``: the blocks' ``||X_b||_F^2`` and sums of all entries
        when the caller has them (the sums make :meth:`total_sum` free).
        """
        offsets = np.concatenate([[0], np.cumsum([X.shape[1] for X in blocks])]).astype(np.int64)
        parts: dict[bool, list[tuple[Any, np.ndarray, float]]] = {True: [], False: []}
        norm_x2 = 0.0
        if squared_norms is None:
            squared_norms = [squared_norm(X) for X in blocks]
        for X, s, a, b, sq in zip(blocks, scales, offsets[:-1], offsets[1:], squared_norms, strict=True):
            parts[sp.issparse(X)].append((X, np.arange(a, b), float(s)))
            norm_x2 += float(s) ** 2 * float(sq)

        def cols_scales(items: list[tuple[Any, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
            if not items:
                return np.zeros(0, dtype=np.int64), np.zeros(0)
            cols = np.concatenate([c for _, c, _ in items])
            scale = np.concatenate([np.full(c.size, s) for _, c, s in items])
            return cols, scale

        sparse = None
        if parts[True]:
            mats = [X for X, _, _ in parts[True]]
            sparse = mats[0].tocsr() if len(mats) == 1 else sp.hstack(mats, format="csr")
            sparse = sparse.astype(np.float32, copy=False)
            if not sparse.has_canonical_format:  # pragma: no cover - validated blocks are canonical
                sparse.sum_duplicates()
        dense = None
        if parts[False]:
            mats = [X for X, _, _ in parts[False]]
            dense = np.ascontiguousarray(mats[0] if len(mats) == 1 else np.hstack(mats), dtype=np.float32)
        cols_s, scale_s = cols_scales(parts[True])
        cols_d, scale_d = cols_scales(parts[False])
        weighted_sum = (
            None if sums is None else float(sum(float(s) * float(t) for s, t in zip(scales, sums, strict=True)))
        )
        return cls(
            sparse, dense, cols_s, cols_d, scale_s, scale_d, int(offsets[-1]), norm_x2, int(n_threads), weighted_sum
        )

    # ------------------------------------------------------------------ shapes and costs
    @property
    def n_rows(self) -> int:
        """Number of rows (cells)."""
        return int((self.sparse if self.sparse is not None else self.dense).shape[0])

    @property
    def stored(self) -> int:
        """Number of stored values (non-zeros of the CSR part plus every value of the dense part)."""
        nnz = self.sparse.nnz if self.sparse is not None else 0
        return int(nnz + (self.dense.size if self.dense is not None else 0))

    @property
    def sparse_nnz(self) -> int | None:
        """Stored values of the CSR part, or None without one."""
        return None if self.sparse is None else int(self.sparse.nnz)

    @property
    def dense_size(self) -> int | None:
        """Values of the dense part, or None without one."""
        return None if self.dense is None else int(self.dense.size)

    def row_norms2(self) -> np.ndarray:
        """Return the squared Euclidean norm of every row of the weighted joint matrix, shape (n,), float64."""
        out = np.zeros(self.n_rows)
        width = (self.sparse.nnz / max(self.n_rows, 1) if self.sparse is not None else 0) + self.cols_d.size
        step = max(1, int(_CHUNK // max(width, 1.0)))
        s2_s, s2_d = self.scale_s**2, self.scale_d**2
        for a in range(0, self.n_rows, step):
            b = min(self.n_rows, a + step)
            if self.sparse is not None:
                X = self.sparse[a:b]
                vals = X.data.astype(np.float64) ** 2 * s2_s[X.indices]
                out[a:b] += np.bincount(np.repeat(np.arange(b - a), np.diff(X.indptr)), vals, minlength=b - a)
            if self.dense is not None:
                out[a:b] += (self.dense[a:b].astype(np.float64) ** 2) @ s2_d
        return out

    def use_numba(self, k: int) -> bool:
        """Return whether a pass is large enough (``2 * stored * k`` multiply-adds) for the numba kernels."""
        return numba_pays(self.stored, k)

    # ------------------------------------------------------------------ folding the scales
    def split(self, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(s * G_sparse).T`` (m_s, k) and ``(s * G_dense).T`` (m_d, k), float64, C-contiguous."""
        G = np.asarray(G, dtype=np.float64)
        GsT = np.ascontiguousarray((G[:, self.cols_s] * self.scale_s).T)
        GdT = np.ascontiguousarray((G[:, self.cols_d] * self.scale_d).T)
        return GsT, GdT

    def merge(self, part_s: np.ndarray, part_d: np.ndarray) -> np.ndarray:
        """Return the (n_features, r) product ``X.T @ B`` of the joint matrix from the unscaled parts."""
        out = np.zeros((self.n_features, part_s.shape[1] if part_s.size else part_d.shape[1]))
        out[self.cols_s] = part_s * self.scale_s[:, None]
        out[self.cols_d] = part_d * self.scale_d[:, None]
        return out

    # ------------------------------------------------------------------ products (randomized SVD, torch/dask parity)
    def dot(self, M: np.ndarray, *, use_numba: bool | None = None) -> np.ndarray:
        """Return ``X @ M`` (n, r), float32, for a dense ``M`` (n_features, r)."""
        M = np.asarray(M, dtype=np.float64)
        if use_numba is None:
            use_numba = self.use_numba(M.shape[1])
        Ms = np.ascontiguousarray(M[self.cols_s] * self.scale_s[:, None])
        Md = M[self.cols_d] * self.scale_d[:, None]
        out = None  # the first product is the output (no zero-filled array to add it to)
        if self.sparse is not None:
            if use_numba:
                from spatialmultiomics.factorize._numba import csr_dense_product

                X = self.sparse
                with _numba_threads(self.n_threads):
                    out = csr_dense_product(X.indptr, X.indices, X.data, Ms.astype(np.float32))
            else:
                out = np.asarray(self.sparse @ Ms.astype(np.float32), dtype=np.float32)
        if self.dense is not None:
            part = self.dense @ Md.astype(np.float32)
            out = part if out is None else np.add(out, part, out=out)
        return out

    def tdot(self, B: np.ndarray, *, use_numba: bool | None = None) -> np.ndarray:
        """Return ``X.T @ B`` (n_features, r), float64, for a dense ``B`` (n, r)."""
        B = np.ascontiguousarray(B, dtype=np.float32)
        if use_numba is None:
            use_numba = self.use_numba(B.shape[1])
        part_s = np.zeros((self.cols_s.size, B.shape[1]))
        if self.sparse is not None:
            if use_numba:
                from spatialmultiomics.factorize._numba import csr_dense_tproduct

                X = self.sparse
                chunks = _n_chunks(X.shape[0], X.shape[1], B.shape[1])
                with _numba_threads(self.n_threads):
                    part_s = csr_dense_tproduct(X.indptr, X.indices, X.data, B, X.shape[1], chunks)
            else:
                part_s = np.asarray(self.sparse.T @ B, dtype=np.float64)
        part_d = np.zeros((self.cols_d.size, B.shape[1]))
        if self.dense is not None:
            part_d = (self.dense.T @ B).astype(np.float64)
        return self.merge(part_s, part_d)

    # ------------------------------------------------------------------ helpers of the initialisation
    def total_sum(self) -> float:
        """Return the sum of all entries of the weighted joint matrix (float64)."""
        if self.weighted_sum is not None:
            return self.weighted_sum
        total = 0.0
        if self.sparse is not None:
            X = self.sparse
            if self.scale_s.size and np.all(self.scale_s == self.scale_s[0]):  # one scale: no per-column sums
                total += float(self.scale_s[0]) * float(X.data.sum(dtype=np.float64))
            else:
                col_sums = np.zeros(X.shape[1])
                for a in range(0, X.nnz, _CHUNK):  # float64 sums without a float64 copy of the data
                    col_sums += np.bincount(
                        X.indices[a : a + _CHUNK], X.data[a : a + _CHUNK].astype(np.float64), minlength=X.shape[1]
                    )
                total += float(col_sums @ self.scale_s)
        if self.dense is not None:
            total += float(self.dense.sum(axis=0, dtype=np.float64) @ self.scale_d)
        return total

    def take_rows(self, rows: np.ndarray) -> RowData:
        """Return the rows ``rows`` (sorted integer indices) as a new :class:`RowData` (copies of those rows only).

        Same columns and scales; ``norm_x2`` is that of the rows taken. The randomized SVD of the initialisation
        runs its power iterations on such a sample of the rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        sparse = None if self.sparse is None else self.sparse[rows]
        dense = None if self.dense is None else np.ascontiguousarray(self.dense[rows])
        norm_x2 = 0.0
        if sparse is not None:
            v = sparse.data.astype(np.float64)
            if np.all(self.scale_s == self.scale_s[0]):
                norm_x2 += float(self.scale_s[0]) ** 2 * float(v @ v)
            else:
                v *= self.scale_s[sparse.indices]
                norm_x2 += float(v @ v)
        if dense is not None:
            norm_x2 += float(np.sum(dense.astype(np.float64) ** 2 @ self.scale_d**2))
        return RowData(
            sparse,
            dense,
            self.cols_s,
            self.cols_d,
            self.scale_s,
            self.scale_d,
            self.n_features,
            norm_x2,
            self.n_threads,
        )

    @classmethod
    def concat(cls, parts: Sequence[RowData]) -> RowData:
        """Return the rows of several :class:`RowData` with the same columns and scales, one after the other."""
        first = parts[0]
        sparse = None if first.sparse is None else sp.vstack([p.sparse for p in parts], format="csr")
        dense = None if first.dense is None else np.ascontiguousarray(np.vstack([p.dense for p in parts]))
        return cls(
            sparse,
            dense,
            first.cols_s,
            first.cols_d,
            first.scale_s,
            first.scale_d,
            first.n_features,
            float(sum(p.norm_x2 for p in parts)),
            first.n_threads,
        )

    @staticmethod
    def orthonormal(Y: np.ndarray, rounds: int = 2) -> np.ndarray:
        """Return an orthonormal basis of the columns of ``Y`` (n, r), float32, by Cholesky QR applied twice.

        CholeskyQR2 (Fukaya et al. 2014) needs only the float64 Gram matrix (accumulated chunk by chunk) and one
        thin product per round, several times cheaper than Householder QR for n >> r; a rank-deficient ``Y`` falls
        back to Householder QR. ``rounds=1`` (plain Cholesky QR) halves the cost and leaves a loss of
        orthogonality of order ``cond(Y) * eps(float32)``, harmless for a randomized range finder.
        """
        Y = np.asarray(Y, dtype=np.float32)
        for _ in range(rounds):
            gram = np.zeros((Y.shape[1], Y.shape[1]))
            for a in range(0, Y.shape[0], _SUM_ROWS):
                c = Y[a : a + _SUM_ROWS].astype(np.float64)
                gram += c.T @ c
            try:
                L = np.linalg.cholesky(gram)
            except np.linalg.LinAlgError:
                return np.linalg.qr(Y)[0].astype(np.float32)
            if not np.all(np.isfinite(L)) or np.min(np.diag(L)) <= 1e-6 * np.max(np.diag(L)):
                return np.linalg.qr(Y)[0].astype(np.float32)
            Y = Y @ np.linalg.inv(L.T).astype(np.float32)
        return Y

    @staticmethod
    def max_value(W: np.ndarray) -> float:
        """Return the largest entry of a cell-side array (0 for an empty one)."""
        return float(np.max(W, initial=0.0))

    def random_rows(self, rng: np.random.Generator, k: int, scale: float) -> np.ndarray:
        """Return ``scale * |N(0, 1)|`` values of shape (n, k), float32 (the random initial cell loadings)."""
        return (scale * np.abs(rng.standard_normal((self.n_rows, k)))).astype(np.float32)

    # ------------------------------------------------------------------ the fused pass
    def row_pass(
        self,
        G: np.ndarray,
        W: np.ndarray,
        *,
        update: str = "none",
        max_inner: int = 1,
        delta: float = 0.1,
        rows: tuple[int, int] | None = None,
        use_numba: bool | None = None,
        scratch: np.ndarray | None = None,
        fixed: bool | None = None,
    ) -> PassStats:
        """Update ``W`` (n, k) in place row by row with ``G`` (k, n_features) fixed, and return the pass sums.

        Parameters
        ----------
        G
            Weighted feature loadings (k, n_features).
        W
            Cell loadings (n, k), float32, C-contiguous; rows ``rows`` are updated in place.
        update
            ``'none'`` (only the sums), ``'hals'`` or ``'mu'`` (see :func:`row_sweeps`).
        max_inner, delta
            Repeat each row's sweep up to ``max_inner`` times, until it moves the row by at most ``delta`` times
            its first move.
        rows
            ``(start, stop)``: pass over these rows only (a mini-batch); default all.
        use_numba
            Force (True) or forbid (False) the numba kernels; default by size (:meth:`use_numba`).
        scratch
            A float32 array of at least ``rows`` x k values that the numba pass may use for ``X @ G.T`` (one kept
            by the solver across its iterations saves the page faults of a fresh one, ~13 ms per 80 MB); default
            a new array.
        fixed
            Whether the numba kernels compiled for the width run (where the width allows); None: when the whole
            matrix has ``FIXED_MIN_WORK`` multiply-adds a product (the Dask backend decides the same on its whole
            matrix, :meth:`DaskRowData.use_fixed`, and passes it to the chunk tasks).

        Returns
        -------
        :class:`PassStats` of the rows passed, computed with ``gram = G @ G.T`` and the stored float32 ``W``.
        """
        G64 = np.asarray(G, dtype=np.float64)
        gram = G64 @ G64.T
        r0, r1 = (0, self.n_rows) if rows is None else rows
        code = UPDATES[update]
        GsT, GdT = self.split(G64)
        if use_numba is None:
            use_numba = self.use_numba(G64.shape[0])
        if use_numba:
            from spatialmultiomics.factorize._numba import csr_dense_tproduct, fixed_pays, sweep_rows

            k = G64.shape[0]
            if fixed is None:  # one rule for the three kernels, on the whole matrix (as the Dask backend decides)
                fixed = fixed_pays(self.stored, k)
            # X @ G.T of the rows: the numba CSR product (four stored values per update of a row of xg) and BLAS
            # for the dense part
            xg = _scratch_rows(scratch, r1 - r0, k)
            if self.sparse is not None:
                from spatialmultiomics.factorize._numba import csr_dense_product

                X = self.sparse[r0:r1] if (r0, r1) != (0, self.n_rows) else self.sparse
                with _numba_threads(self.n_threads):
                    csr_dense_product(X.indptr, X.indices, X.data, GsT.astype(np.float32), out=xg, fixed=fixed)
            if self.dense is not None:  # BLAS in chunks of rows added to xg (no temporary as large as xg)
                Gd32 = GdT.astype(np.float32)
                step = max(1, _CHUNK // max(k, 1))
                part = np.empty((min(step, r1 - r0), k), dtype=np.float32)
                for a in range(r0, r1, step):
                    b = min(r1, a + step)
                    dest, tmp = xg[a - r0 : b - r0], part[: b - a]
                    if self.sparse is None:
                        np.matmul(self.dense[a:b], Gd32, out=dest)
                    else:
                        np.add(dest, np.matmul(self.dense[a:b], Gd32, out=tmp), out=dest)
            with _numba_threads(self.n_threads):
                cross0, quad0 = sweep_rows(
                    W, xg, gram, r0, code, max_inner, delta, _n_chunks(r1 - r0, 0, k), fixed=fixed
                )
                ps = np.zeros((GsT.shape[0], k))
                if self.sparse is not None:  # X.T @ W: float32 partial sums per chunk of rows, float64 across
                    Wr = W[r0:r1]
                    chunks = _n_chunks(r1 - r0, X.shape[1], k)
                    ps = csr_dense_tproduct(X.indptr, X.indices, X.data, Wr, X.shape[1], chunks, fixed=fixed)
            pd_ = np.zeros((GdT.shape[0], k))
            if self.dense is not None:  # dense.T @ W as X.T @ W: float32 (BLAS) per chunk of rows, float64 across
                step = -(-(r1 - r0) // _n_chunks(r1 - r0, GdT.shape[0], k))
                for a in range(r0, r1, step):
                    b = min(r1, a + step)
                    pd_ += (self.dense[a:b].T @ W[a:b]).astype(np.float64)
            WtW = np.zeros((k, k))
            for a in range(r0, r1, _SUM_ROWS):  # W.T @ W of the updated rows, in float64
                w = W[a : min(r1, a + _SUM_ROWS)].astype(np.float64)
                WtW += w.T @ w
            XtW = self.merge(ps, pd_)
            cross = float(np.sum(G64 * XtW.T))  # tr(W.T X G.T) = sum(G * (X.T W).T)
            quad = float(np.sum(WtW * gram))
        else:
            ps, pd_, WtW, cross, quad, cross0, quad0 = self._row_pass_numpy(
                GsT, GdT, gram, W, r0, r1, code, max_inner, delta
            )
            XtW = self.merge(ps, pd_)
        return PassStats(XtW, WtW, float(cross), float(quad), float(cross0), float(quad0))

    def _row_pass_numpy(
        self,
        GsT: np.ndarray,
        GdT: np.ndarray,
        gram: np.ndarray,
        W: np.ndarray,
        r0: int,
        r1: int,
        update: int,
        max_inner: int,
        delta: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float, float]:
        """NumPy version of :func:`spatialmultiomics.factorize._numba.row_pass` (float64 chunk by chunk)."""
        k = W.shape[1]
        XtWs, XtWd = np.zeros((GsT.shape[0], k)), np.zeros((GdT.shape[0], k))
        WtW = np.zeros((k, k))
        cross = quad = cross0 = quad0 = 0.0
        width = (self.sparse.nnz / max(self.n_rows, 1) if self.sparse is not None else 0) + GdT.shape[0] + k
        step = max(1, int(_CHUNK // max(width, 1.0)))
        for a in range(r0, r1, step):
            b = min(r1, a + step)
            xg = np.zeros((b - a, k))
            Xs = D = None
            if self.sparse is not None:
                Xs = self.sparse[a:b].astype(np.float64)
                xg += Xs @ GsT
            if self.dense is not None:
                D = self.dense[a:b].astype(np.float64)
                xg += D @ GdT
            w = W[a:b].astype(np.float64)
            cross0 += float(np.sum(w * xg))
            quad0 += float(np.sum((w @ gram) * w))
            if update:
                row_sweeps(w, xg, gram, update, max_inner, delta)
                W[a:b] = w
                w = W[a:b].astype(np.float64)
            cross += float(np.sum(w * xg))
            quad += float(np.sum((w @ gram) * w))
            WtW += w.T @ w
            if Xs is not None:
                XtWs += np.asarray(Xs.T @ w)
            if D is not None:
                XtWd += D.T @ w
        return XtWs, XtWd, WtW, cross, quad, cross0, quad0
