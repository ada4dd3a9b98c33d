"""Solvers of the joint NMF (Frobenius loss), as plain functions over arrays.

Each solver minimises ``||X - W @ G||_F^2`` over ``W >= 0`` (n_cells, k) and ``G >= 0`` (k, n_features) for the
weighted joint matrix ``X = [s_1 X_1 | s_2 X_2 | ...]``, alternating a full update of ``W`` and a full update of
``G``. One iteration costs two sparse-times-thin-dense products per block (``X_b @ G_b.T`` and ``X_b.T @ W``)
plus O((n_cells + n_features) k^2) dense work; the joint matrix is never built and sparse blocks are never
densified (adjacent small dense blocks are merged into one pre-scaled copy, see :func:`_merge_dense`).

Updates are accelerated as in Gillis & Glineur (2012): since the two products cost far more than a sweep of
the update rule, each update of ``W`` (or ``G``) repeats its sweep with the same products while that still pays,
up to a number of times fixed by a deterministic cost model (:func:`_max_inner`; 1 for tiny dense problems, up to
10 for large sparse ones). The results are deterministic and independent of the machine's load.

Every 10 iterations (and after the last one) the solvers evaluate the Frobenius norm of the weighted residual as
``sqrt(||X||^2 - 2 tr(W.T X G.T) + tr(W.T W G G.T))`` with the trace terms accumulated in float64 (see
:func:`spatialmultiomics.factorize._kernels.frobenius_loss`: with a good fit the three terms nearly cancel, and
float32 products would leave only a few significant digits), and stop when it changed by less than ``tol``
(relative) over those 10 iterations.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._log import logger
from spatialmultiomics.factorize._kernels import cross_g, cross_w, frobenius_loss, hals_sweep, mu_step, squared_norm

__all__ = ["SOLVERS", "SolverResult"]

CHECK_EVERY = 10
# Accelerated updates (Gillis & Glineur 2012): each update of W (or G) repeats its sweep up to
# INNER_ALPHA * (cost of the products it needs / cost of one sweep) times (at most MAX_INNER), and stops repeating
# once a sweep moves the factor by less than INNER_DELTA times the first move.
INNER_ALPHA = 0.5
INNER_DELTA = 0.1
MAX_INNER = 10
MERGE_LIMIT = 1 << 24  # adjacent dense blocks up to this many values in all are merged into one scaled copy
# cost model, in sparse multiply-adds: a dense (BLAS) multiply-add is ~10x cheaper than one through scipy.sparse;
# a NumPy call costs about 3e3 of them, a scipy.sparse product about 5e4 on top of its multiply-adds
DENSE_MAC_COST = 0.1
CALL_COST = 3e3
SPARSE_CALL_COST = 5e4

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


def _merge_dense(blocks: Sequence[Any], scales: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Merge each run of adjacent dense blocks (if small enough) into one pre-scaled float32 copy.

    One product with a wide block is cheaper than several with narrow ones (fewer calls, no scaling per call);
    the copy is made only when the run holds at most ``MERGE_LIMIT`` values. The merged blocks cover the same
    columns of the joint matrix in the same order, with scale 1.
    """
    out: list[Any] = []
    out_scales: list[float] = []
    run: list[tuple[Any, float]] = []

    def flush() -> None:
        if len(run) > 1 and sum(X.size for X, _ in run) <= MERGE_LIMIT:
            out.append(np.hstack([X * np.float32(sc) for X, sc in run]).astype(np.float32, copy=False))
            out_scales.append(1.0)
        else:
            out.extend(X for X, _ in run)
            out_scales.extend(sc for _, sc in run)
        run.clear()

    for X, sc in zip(blocks, scales, strict=True):
        if sp.issparse(X):
            flush()
            out.append(X)
            out_scales.append(float(sc))
        else:
            run.append((X, float(sc)))
    flush()
    return out, np.asarray(out_scales, dtype=np.float64)


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


def _iterate(
    update: Callable[[np.ndarray, np.ndarray, np.ndarray], None],
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
) -> SolverResult:
    """Run alternating updates with the row-wise kernel ``update`` (see :mod:`._kernels`)."""
    out_offsets = np.concatenate([[0], np.cumsum([X.shape[1] for X in blocks])]).astype(np.int64)
    blocks, scales_arr = _merge_dense(blocks, np.asarray(scales, dtype=np.float64))
    offsets = np.concatenate([[0], np.cumsum([X.shape[1] for X in blocks])]).astype(np.int64)
    norm_x2 = float(sum(s * s * squared_norm(X) for X, s in zip(blocks, scales_arr, strict=True)))
    Wt = np.array(W.T, dtype=np.float32, order="C")  # (k, n): cells along rows of the transposed factor
    G = np.ascontiguousarray(np.concatenate(list(Hs), axis=1), dtype=np.float32)
    k, n, m = G.shape[0], Wt.shape[1], G.shape[1]
    product = _product_cost(blocks, k)
    inner_w = _max_inner(product + m * k * k * DENSE_MAC_COST, _sweep_cost(n, k))  # X @ G.T and G @ G.T
    inner_h = _max_inner(product + n * k * k * DENSE_MAC_COST, _sweep_cost(m, k))  # X.T @ W and W.T @ W
    transposed = [X.T for X in blocks]  # views, made once
    buf_w, buf_h = np.empty_like(Wt), np.empty_like(G)
    GGt = G @ G.T
    XGt = None if update_H else cross_w(blocks, scales_arr, offsets, G)  # H fixed: the cross term is constant
    log = logger.info if verbose else logger.debug
    errors = [float(np.sqrt(frobenius_loss(norm_x2, blocks, scales_arr, offsets, Wt, G)))]
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        if update_H:
            _repeat(update, Wt, GGt, cross_w(blocks, scales_arr, offsets, G), inner_w, buf_w)  # (k, n) = G @ X.T
            WtW = Wt @ Wt.T
            _repeat(
                update, G, WtW, cross_g(blocks, scales_arr, offsets, Wt, transposed), inner_h, buf_h
            )  # (k, m) = Wt @ X
            GGt = G @ G.T
        else:
            update(Wt, GGt, XGt)
        if it % CHECK_EVERY and it < max_iter:
            continue
        errors.append(float(np.sqrt(frobenius_loss(norm_x2, blocks, scales_arr, offsets, Wt, G))))
        if it % CHECK_EVERY == 0:
            before, now = errors[-2], errors[-1]
            change = (before - now) / before if before > 0 else 0.0
            log("%s iteration %d: reconstruction error %.6g, relative change %.3g", name, it, now, change)
            if change < tol:
                converged = True
                break
    Hs_out = [G[:, a:b].copy() for a, b in itertools.pairwise(out_offsets)]
    return np.ascontiguousarray(Wt.T), Hs_out, n_iter, errors, converged


def _fit_hals(
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int = 400,
    tol: float = 1e-4,
    update_H: bool = True,
    verbose: bool = False,
) -> SolverResult:
    """Fit by hierarchical alternating least squares (HALS; Cichocki & Phan 2009).

    Each iteration sweeps over the k columns of ``W`` and then over the k rows of ``G``, each a closed-form
    non-negative least-squares update (scikit-learn's coordinate descent, ``solver='cd'``); each sweep is
    repeated with the same products while that pays (accelerated HALS, Gillis & Glineur 2012).

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
        Maximum number of iterations (one iteration = one update of ``W`` and one of ``G``; with ``update_H=False``
        one sweep over ``W``).
    tol
        Stop when the reconstruction error changed by less than this fraction over the last 10 iterations.
    update_H
        False keeps ``Hs`` fixed and solves for ``W`` only (non-negative least squares, used by ``transform``).
    verbose
        Log the error at every check at INFO level (else DEBUG).

    Returns
    -------
    W
        Array of shape (n_cells, k), float32.
    Hs
        List of arrays (k, n_features_b), float32, weighted units.
    n_iter
        Iterations run.
    errors
        Frobenius norm of the weighted residual before the first iteration, after every 10th iteration and after
        the last one (length ``ceil(n_iter / 10) + 1``).
    converged
        Whether the stopping rule was met before ``max_iter``.
    """
    return _iterate(
        hals_sweep,
        blocks,
        scales,
        W,
        Hs,
        max_iter=max_iter,
        tol=tol,
        update_H=update_H,
        verbose=verbose,
        name="HALS",
    )


def _fit_mu(
    blocks: Sequence[Any],
    scales: Sequence[float],
    W: np.ndarray,
    Hs: Sequence[np.ndarray],
    *,
    max_iter: int = 400,
    tol: float = 1e-4,
    update_H: bool = True,
    verbose: bool = False,
) -> SolverResult:
    """Fit by multiplicative updates (Lee & Seung 2001), Frobenius loss.

    ``W <- W * (X G.T) / (W G G.T)`` then ``G <- G * (W.T X) / (W.T W G)`` (each repeated with the same products
    while that pays, accelerated MU, Gillis & Glineur 2012), with a relative floor on the denominators (see :func:`spatialmultiomics.factorize._kernels.mu_step`). Entries that reach exactly 0 stay
    0, so start from strictly positive factors (``init='nndsvda'`` or ``'random'``). Parameters and returns as in
    :func:`_fit_hals`.
    """
    return _iterate(
        mu_step,
        blocks,
        scales,
        W,
        Hs,
        max_iter=max_iter,
        tol=tol,
        update_H=update_H,
        verbose=verbose,
        name="MU",
    )


#: solver name -> solver function
SOLVERS: dict[str, Callable[..., SolverResult]] = {"hals": _fit_hals, "mu": _fit_mu}
