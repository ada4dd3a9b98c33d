"""Solvers of the joint NMF (Frobenius loss), as plain functions over arrays.

Each solver minimises ``||X - W @ G||_F^2`` over ``W >= 0`` (n_cells, k) and ``G >= 0`` (k, n_features) for the
weighted joint matrix ``X = [s_1 X_1 | s_2 X_2 | ...]``; the joint matrix is never built, sparse blocks are never
densified or rescaled (the scales are folded into the small factors, see
:class:`spatialmultiomics.factorize._rowpass.RowData`).

``'hals'`` and ``'mu'`` alternate a full update of ``G`` and one fused pass over the rows of the data that
updates every row of ``W`` and returns everything the next update of ``G`` and the loss need, so the data are read
once per iteration. Updates are accelerated as in Gillis & Glineur (2012): the products cost far more than a
sweep of the update rule, so each row of ``W`` repeats its sweep while it still moves (up to a number fixed by a
deterministic cost model, :func:`_max_inner`), and so does each update of ``G``. Large inputs run in
thread-parallel numba kernels with BLAS pinned to one thread (threadpoolctl). ``'minibatch'`` is the online
variant for millions of cells (Mairal et al. 2010): it passes over mini-batches of rows and updates ``G`` from
exponentially forgotten running sums after every batch.

The loss ``||X||^2 - 2 tr(W.T X G.T) + tr(W.T W G G.T)`` comes out of every pass with the traces accumulated in
float64 (with a good fit the three terms nearly cancel), so it is known after every iteration at no extra cost.
``'hals'`` and ``'mu'`` stop once more iterations would no longer change the answer (:func:`_stop`): the decrease
of the error still to come, extrapolated from the last two decreases, is below ``tol`` (relative), and fewer than
``ASSIGNMENT_TOL`` of the cells changed their dominant factor in the last iteration. ``'minibatch'`` stops when
the loss of an epoch changed by less than ``tol`` (relative) from the previous epoch.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from spatialmultiomics._log import logger
from spatialmultiomics.factorize._kernels import hals_sweep, mu_step
from spatialmultiomics.factorize._rowpass import PassStats, RowData

__all__ = ["SOLVERS", "SolverResult"]

#: default ``tol`` of the stopping rule: relative decrease of the error still expected (see :func:`_stop`)
DEFAULT_TOL = 1e-3
#: the stopping rule also waits until at most this fraction of the cells changed their dominant factor (the
#: argmax of their row of ``W``) in the last iteration
ASSIGNMENT_TOL = 0.01
#: largest rate of geometric convergence the stopping rule extrapolates with (see :func:`_remaining_decrease`)
MAX_RATE = 0.9
# Accelerated updates (Gillis & Glineur 2012): each update of W (or G) repeats its sweep up to
# INNER_ALPHA * (cost of the products it needs / cost of one sweep) times (at most MAX_INNER), and stops repeating
# once a sweep moves the factor by less than INNER_DELTA times the first move.
INNER_ALPHA = 0.5
INNER_DELTA = 0.1
MAX_INNER = 10
# cost model, in sparse multiply-adds: a dense (BLAS) multiply-add is ~10x cheaper than one through scipy.sparse;
# a NumPy call costs about 3e3 of them, a scipy.sparse product about 5e4 on top of its multiply-adds
DENSE_MAC_COST = 0.1
CALL_COST = 3e3
SPARSE_CALL_COST = 5e4
#: a multiply-add of the numba row sweeps costs about two of the numba CSR products (measured at 200,000 cells,
#: k = 20: 0.14 us per sweep of a row, 1.6 us for the products of its 240 stored values; issue 15). The HALS sweeps
#: on blocks of rows later cost 0.046 us a row (about 0.7 of a product's multiply-add); 0.7 here (up to 10 sweeps
#: instead of 6) gave the same 8 iterations and the same error at the defaults (100,000 cells, k = 20), so the
#: model was left as it was
ROW_SWEEP_MAC_COST = 2.0

SolverResult = tuple[np.ndarray, list[np.ndarray], int, list[float], bool]


def _repeat(
    update: Callable[[np.ndarray, np.ndarray, np.ndarray], None],
    A: np.ndarray,
    gram: np.ndarray,
    XA: np.ndarray,
    max_inner: int,
    buffer: np.ndarray,
) -> None:
    """Apply ``update`` to ``A`` up to ``max_inner`` times with the same ``gram`` and ``XA`` (Gillis & Glineur 2012).

    The products ``gram`` and ``XA`` cost far more than one sweep, so the sweep is repeated while it still moves
    ``A`` by more than ``INNER_DELTA`` times the first move (Frobenius norm).
    """
    np.copyto(buffer, A)
    update(A, gram, XA)
    if max_inner <= 1:
        return
    buffer -= A
    first = float(np.linalg.norm(buffer))
    for _ in range(max_inner - 1):
        if first == 0.0:
            return
        np.copyto(buffer, A)
        update(A, gram, XA)
        buffer -= A
        if float(np.linalg.norm(buffer)) <= INNER_DELTA * first:
            return


def _product_cost(blocks: Sequence[Any], k: int) -> float:
    """Return the cost model of ``X @ G.T`` (or ``X.T @ W``): multiply-adds weighted by kind, plus call overhead."""
    return sum(
        X.nnz * k + SPARSE_CALL_COST if sp.issparse(X) else X.size * k * DENSE_MAC_COST + CALL_COST for X in blocks
    )


def _sweep_cost(p: int, k: int) -> float:
    """Return the cost model of one sweep over a (k, p) factor: k dense products of length k x p, 5 calls per row."""
    return p * k * k * DENSE_MAC_COST + 5 * k * CALL_COST


def _max_inner(product_cost: float, sweep_cost: float) -> int:
    """Return how many sweeps one product pays for: ``INNER_ALPHA * product / sweep``, between 1 and ``MAX_INNER``.

    A deterministic cost model (never a timing), so the result does not depend on the machine's load.
    """
    return int(min(max(INNER_ALPHA * product_cost / max(sweep_cost, 1.0), 1.0), MAX_INNER))


def _data_cost(data: Any, k: int) -> float:
    """Return the cost model of ``X @ G.T`` for the joint matrix held by ``data`` (its CSR and dense parts)."""
    cost = 0.0
    if data.sparse_nnz is not None:
        cost += data.sparse_nnz * k + SPARSE_CALL_COST
    if data.dense_size is not None:
        cost += data.dense_size * k * DENSE_MAC_COST + CALL_COST
    return cost


def _inner_counts(data: Any, k: int, use_numba: bool) -> tuple[int, int]:
    """Return the sweeps per update of ``W`` (per row) and of ``G``, from the cost model of one pass.

    A pass costs the two products ``X @ G.T`` and ``X.T @ W``. The numba kernel sweeps one row at a time
    (k^2 multiply-adds at ``ROW_SWEEP_MAC_COST`` each against ``2 * stored / n * k`` for that row's products);
    the NumPy code sweeps a whole column of ``W`` per call (:func:`_sweep_cost`).
    """
    n, m = data.n_rows, data.n_features
    product = 2.0 * _data_cost(data, k)
    if use_numba:
        inner_w = _max_inner(2.0 * data.stored / max(n, 1) * k, ROW_SWEEP_MAC_COST * k * k)
    else:
        inner_w = _max_inner(product, _sweep_cost(n, k))
    inner_h = _max_inner(product + n * k * k * DENSE_MAC_COST, _sweep_cost(m, k))
    return inner_w, inner_h


def _squared_error(norm_x2: float, stats: PassStats) -> float:
    """Return ``||X - W G||^2 = ||X||^2 - 2 tr(W.T X G.T) + tr(W.T W G G.T)`` from the sums of a pass."""
    return max(norm_x2 - 2.0 * stats.cross + stats.quad, 0.0)


def _squared_error_after(norm_x2: float, stats: PassStats, G: np.ndarray) -> float:
    """Return ``||X - W G||^2`` for the ``W`` of a pass and any ``G``: ``X.T @ W`` and ``W.T @ W`` suffice.

    ``||X||^2 - 2 sum(G * (X.T W).T) + sum((W.T W) * (G G.T))``, in float64 (so the error after the update of
    ``G`` that follows a pass costs no further pass over the data).
    """
    G64 = np.asarray(G, dtype=np.float64)
    cross = float(np.sum(G64 * stats.XtW.T))
    quad = float(np.sum(stats.WtW * (G64 @ G64.T)))
    return max(norm_x2 - 2.0 * cross + quad, 0.0)


def _update_g(rule: Callable[..., None], G: np.ndarray, gram: np.ndarray, XA: np.ndarray, inner: int) -> None:
    """Update ``G`` (k, m) in place with ``rule`` from ``gram`` (k, k) and ``XA = W.T @ X`` (k, m), float64 in."""
    buffer = np.empty_like(G)
    _repeat(rule, G, gram.astype(np.float32), np.ascontiguousarray(XA, dtype=np.float32), inner, buffer)


def _split_g(G: np.ndarray, out_offsets: np.ndarray) -> list[np.ndarray]:
    return [G[:, a:b].copy() for a, b in itertools.pairwise(out_offsets)]


def _remaining_decrease(errors: Sequence[float]) -> float:
    """Return the relative decrease of the error still expected, extrapolated from the last two decreases.

    With linear convergence the decreases shrink geometrically, ``d_t = r * d_{t-1}``, so what is left to gain is
    ``d_t * r / (1 - r)`` (relative to the error before the last iteration). The rate is capped at
    ``MAX_RATE`` (decreases that do not shrink, or shrink slowly, count as ``d_t * 9``: about the decrease over
    the next ten iterations), so the rule is never looser than "the last decrease times nine". No decrease in the
    last iteration (the error is at its rounding floor) gives 0; fewer than three errors give infinity.
    """
    if len(errors) < 3:
        return float("inf")
    e2, e1, e0 = (float(e) for e in errors[-3:])
    if e1 <= 0.0 or e0 >= e1:
        return 0.0
    last = (e1 - e0) / e1
    before = (e2 - e1) / e2 if e2 > 0.0 else 0.0
    r = min(last / before, MAX_RATE) if before > 0.0 else MAX_RATE
    return last * r / (1.0 - r)


def _stop(errors: list[float], changed: float, it: int, tol: float, log: Callable[..., None], name: str) -> bool:
    """The stopping rule of every backend: more iterations would no longer change the answer.

    Stop when the decrease of the error still expected (:func:`_remaining_decrease`, relative) is below ``tol``
    and the fraction ``changed`` of cells whose dominant factor moved in the last iteration is at most
    ``ASSIGNMENT_TOL``. ``tol=0`` never stops before ``max_iter``.
    """
    remaining = _remaining_decrease(errors)
    log(
        "%s iteration %d: reconstruction error %.6g, further relative decrease expected %.3g, "
        "dominant factor changed in %.3g%% of cells",
        name,
        it,
        errors[-1],
        remaining,
        100.0 * changed,
    )
    return remaining < tol and changed <= ASSIGNMENT_TOL


def _changed_fraction(before: np.ndarray, after: np.ndarray) -> float:
    """Return the fraction of rows whose argmax differs between two label arrays."""
    return float(np.count_nonzero(before != after)) / max(before.size, 1)


def _alternate(
    row_pass: Callable[[np.ndarray, np.ndarray], tuple[Any, Any, float]],
    G: np.ndarray,
    W: Any,
    *,
    norm_x2: float,
    g_rule: Callable[..., Any],
    inner_h: int,
    max_iter: int,
    tol: float,
    update_H: bool,
    log: Callable[..., None],
    name: str,
) -> tuple[Any, int, list[float], bool]:
    """The alternating loop shared by the NumPy and Dask backends: ``row_pass(G, W) -> (W, stats, changed)``
    updates ``W`` and returns the sums of that pass and the fraction of cells whose dominant factor changed;
    ``G`` is updated in place from the sums; the error of the new factors follows from the same sums and the
    stopping rule (:func:`_stop`) is checked after every iteration.

    Returns ``(W, n_iter, errors, converged)``; ``errors`` holds the error of the initial factors and the error
    after every iteration.
    """
    errors: list[float] = []
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        W, stats, changed = row_pass(G, W)
        if it == 1:  # the first pass also measured the initial factors
            errors.append(float(np.sqrt(max(norm_x2 - 2.0 * stats.cross0 + stats.quad0, 0.0))))
        if update_H:
            _update_g(g_rule, G, stats.WtW, stats.XtW.T, inner_h)
        errors.append(float(np.sqrt(_squared_error_after(norm_x2, stats, G))))
        if _stop(errors, changed, it, tol, log, name):
            converged = True
            break
    return W, n_iter, errors, converged


def _iterate(
    rule: str,
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int,
    tol: float,
    update_H: bool,
    verbose: bool,
    name: str,
    data: RowData | None = None,
) -> SolverResult:
    """Run alternating updates: one fused pass that updates ``W``, then ``G`` from the sums of that pass.

    Every iteration makes one pass over the rows of the data (:meth:`RowData.row_pass`): it updates ``W`` row by
    row with ``G`` fixed and returns ``W.T @ W`` and ``X.T @ W`` of the new ``W``; from these ``G`` (k, m) is
    updated with its own rule (repeated while the cost model says it pays), and the exact error of the new
    factors follows from the same sums (:func:`_squared_error_after`), so it costs no extra pass.
    """
    out_offsets = np.concatenate([[0], np.cumsum([X.shape[1] for X in blocks])]).astype(np.int64)
    data = RowData.build(blocks, scales) if data is None else data
    G = np.ascontiguousarray(np.concatenate(list(Hs), axis=1), dtype=np.float32)
    W = np.array(W, dtype=np.float32, order="C")
    k = G.shape[0]
    use_numba = data.use_numba(k)
    inner_w, inner_h = _inner_counts(data, k, use_numba)
    g_rule = hals_sweep if rule == "hals" else mu_step
    log = logger.info if verbose else logger.debug

    labels = W.argmax(axis=1)  # the dominant factor of every cell, for the stopping rule
    threads = data.n_threads
    # more than one thread asked: passes 2 and 3 run on 1 and on ``threads`` threads, the faster count is kept
    # (the first pass may load the kernels; the results do not depend on the number of threads)
    timed: list[tuple[float, int]] = []
    passes = 0
    scratch = np.empty((data.n_rows, k), dtype=np.float32) if use_numba else None  # X @ G.T, kept across passes

    def row_pass(G: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Any, float]:
        nonlocal passes
        passes += 1
        timing = use_numba and threads > 1 and passes in (2, 3)
        if timing:
            data.n_threads = 1 if passes == 2 else threads
        start = time.perf_counter()
        stats = data.row_pass(
            G, W, update=rule, max_inner=inner_w, delta=INNER_DELTA, use_numba=use_numba, scratch=scratch
        )
        if timing:
            timed.append((time.perf_counter() - start, data.n_threads))
            if passes == 3:
                data.n_threads = min(timed)[1]
                log(
                    "%s: one pass took %.3g s on 1 thread, %.3g s on %d; using %d",
                    name,
                    timed[0][0],
                    timed[1][0],
                    threads,
                    data.n_threads,
                )
        now = W.argmax(axis=1)
        changed = _changed_fraction(labels, now)
        labels[:] = now
        return W, stats, changed

    with threadpool_limits(limits=1, user_api="blas") if use_numba else nullcontext():
        W, n_iter, errors, converged = _alternate(
            row_pass,
            G,
            W,
            norm_x2=data.norm_x2,
            g_rule=g_rule,
            inner_h=inner_h,
            max_iter=max_iter,
            tol=tol,
            update_H=update_H,
            log=log,
            name=name,
        )
    data.n_threads = threads
    return W, _split_g(G, out_offsets), n_iter, errors, converged


def _fit_hals(
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int = 400,
    tol: float = DEFAULT_TOL,
    update_H: bool = True,
    verbose: bool = False,
    data: RowData | None = None,
    **_: Any,
) -> SolverResult:
    """Fit by hierarchical alternating least squares (HALS; Cichocki & Phan 2009).

    Each iteration sweeps over the k rows of ``G`` and then over the k entries of every row of ``W``, each a
    closed-form non-negative least-squares update (scikit-learn's coordinate descent, ``solver='cd'``); each
    sweep is repeated with the same products while that pays (accelerated HALS, Gillis & Glineur 2012).

    Parameters
    ----------
    blocks
        The blocks ``X_b`` (n_cells, n_features_b), float32, dense C-contiguous or CSR/CSC without duplicates.
    scales
        The multiplier ``s_b`` of each block in the objective.
    W
        Initial cell loadings, shape (n_cells, k).
    Hs
        Initial feature loadings in weighted units, one (k, n_features_b) array per block.
    max_iter
        Maximum number of iterations (one iteration = one update of ``G`` and one of ``W``; with
        ``update_H=False`` one update of ``W``).
    tol
        Stop when the relative decrease of the reconstruction error still expected (extrapolated from the last
        two iterations) is below ``tol`` and at most ``ASSIGNMENT_TOL`` of the cells changed their dominant
        factor in the last iteration (:func:`_stop`); 0 runs ``max_iter`` iterations.
    update_H
        False keeps ``Hs`` fixed and solves for ``W`` only (non-negative least squares, used by ``transform``).
    verbose
        Log the error at every check at INFO level (else DEBUG).
    data
        The blocks already held as a :class:`~spatialmultiomics.factorize._rowpass.RowData` (built once by the
        caller); default built from ``blocks`` and ``scales``.

    Returns
    -------
    W
        Array of shape (n_cells, k), float32.
    Hs
        List of arrays (k, n_features_b), float32, weighted units.
    n_iter
        Iterations run.
    errors
        Frobenius norm of the weighted residual before the first iteration and after every iteration (length
        ``n_iter + 1``).
    converged
        Whether the stopping rule was met before ``max_iter``.
    """
    return _iterate(
        "hals",
        blocks,
        scales,
        W,
        Hs,
        max_iter=max_iter,
        tol=tol,
        update_H=update_H,
        verbose=verbose,
        name="HALS",
        data=data,
    )


def _fit_mu(
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int = 400,
    tol: float = DEFAULT_TOL,
    update_H: bool = True,
    verbose: bool = False,
    data: RowData | None = None,
    **_: Any,
) -> SolverResult:
    """Fit by multiplicative updates (Lee & Seung 2001), Frobenius loss.

    ``G <- G * (W.T X) / (W.T W G)`` then ``W <- W * (X G.T) / (W G G.T)`` (each repeated with the same products
    while that pays, accelerated MU, Gillis & Glineur 2012), with a relative floor on the denominators (see
    :func:`spatialmultiomics.factorize._kernels.mu_step`). Entries that reach exactly 0 stay 0, so start from
    strictly positive factors (``init='nndsvda'`` or ``'random'``). Parameters and returns as in :func:`_fit_hals`.
    """
    return _iterate(
        "mu",
        blocks,
        scales,
        W,
        Hs,
        max_iter=max_iter,
        tol=tol,
        update_H=update_H,
        verbose=verbose,
        name="MU",
        data=data,
    )


def _fit_minibatch(
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int = 400,
    tol: float = DEFAULT_TOL,
    update_H: bool = True,
    verbose: bool = False,
    batch_size: int = 4096,
    forget_factor: float = 0.7,
    rng: np.random.Generator | None = None,
    data: RowData | None = None,
) -> SolverResult:
    """Fit by online / mini-batch HALS (Mairal et al. 2010; scikit-learn's ``MiniBatchNMF`` in spirit).

    One iteration is one epoch: the rows are cut into contiguous batches of ``batch_size`` cells, visited in a
    seeded random order. For each batch, its rows of ``W`` are solved with ``G`` fixed (HALS sweeps, per row, until
    they stop moving) in one pass over its rows, which also returns ``A_b = W_b.T W_b`` and ``B_b = W_b.T X_b``;
    the running sums ``A <- rho A + A_b``, ``B <- rho B + B_b`` (``rho = forget_factor ** (batch_size /
    n_cells)``, so a full epoch ago weighs ``forget_factor``) then drive HALS sweeps of ``G``. The loss of an epoch
    is the sum of its batches' losses (each measured when its rows were solved); the solver stops when it changed
    by less than ``tol`` (relative) from the previous epoch. A last full pass solves every row of ``W`` against the
    final ``G``, so the returned factors are consistent and their error is exact.

    Parameters
    ----------
    blocks, scales, W, Hs, tol, verbose
        As in :func:`_fit_hals`.
    max_iter
        Maximum number of epochs.
    update_H
        False keeps ``Hs`` fixed: the rows of ``W`` are solved once each (as :func:`_fit_hals` with
        ``update_H=False``).
    batch_size
        Cells per batch.
    forget_factor
        Weight of the sums of one epoch ago, in (0, 1].
    rng
        Order of the batches (default: seed 0).
    data
        As in :func:`_fit_hals`.

    Returns
    -------
    As :func:`_fit_hals`, with ``errors`` = the exact error of the initial factors, the loss of every epoch and the
    exact error of the returned factors; ``n_iter`` = epochs run.
    """
    if not update_H:
        return _fit_hals(blocks, scales, W, Hs, max_iter=max_iter, tol=tol, update_H=False, verbose=verbose, data=data)
    rng = np.random.default_rng(0) if rng is None else rng
    out_offsets = np.concatenate([[0], np.cumsum([X.shape[1] for X in blocks])]).astype(np.int64)
    data = RowData.build(blocks, scales) if data is None else data
    G = np.ascontiguousarray(np.concatenate(list(Hs), axis=1), dtype=np.float32)
    W = np.array(W, dtype=np.float32, order="C")
    k, n, m = G.shape[0], data.n_rows, data.n_features
    batch_size = int(min(batch_size, n))
    starts = np.arange(0, n, batch_size)
    use_numba = data.use_numba(k)
    rho = float(forget_factor) ** (batch_size / n)
    row_norms = data.row_norms2()
    batch_norm_x2 = np.add.reduceat(row_norms, starts)
    inner_w = _max_inner(2.0 * data.stored / max(n, 1) * k, ROW_SWEEP_MAC_COST * k * k) if use_numba else MAX_INNER
    batch_cost = 2.0 * _data_cost(data, k) * batch_size / n
    inner_h = _max_inner(batch_cost + batch_size * k * k * DENSE_MAC_COST, _sweep_cost(m, k))
    log = logger.info if verbose else logger.debug
    A = np.zeros((k, k))
    B = np.zeros((k, m))
    with threadpool_limits(limits=1, user_api="blas") if use_numba else nullcontext():
        errors = [float(np.sqrt(_squared_error(data.norm_x2, data.row_pass(G, W, use_numba=use_numba))))]
        converged = False
        n_iter = 0
        previous = np.inf
        for epoch in range(1, max_iter + 1):
            n_iter = epoch
            total = 0.0
            for b in rng.permutation(starts.size):
                r0 = int(starts[b])
                r1 = min(n, r0 + batch_size)
                stats = data.row_pass(
                    G, W, update="hals", max_inner=inner_w, delta=INNER_DELTA, rows=(r0, r1), use_numba=use_numba
                )
                total += _squared_error(float(batch_norm_x2[b]), stats)
                A *= rho
                A += stats.WtW
                B *= rho
                B += stats.XtW.T
                _update_g(hals_sweep, G, A, B, inner_h)
            now = float(np.sqrt(total))
            errors.append(now)
            change = (previous - now) / previous if np.isfinite(previous) and previous > 0 else np.inf
            log("minibatch epoch %d: reconstruction error %.6g, relative change %.3g", epoch, now, change)
            previous = now
            if change < tol:
                converged = True
                break
        stats = data.row_pass(G, W, update="hals", max_inner=MAX_INNER, delta=INNER_DELTA, use_numba=use_numba)
        errors.append(float(np.sqrt(_squared_error(data.norm_x2, stats))))
    return W, _split_g(G, out_offsets), n_iter, errors, converged


#: solver name -> solver function
SOLVERS: dict[str, Callable[..., SolverResult]] = {"hals": _fit_hals, "mu": _fit_mu, "minibatch": _fit_minibatch}
