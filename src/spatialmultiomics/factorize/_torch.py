"""PyTorch backend of the joint NMF: the HALS / MU iterations on a GPU when one is available (else the CPU).

The initial factors come from the NumPy backend (:func:`spatialmultiomics.factorize._init.initialize`); the
data then move to the device once (the CSR part and its transpose as ``torch.sparse_csr_tensor``, the dense
part as a dense tensor; float32) and every iteration runs there: one update of ``G`` from ``W.T @ W`` and
``X.T @ W``, one update of ``W`` from ``X @ G.T`` and ``G @ G.T`` (each repeated while it still moves the factor
by more than ``INNER_DELTA`` times its first move), with the loss ``||X||^2 - 2 tr(W.T X G.T) + tr(W.T W G G.T)``
accumulated in float64. The objective, initial factors and stopping rule are those of the NumPy backend.

PyTorch is an optional extra (``pip install 'spatialmultiomics[torch]'``), imported only here.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._optional import import_optional
from spatialmultiomics.factorize._rowpass import RowData
from spatialmultiomics.factorize._solvers import INNER_DELTA, MAX_INNER, SolverResult, _stop

__all__ = ["fit_torch", "torch_device"]

SMALL_CPU_PROBLEM = 1_000_000  # stored values below which a CPU fit runs on one PyTorch thread


def torch_device() -> Any:
    """Return ``torch.device('cuda')`` when a CUDA GPU is available, else the CPU."""
    torch = import_optional("torch", extra="torch")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to_torch_csr(torch: Any, X: Any, device: Any) -> Any:
    """Return a SciPy CSR matrix as a ``torch.sparse_csr_tensor`` on ``device`` (float32 values)."""
    with warnings.catch_warnings():  # PyTorch flags its CSR support as beta on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(X.indptr.astype(np.int64)),
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(X.data, dtype=np.float32)),
            size=X.shape,
            device=device,
            check_invariants=False,  # built from a canonical SciPy CSR matrix
        )


def _sweep_rows(torch: Any, A: Any, gram: Any, XA: Any, rule: str) -> None:
    """Update ``A`` (k, p) in place by one HALS sweep over its rows or one multiplicative update."""
    if rule == "hals":
        diag = torch.diagonal(gram)
        for j in range(A.shape[0]):
            d = float(diag[j])
            if d <= 0.0:
                continue
            step = (gram[j] @ A - XA[j]) / d
            A[j] = torch.clamp(A[j] - step, min=0.0)
    else:
        den = gram @ A
        floor = float(np.finfo(np.float32).eps) * float(den.max()) + 1e-30
        A *= XA / torch.clamp(den, min=floor)


def _repeat(torch: Any, A: Any, gram: Any, XA: Any, rule: str, max_inner: int) -> None:
    """Repeat the sweep up to ``max_inner`` times while it moves ``A`` by more than INNER_DELTA x the first move."""
    first = None
    for _ in range(max_inner):
        before = A.clone()
        _sweep_rows(torch, A, gram, XA, rule)
        move = float(torch.linalg.vector_norm(A - before))
        if first is None:
            first = move
            if first == 0.0:
                return
        elif move <= INNER_DELTA * first:
            return


def fit_torch(
    data: RowData,
    W: np.ndarray,
    Hs: list[np.ndarray],
    *,
    solver: str,
    max_iter: int,
    tol: float,
    verbose: bool,
    rng: np.random.Generator | None = None,
    batch_size: int | None = None,
    device: Any = None,
) -> SolverResult:
    """Run ``solver`` (``'hals'`` or ``'mu'``) with PyTorch; arguments and returns as the NumPy solvers.

    Parameters
    ----------
    data
        The weighted joint matrix (:class:`~spatialmultiomics.factorize._rowpass.RowData`).
    W, Hs
        Initial cell loadings (n, k) and weighted feature loadings per block (k, n_features_b).
    solver
        ``'hals'`` or ``'mu'``.
    max_iter, tol, verbose
        As in :func:`spatialmultiomics.factorize._solvers._fit_hals`.
    rng, batch_size
        Unused (the mini-batch solver runs on the NumPy and Dask backends).
    device
        A ``torch.device``; default :func:`torch_device` (CUDA when available).

    Returns
    -------
    ``(W, Hs, n_iter, errors, converged)`` as NumPy float32 arrays (see the NumPy solvers).
    """
    torch = import_optional("torch", extra="torch")
    if solver not in ("hals", "mu"):
        msg = f"backend='torch' runs solver 'hals' or 'mu', got solver={solver!r}; use backend='numpy' for it."
        raise InputError(msg)
    device = torch_device() if device is None else device
    out_offsets = np.concatenate([[0], np.cumsum([H.shape[1] for H in Hs])]).astype(np.int64)
    k, n = W.shape[1], W.shape[0]
    Xs = _to_torch_csr(torch, data.sparse, device) if data.sparse is not None else None
    XsT = _to_torch_csr(torch, data.sparse.T.tocsr(), device) if data.sparse is not None else None
    D = torch.from_numpy(data.dense).to(device) if data.dense is not None else None
    cols_s = torch.from_numpy(data.cols_s).to(device)
    cols_d = torch.from_numpy(data.cols_d).to(device)
    sc_s = torch.from_numpy(data.scale_s.astype(np.float32)).to(device)
    sc_d = torch.from_numpy(data.scale_d.astype(np.float32)).to(device)
    Wt = torch.from_numpy(np.ascontiguousarray(W.T, dtype=np.float32)).to(device)  # (k, n)
    G = torch.from_numpy(np.ascontiguousarray(np.concatenate(Hs, axis=1), dtype=np.float32)).to(device)
    m = G.shape[1]
    log = logger.info if verbose else logger.debug
    logger.debug("torch backend on %s: %d cells, %d features, k=%d", device, n, m, k)

    def xg_of(G: Any) -> Any:  # (k, n) = G @ X.T
        out = torch.zeros((k, n), dtype=torch.float32, device=device)
        if Xs is not None:
            out += (Xs @ (G[:, cols_s] * sc_s).T.contiguous()).T
        if D is not None:
            out += (D @ (G[:, cols_d] * sc_d).T).T
        return out

    def xtw_of(Wt: Any) -> Any:  # (k, m) = Wt @ X
        out = torch.zeros((k, m), dtype=torch.float32, device=device)
        W_ = Wt.T.contiguous()
        if XsT is not None:
            out[:, cols_s] = (XsT @ W_).T * sc_s
        if D is not None:
            out[:, cols_d] = (D.T @ W_).T * sc_d
        return out

    def error(Wt: Any, G: Any, XG: Any) -> float:
        W64, G64 = Wt.double(), G.double()
        cross = float((W64 * XG.double()).sum())
        quad = float(((W64 @ W64.T) * (G64 @ G64.T)).sum())
        return float(np.sqrt(max(data.norm_x2 - 2.0 * cross + quad, 0.0)))

    threads = torch.get_num_threads()
    if device.type == "cpu" and data.stored < SMALL_CPU_PROBLEM:
        torch.set_num_threads(1)  # small problems: intra-op threads only spin and contend (20x slower on 2 cores)
    try:
        return _loop(torch, data, Wt, G, xg_of, xtw_of, error, solver, max_iter, tol, log, out_offsets)
    finally:
        torch.set_num_threads(threads)


def _loop(
    torch: Any,
    data: RowData,
    Wt: Any,
    G: Any,
    xg_of: Any,
    xtw_of: Any,
    error: Any,
    solver: str,
    max_iter: int,
    tol: float,
    log: Any,
    out_offsets: np.ndarray,
) -> SolverResult:
    """The iterations of :func:`fit_torch` (G update, then W update; the stopping rule checked every iteration)."""
    inner_w = inner_h = MAX_INNER
    errors = [error(Wt, G, xg_of(G))]
    converged = False
    n_iter = 0
    with torch.no_grad():
        labels = Wt.argmax(dim=0)  # the dominant factor of every cell
        for it in range(1, max_iter + 1):
            n_iter = it
            _repeat(torch, G, Wt @ Wt.T, xtw_of(Wt), solver, inner_h)
            XG = xg_of(G)
            _repeat(torch, Wt, G @ G.T, XG, solver, inner_w)
            errors.append(error(Wt, G, XG))
            now = Wt.argmax(dim=0)
            changed = float((now != labels).sum()) / max(int(now.numel()), 1)
            labels = now
            if _stop(errors, changed, it, tol, log, f"torch {solver}"):
                converged = True
                break
    W_out = np.ascontiguousarray(Wt.T.cpu().numpy(), dtype=np.float32)
    G_out = G.cpu().numpy().astype(np.float32)
    Hs_out = [G_out[:, a:b].copy() for a, b in itertools.pairwise(out_offsets)]
    return W_out, Hs_out, n_iter, errors, converged
