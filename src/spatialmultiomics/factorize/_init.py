"""Initial factors for the joint NMF: NNDSVD(a) on the weighted joint matrix, or seeded random values.

The truncated SVD is a randomized range finder (Halko, Martinsson & Tropp 2011) that only multiplies the blocks
with thin dense matrices, so sparse blocks are never densified and the joint matrix is never built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INITS", "initialize", "randomized_svd"]

INITS = ("nndsvda", "nndsvd", "random")
#: above this many multiply-adds per product (2 x stored values x k), the randomized SVD of the initialisation makes 1
#: power iteration instead of scikit-learn's 7: each costs two passes over the data, and at 100,000 cells the
#: error after 3, 5 and 8 solver iterations was the same to 5 significant digits with 1 or 7
LARGE_INPUT_WORK = 4e7
LARGE_INPUT_POWER_ITERATIONS = 1


def randomized_svd(
    data: Any,
    k: int,
    rng: np.random.Generator,
    *,
    n_oversamples: int = 10,
    n_iter: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Return the leading ``k`` singular triplets of the weighted joint matrix held by ``data``.

    Parameters
    ----------
    data
        The joint matrix ``X = [s_b X_b]`` (n_cells, n_features): a
        :class:`~spatialmultiomics.factorize._rowpass.RowData` (or the Dask twin), which provides
        ``dot(M)`` = ``X @ M`` (n, r), ``tdot(B)`` = ``X.T @ B`` (n_features, r) and ``orthonormal(Y)``.
    k
        Number of singular triplets, ``k <= min(n_cells, n_features)``.
    rng
        Source of the Gaussian test matrix (drawn on the feature side, so it does not depend on how the rows are
        stored or chunked).
    n_oversamples
        Extra columns of the test matrix.
    n_iter
        Power iterations (each followed by a re-orthonormalisation); default 7 when ``k`` is below a tenth of
        ``min(n_cells, n_features)``, else 4 (scikit-learn's rule).

    Returns
    -------
    U
        Array of shape (n_cells, k), float32 (same array type as ``data.dot`` returns).
    S
        Array of shape (k,), float64, non-increasing.
    Vt
        Array of shape (k, n_features), float32.
    """
    n, m = data.n_rows, data.n_features
    size = min(k + n_oversamples, n, m)
    if n_iter is None:
        n_iter = 7 if k < 0.1 * min(n, m) else 4
    omega = rng.standard_normal((m, size))  # columns = test vectors
    Q = data.orthonormal(data.dot(omega))  # (n, size)
    for _ in range(n_iter):
        Z = np.linalg.qr(data.tdot(Q))[0]  # (m, size), small
        Q = data.orthonormal(data.dot(Z))  # (n, size)
    B = data.tdot(Q).T  # (size, m) = Q.T @ X, float64
    u_hat, s, vt = np.linalg.svd(B, full_matrices=False)
    U = Q @ u_hat[:, :k].astype(np.float32)
    return U, s[:k], vt[:k].astype(np.float32)


def _nndsvd(U: Any, S: np.ndarray, Vt: np.ndarray, *, norms: Any = None) -> tuple[Any, np.ndarray]:
    """Return NNDSVD factors (Boutsidis & Gallopoulos 2008) from a truncated SVD ``U diag(S) Vt``.

    Written column-wise without loops over cells, so ``U`` may be a NumPy or a Dask array (``norms``: a function
    returning the Euclidean norms of the columns as a NumPy array; default NumPy's).
    """
    if norms is None:

        def norms(A: Any) -> np.ndarray:
            return np.sqrt(np.einsum("ij,ij->j", A, A, dtype=np.float64))

    k = U.shape[1]
    S = np.asarray(S, dtype=np.float64)
    Vt = np.asarray(Vt, dtype=np.float64)
    xp_nrm, xn_nrm = norms(np.maximum(U, 0)), norms(np.maximum(-U, 0))
    yp, yn = np.maximum(Vt, 0), np.maximum(-Vt, 0)
    yp_nrm, yn_nrm = np.linalg.norm(yp, axis=1), np.linalg.norm(yn, axis=1)
    positive = xp_nrm * yp_nrm >= xn_nrm * yn_nrm
    positive[0] = True
    sign = np.where(positive, 1.0, -1.0)
    x_nrm = np.where(positive, xp_nrm, xn_nrm)
    sigma = np.where(positive, xp_nrm * yp_nrm, xn_nrm * yn_nrm)
    lbd = np.sqrt(S * sigma)
    coef_w = lbd / np.maximum(x_nrm, 1e-30)
    coef_w[0] = np.sqrt(S[0])
    H = np.where(positive[:, None], yp, yn) * (lbd / np.maximum(np.where(positive, yp_nrm, yn_nrm), 1e-30))[:, None]
    H[0] = np.sqrt(S[0]) * np.abs(Vt[0])
    # the first singular pair of a non-negative matrix has one sign: take its absolute value
    sign_first = np.ones(k)
    sign_first[0] = 0.0
    U32 = U.astype(np.float32) if hasattr(U, "astype") else np.asarray(U, dtype=np.float32)
    W = np.maximum(U32 * (sign * sign_first).astype(np.float32), 0)
    W = W + abs(U32) * (1.0 - sign_first).astype(np.float32)
    W = W * coef_w.astype(np.float32)
    H = H.astype(np.float32)
    return W, H


def initialize(
    data: Any,
    k: int,
    *,
    init: str,
    rng: np.random.Generator,
) -> tuple[Any, np.ndarray]:
    """Return initial factors ``W`` (n_cells, k) and ``G`` (k, n_features), float32, of the weighted joint matrix.

    Parameters
    ----------
    data
        The joint matrix ``X = [s_b X_b]`` (see :func:`randomized_svd`; also needs ``total_sum()`` and
        ``max_abs(W)``).
    k
        Number of components.
    init
        ``'nndsvd'``: NNDSVD of the truncated SVD (exact zeros kept); ``'nndsvda'``: the same with zeros replaced
        by the mean of ``X`` (better for the solvers, which cannot move an exact zero under multiplicative
        updates); ``'random'``: absolute Gaussian values scaled by ``sqrt(mean(X) / k)`` (scikit-learn's rule).
    rng
        Source of randomness (the test matrix of the SVD, or the random values).
    """
    n, m = data.n_rows, data.n_features
    mean = data.total_sum() / (n * m)
    if init == "random":
        avg = np.sqrt(mean / k)
        G = (avg * np.abs(rng.standard_normal((k, m)))).astype(np.float32)
        W = data.random_rows(rng, k, avg)
        return W, G
    large = 2.0 * data.stored * k >= LARGE_INPUT_WORK
    U, S, Vt = randomized_svd(data, k, rng, n_iter=LARGE_INPUT_POWER_ITERATIONS if large else None)
    W, G = _nndsvd(U, S, Vt, norms=getattr(data, "column_norms", None))
    # values at float32 round-off level of the largest entry are noise from the SVD: set them to 0
    eps = np.finfo(np.float32).eps
    w_floor = np.float32(eps * data.max_value(W))
    G[eps * float(G.max(initial=0.0)) > G] = 0.0
    fill = np.float32(mean) if init == "nndsvda" else np.float32(0.0)
    W = np.where(w_floor > W, np.float32(0.0), W)
    if init == "nndsvda":
        W = np.where(W == 0, fill, W)
        G[G == 0] = fill
    return W, G
