"""Initial factors for the joint NMF: NNDSVD(a) on the weighted joint matrix, or seeded random values.

The truncated SVD is a randomized range finder (Halko, Martinsson & Tropp 2011) that only multiplies the blocks
with thin dense matrices, so sparse blocks are never densified and the joint matrix is never built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spatialmultiomics.factorize._kernels import cross_g, cross_w, total_sum

__all__ = ["INITS", "initialize", "randomized_svd"]

INITS = ("nndsvda", "nndsvd", "random")


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    """Return an orthonormal basis (Q of the thin QR) of the columns of ``Y`` (n, r)."""
    q, _ = np.linalg.qr(Y)
    return q


def randomized_svd(
    blocks: Sequence[Any],
    scales: np.ndarray,
    offsets: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    n_oversamples: int = 10,
    n_iter: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the leading ``k`` singular triplets of the weighted joint matrix ``X = [s_b X_b]``.

    Parameters
    ----------
    blocks, scales, offsets
        The joint matrix, as in :func:`spatialmultiomics.factorize._kernels.cross_w`.
    k
        Number of singular triplets, ``k <= min(n_cells, n_features)``.
    rng
        Source of the Gaussian test matrix.
    n_oversamples
        Extra columns of the test matrix.
    n_iter
        Power iterations (each followed by a QR re-orthonormalisation); default 7 when ``k`` is below a tenth of
        ``min(n_cells, n_features)``, else 4 (scikit-learn's rule).

    Returns
    -------
    U
        Array of shape (n_cells, k), float32.
    S
        Array of shape (k,), float64, non-increasing.
    Vt
        Array of shape (k, n_features), float32.
    """
    n, m = blocks[0].shape[0], int(offsets[-1])
    size = min(k + n_oversamples, n, m)
    if n_iter is None:
        n_iter = 7 if k < 0.1 * min(n, m) else 4
    omega = rng.standard_normal((size, m)).astype(np.float32)  # rows = test vectors
    Q = _orthonormal(cross_w(blocks, scales, offsets, omega).T)  # (n, size)
    for _ in range(n_iter):
        Z = _orthonormal(cross_g(blocks, scales, offsets, np.ascontiguousarray(Q.T)).T)  # (m, size)
        Q = _orthonormal(cross_w(blocks, scales, offsets, np.ascontiguousarray(Z.T)).T)  # (n, size)
    B = cross_g(blocks, scales, offsets, np.ascontiguousarray(Q.T)).astype(np.float64)  # (size, m) = Q.T @ X
    u_hat, s, vt = np.linalg.svd(B, full_matrices=False)
    U = Q @ u_hat[:, :k].astype(np.float32)
    return U, s[:k], vt[:k].astype(np.float32)


def _nndsvd(U: np.ndarray, S: np.ndarray, Vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return NNDSVD factors (Boutsidis & Gallopoulos 2008) from a truncated SVD ``U diag(S) Vt``."""
    n, k = U.shape
    W = np.zeros((n, k), dtype=np.float32)
    H = np.zeros((k, Vt.shape[1]), dtype=np.float32)
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0] = np.sqrt(S[0]) * np.abs(Vt[0])
    for j in range(1, k):
        x, y = U[:, j], Vt[j]
        x_p, y_p = np.maximum(x, 0), np.maximum(y, 0)
        x_n, y_n = np.maximum(-x, 0), np.maximum(-y, 0)
        xp_nrm, yp_nrm = float(np.linalg.norm(x_p)), float(np.linalg.norm(y_p))
        xn_nrm, yn_nrm = float(np.linalg.norm(x_n)), float(np.linalg.norm(y_n))
        m_p, m_n = xp_nrm * yp_nrm, xn_nrm * yn_nrm
        if m_p >= m_n:
            u, v, sigma = x_p / max(xp_nrm, 1e-30), y_p / max(yp_nrm, 1e-30), m_p
        else:
            u, v, sigma = x_n / max(xn_nrm, 1e-30), y_n / max(yn_nrm, 1e-30), m_n
        lbd = np.sqrt(S[j] * sigma)
        W[:, j] = lbd * u
        H[j] = lbd * v
    # values at float32 round-off level of the largest entry are noise from the SVD: set them to 0
    W[np.finfo(np.float32).eps * float(W.max(initial=0.0)) > W] = 0.0
    H[np.finfo(np.float32).eps * float(H.max(initial=0.0)) > H] = 0.0
    return W, H


def initialize(
    blocks: Sequence[Any],
    scales: np.ndarray,
    offsets: np.ndarray,
    k: int,
    *,
    init: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Return initial factors ``W`` (n_cells, k) and ``G`` (k, n_features), float32, of the weighted joint matrix.

    Parameters
    ----------
    blocks, scales, offsets
        The joint matrix ``X = [s_b X_b]``, as in :func:`spatialmultiomics.factorize._kernels.cross_w`.
    k
        Number of components.
    init
        ``'nndsvd'``: NNDSVD of the truncated SVD (exact zeros kept); ``'nndsvda'``: the same with zeros replaced
        by the mean of ``X`` (better for the solvers, which cannot move an exact zero under multiplicative
        updates); ``'random'``: absolute Gaussian values scaled by ``sqrt(mean(X) / k)`` (scikit-learn's rule).
    rng
        Source of randomness (the test matrix of the SVD, or the random values).
    """
    n, m = blocks[0].shape[0], int(offsets[-1])
    mean = sum(float(s) * total_sum(X) for X, s in zip(blocks, scales, strict=True)) / (n * m)
    if init == "random":
        avg = np.sqrt(mean / k)
        G = (avg * np.abs(rng.standard_normal((k, m)))).astype(np.float32)
        W = (avg * np.abs(rng.standard_normal((n, k)))).astype(np.float32)
        return W, G
    U, S, Vt = randomized_svd(blocks, scales, offsets, k, rng)
    W, G = _nndsvd(U, S, Vt)
    if init == "nndsvda":
        W[W == 0] = mean
        G[G == 0] = mean
    return W, G
