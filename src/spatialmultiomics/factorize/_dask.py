"""Dask backend of the joint NMF: row-chunked blocks on ``dask.distributed`` (or any Dask scheduler).

The blocks are cut into the same row chunks; each chunk of rows becomes one
:class:`~spatialmultiomics.factorize._rowpass.RowData` held by a worker (persisted once). Cell-side arrays (the
cell loadings ``W``, the range finder of the randomized SVD) are Dask arrays with the same row chunks. One
iteration is one task per chunk, :meth:`RowData.row_pass`, which updates that chunk's rows of ``W`` with ``G``
fixed and returns its partial sums (``X.T @ W``, ``W.T @ W``); the sums are reduced across chunks (a tree of
additions scheduled by Dask) and the small feature loadings ``G`` (k x n_features) are updated on the client,
where the exact error also follows from them, and sent with the next round. So every worker reads only its own rows, and only
O(k x n_features) values cross the network per iteration.

The initial factors are the NumPy backend's (randomized SVD with the same test matrix, CholeskyQR2
re-orthonormalisation through chunk Gram matrices, NNDSVD(a)), and each chunk runs the NumPy row pass, so the
result equals the NumPy backend's up to float rounding. Parallelism comes from the Dask workers. The chunk tasks
run the numba kernels on one thread each when the whole matrix is large enough for the NumPy backend to use them
(:meth:`DaskRowData.use_numba`, the same rule on the same total, so both backends run the same kernels and the same
sweeps per row): at 200,000 cells the NumPy row pass took 1.0-1.4 s, the numba one 0.4 s. Kernels are called from
several worker threads at once only under a thread-safe numba threading layer (OpenMP or TBB); otherwise they
take turns (:func:`spatialmultiomics.factorize._rowpass._numba_threads`).

Dask is an optional extra (``pip install 'spatialmultiomics[dask]'``), imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import getitem
from typing import Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._optional import import_optional
from spatialmultiomics.factorize._init import initialize
from spatialmultiomics.factorize._kernels import hals_sweep, mu_step, squared_norm
from spatialmultiomics.factorize._rowpass import PassStats, RowData, numba_pays
from spatialmultiomics.factorize._solvers import INNER_DELTA, _alternate, _inner_counts, _split_g

__all__ = ["DaskRowData", "fit_dask"]

DEFAULT_CHUNK_ROWS = 65536


def _as_dask(X: Any, name: str, chunk_rows: Any) -> Any:
    """Return ``X`` as a 2-D Dask array with one column chunk (NumPy / SciPy inputs are cut into row chunks)."""
    from spatialmultiomics.factorize._estimator import _check_shape

    da = import_optional("dask.array", extra="dask")
    if not isinstance(X, da.Array):
        if not (sp.issparse(X) or hasattr(X, "shape")):
            msg = f"{name} must be a dask array, an ndarray or a scipy.sparse matrix, got {type(X).__name__}."
            raise InputError(msg)
        X = X.tocsr() if sp.issparse(X) else np.asarray(X)
        _check_shape(X, name)  # before cutting into row chunks, which needs two dimensions
        X = da.from_array(X, chunks=(chunk_rows, -1), asarray=False)
    _check_shape(X, name)
    return X


def _check_chunk(X: Any, name: str) -> Any:
    """Validate one chunk of a block (numeric, finite, non-negative) and return it as float32 CSR or dense."""
    from spatialmultiomics.factorize._estimator import _check_block

    try:
        return _check_block(X, 0)
    except InputError as err:
        raise InputError(str(err).replace("blocks[0]", name)) from None


def _chunk_checked(parts: Sequence[Any], names: Sequence[str]) -> list[Any]:
    """Validate the pieces of one row chunk: float32 CSR/CSC or dense, finite, non-negative."""
    return [_check_chunk(X, nm) for X, nm in zip(parts, names, strict=True)]


def _chunk_norm(checked: Sequence[Any]) -> np.ndarray:
    """Squared norm of each validated piece of one row chunk, float64 (n_blocks,)."""
    return np.array([squared_norm(X) for X in checked])


def _chunk_data(checked: Sequence[Any], norms: np.ndarray, scales: np.ndarray) -> RowData:
    """Build the :class:`RowData` of one row chunk from its validated pieces and their squared norms."""
    return RowData.build(checked, scales, squared_norms=norms)


def _chunk_pass(
    data: RowData,
    G: np.ndarray,
    W: np.ndarray,
    update: str,
    max_inner: int,
    use_numba: bool = False,
    fixed: bool | None = None,
) -> tuple[np.ndarray, PassStats, int]:
    """Return the updated rows of ``W`` (a copy: tasks never change their inputs), the chunk's pass sums and the
    number of its rows whose dominant factor changed."""
    W = np.array(W, dtype=np.float32, order="C")
    before = W.argmax(axis=1)
    stats = data.row_pass(G, W, update=update, max_inner=max_inner, delta=INNER_DELTA, use_numba=use_numba, fixed=fixed)
    return W, stats, int(np.count_nonzero(W.argmax(axis=1) != before))


def _sum_stats(parts: Sequence[PassStats]) -> PassStats:
    """Add the pass sums of several chunks (in order)."""
    XtW = np.sum([p.XtW for p in parts], axis=0)
    WtW = np.sum([p.WtW for p in parts], axis=0)
    return PassStats(
        XtW,
        WtW,
        float(sum(p.cross for p in parts)),
        float(sum(p.quad for p in parts)),
        float(sum(p.cross0 for p in parts)),
        float(sum(p.quad0 for p in parts)),
    )


class DaskRowData:
    """The weighted joint matrix as persisted row chunks of :class:`RowData` (the interface of ``RowData`` used by
    the initialisation and the solvers, with Dask arrays on the cell side).

    Attributes
    ----------
    chunks
        Delayed :class:`RowData`, one per row chunk, persisted on the workers.
    rows
        Tuple of the number of rows of each chunk.
    n_features
        Columns of the joint matrix.
    norm_x2
        ``||X||_F^2`` of the weighted joint matrix.
    sparse_nnz, dense_size
        Stored values of the CSR and dense parts over all chunks (None without that part; for the cost model).
    stored
        Their total.
    """

    def __init__(
        self,
        chunks: list[Any],
        rows: tuple[int, ...],
        n_features: int,
        norm_x2: float,
        sizes: tuple[int | None, int | None],
    ) -> None:
        self.chunks = chunks
        self.rows = rows
        self.n_features = n_features
        self.norm_x2 = norm_x2
        self.sparse_nnz, self.dense_size = sizes
        self.stored = (self.sparse_nnz or 0) + (self.dense_size or 0)

    @property
    def n_rows(self) -> int:
        """Number of rows (cells)."""
        return int(sum(self.rows))

    def use_numba(self, k: int) -> bool:
        """Return whether the chunk tasks run the numba kernels: :meth:`RowData.use_numba` on the whole matrix."""
        return numba_pays(self.stored, k)

    def use_fixed(self, k: int) -> bool:
        """Return whether the chunk tasks run the numba kernels compiled for the width: the in-memory backend's
        rule (``FIXED_MIN_WORK`` multiply-adds a product) on the whole matrix, not on one chunk, so that both
        backends run the same kernels (and their compilation, once per machine, pays over all the chunks)."""
        if not self.use_numba(k):
            return False
        from spatialmultiomics.factorize._numba import fixed_pays

        return fixed_pays(self.stored, k)

    def _cell_array(self, pieces: list[Any], width: int) -> Any:
        da = import_optional("dask.array", extra="dask")
        arrays = [
            da.from_delayed(p, shape=(r, width), dtype=np.float32) for p, r in zip(pieces, self.rows, strict=True)
        ]
        return da.concatenate(arrays, axis=0)

    def _cell_pieces(self, A: Any) -> list[Any]:
        """Return the row chunks of a cell-side Dask array as delayed objects (rechunked to ``self.rows``)."""
        return list(A.rechunk((self.rows, -1)).to_delayed().ravel())

    def dot(self, M: np.ndarray) -> Any:
        """Return ``X @ M`` (n, r) as a Dask array, float32."""
        dask = import_optional("dask", extra="dask")
        M = np.asarray(M, dtype=np.float64)
        use_numba = self.use_numba(M.shape[1])
        pieces = [dask.delayed(RowData.dot)(c, M, use_numba=use_numba) for c in self.chunks]
        return self._cell_array(pieces, M.shape[1])

    def tdot(self, B: Any) -> np.ndarray:
        """Return ``X.T @ B`` (n_features, r), float64, for a cell-side Dask array ``B`` (n, r)."""
        dask = import_optional("dask", extra="dask")
        use_numba = self.use_numba(B.shape[1])
        parts = [
            dask.delayed(RowData.tdot)(c, b, use_numba=use_numba)
            for c, b in zip(self.chunks, self._cell_pieces(B), strict=True)
        ]
        return np.asarray(dask.delayed(sum)(parts).compute())

    def orthonormal(self, Y: Any, rounds: int = 2) -> Any:
        """CholeskyQR2 of a cell-side Dask array ``Y`` (n, r): Gram matrices per chunk, reduced, then one product
        (``rounds``: as :meth:`RowData.orthonormal`)."""
        da = import_optional("dask.array", extra="dask")
        for _ in range(rounds):
            Y64 = Y.astype(np.float64)
            gram = np.asarray(da.dot(Y64.T, Y64).compute())
            try:
                L = np.linalg.cholesky(gram)
            except np.linalg.LinAlgError:
                L = None
            if L is None or not np.all(np.isfinite(L)) or np.min(np.diag(L)) <= 1e-6 * np.max(np.diag(L)):
                q, _ = da.linalg.tsqr(Y.rechunk((self.rows, -1)).astype(np.float64))
                return q.astype(np.float32).persist()
            Y = (Y @ np.linalg.inv(L.T).astype(np.float32)).persist()
        return Y

    def take_rows(self, rows: np.ndarray) -> RowData:
        """Return the rows ``rows`` (sorted indices) as one NumPy :class:`RowData` on the client (a small sample)."""
        dask = import_optional("dask", extra="dask")
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self.rows)])
        parts = []
        for c, a, b in zip(self.chunks, starts[:-1], starts[1:], strict=True):
            local = rows[(rows >= a) & (rows < b)] - a
            if local.size:
                parts.append(dask.delayed(RowData.take_rows)(c, local))
        return RowData.concat(dask.compute(*parts))

    def total_sum(self) -> float:
        """Sum of all entries of the weighted joint matrix."""
        dask = import_optional("dask", extra="dask")
        return float(dask.delayed(sum)([dask.delayed(RowData.total_sum)(c) for c in self.chunks]).compute())

    @staticmethod
    def max_value(W: Any) -> float:
        """Largest entry of a cell-side Dask array."""
        return float(W.max().compute()) if W.size else 0.0

    @staticmethod
    def column_norms(A: Any) -> np.ndarray:
        """Euclidean norms of the columns of a cell-side Dask array, float64."""
        A64 = A.astype(np.float64)
        return np.sqrt(np.asarray((A64 * A64).sum(axis=0).compute()))

    def random_rows(self, rng: np.random.Generator, k: int, scale: float) -> Any:
        """Random initial cell loadings (the NumPy backend's values), as a Dask array."""
        da = import_optional("dask.array", extra="dask")
        values = (scale * np.abs(rng.standard_normal((self.n_rows, k)))).astype(np.float32)
        return da.from_array(values, chunks=(self.rows, -1))


def _prepare(blocks: Any, weights: Any, chunk_rows: Any) -> tuple[DaskRowData, np.ndarray, list[int]]:
    """Validate the blocks, compute the block scales and persist one :class:`RowData` per row chunk."""
    dask = import_optional("dask", extra="dask")
    from spatialmultiomics.factorize._estimator import _block_scales, _check_same_rows

    if sp.issparse(blocks) or hasattr(blocks, "shape"):
        blocks = [blocks]
    if not isinstance(blocks, list | tuple) or not blocks:
        msg = "blocks must be a non-empty list of (n_cells, n_features) matrices (dask, NumPy or SciPy)."
        raise InputError(msg)
    names = [f"blocks[{i}]" for i in range(len(blocks))]
    Xs = [_as_dask(X, nm, chunk_rows) for X, nm in zip(blocks, names, strict=True)]
    _check_same_rows([X.shape[0] for X in Xs])
    row_chunks = Xs[0].chunks[0]
    Xs = [X.rechunk((row_chunks, -1)) for X in Xs]
    pieces = [list(X.to_delayed().ravel()) for X in Xs]
    per_chunk = list(zip(*pieces, strict=True))
    # each chunk is validated once; its pieces feed both the norms (for the block scales) and its RowData
    checked = dask.persist(*[dask.delayed(_chunk_checked)(list(p), names) for p in per_chunk])
    norms = dask.compute(*[dask.delayed(_chunk_norm)(c) for c in checked])
    scales = _block_scales(weights, list(np.sum(norms, axis=0)))
    chunks = [dask.delayed(_chunk_data)(c, n, scales) for c, n in zip(checked, norms, strict=True)]
    chunks = list(dask.persist(*chunks))
    norm_x2 = float(np.sum(np.sum(norms, axis=0) * scales**2))
    sizes = dask.compute(*[dask.delayed(_sizes)(c) for c in chunks])
    nnz = None if sizes[0][0] is None else int(sum(s[0] for s in sizes))
    dense = None if sizes[0][1] is None else int(sum(s[1] for s in sizes))
    data = DaskRowData(
        chunks, tuple(int(r) for r in row_chunks), int(sum(X.shape[1] for X in Xs)), norm_x2, (nnz, dense)
    )
    return data, scales, [int(X.shape[1]) for X in Xs]


def _sizes(data: RowData) -> tuple[int | None, int | None]:
    return data.sparse_nnz, data.dense_size


def _pass(
    data: DaskRowData,
    G: np.ndarray,
    W: Any,
    update: str,
    max_inner: int,
    use_numba: bool = False,
    fixed: bool = False,
) -> tuple[Any, PassStats, float]:
    """One round of chunk tasks: the new cell loadings (persisted Dask array), the reduced pass sums and the
    fraction of cells whose dominant factor changed.

    Each chunk task runs exactly once: its results are persisted before the cell loadings and the sums are taken
    from them (persisting both views of unpersisted tasks together made Dask's optimizer run every chunk twice,
    once per view). The tasks get a snapshot of ``G``: the caller updates ``G`` in place as soon as the sums are
    back, and in-process workers can share the array's memory (pickle protocol 5 does not copy buffers).
    """
    dask = import_optional("dask", extra="dask")
    G_task = G.copy()
    results = dask.persist(
        *[
            dask.delayed(_chunk_pass, pure=False)(c, G_task, w, update, max_inner, use_numba, fixed)
            for c, w in zip(data.chunks, data._cell_pieces(W), strict=True)
        ]
    )
    W_new = data._cell_array([dask.delayed(getitem)(r, 0) for r in results], G.shape[0]).persist()
    total, changed = dask.compute(
        dask.delayed(_sum_stats)([dask.delayed(getitem)(r, 1) for r in results]),
        dask.delayed(sum)([dask.delayed(getitem)(r, 2) for r in results]),
    )
    return W_new, total, changed / max(data.n_rows, 1)


def fit_dask(
    blocks: Any,
    k: int,
    *,
    solver: str,
    init: str,
    weights: Any,
    rng: np.random.Generator,
    max_iter: int,
    tol: float,
    verbose: bool,
    batch_size: int | None = None,
    chunk_rows: Any = DEFAULT_CHUNK_ROWS,
) -> tuple[Any, list[np.ndarray], int, list[float], bool, np.ndarray, list[int]]:
    """Fit the joint NMF on row-chunked Dask arrays with the current Dask scheduler (e.g. a distributed Client).

    Parameters
    ----------
    blocks
        List of matrices (n_cells, n_features_b): Dask arrays (NumPy or SciPy sparse chunks; rechunked to the
        row chunks of the first block and one column chunk), or NumPy / SciPy matrices (cut into ``chunk_rows``).
    k, solver, init, weights, rng, max_iter, tol, verbose
        As in :class:`~spatialmultiomics.factorize.JointNMF` (``solver`` ``'hals'`` or ``'mu'``).
    batch_size
        Unused.
    chunk_rows
        Rows per chunk for NumPy / SciPy inputs.

    Returns
    -------
    ``(W, Hs, n_iter, errors, converged, scales, n_features)``: ``W`` a Dask array (n, k) float32, persisted;
    ``Hs`` the weighted feature loadings per block; ``scales`` the block scales; ``n_features`` per block.
    """
    if solver not in ("hals", "mu"):
        msg = f"backend='dask' runs solver 'hals' or 'mu', got solver={solver!r}; use backend='numpy' for it."
        raise InputError(msg)
    from spatialmultiomics.factorize._estimator import _check_k

    data, scales, n_features = _prepare(blocks, weights, chunk_rows)
    _check_k(k, data.n_rows, data.n_features)
    offsets = np.concatenate([[0], np.cumsum(n_features)]).astype(np.int64)
    W, G = initialize(data, k, init=init, rng=rng)
    W = W.rechunk((data.rows, -1)).astype(np.float32).persist()
    G = np.ascontiguousarray(G, dtype=np.float32)
    use_numba = data.use_numba(k)
    fixed = data.use_fixed(k)
    inner_w, inner_h = _inner_counts(data, k, use_numba)
    g_rule = hals_sweep if solver == "hals" else mu_step
    log = logger.info if verbose else logger.debug
    W, n_iter, errors, converged = _alternate(
        lambda G, W: _pass(data, G, W, solver, inner_w, use_numba, fixed),
        G,
        W,
        norm_x2=data.norm_x2,
        g_rule=g_rule,
        inner_h=inner_h,
        max_iter=max_iter,
        tol=tol,
        update_H=True,
        log=log,
        name=f"dask {solver}",
    )
    Hs = _split_g(G, offsets)
    return W, Hs, n_iter, errors, converged, scales, n_features
