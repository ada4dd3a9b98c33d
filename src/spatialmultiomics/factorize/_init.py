"""Initial factors for the joint NMF: NNDSVD(a) on the weighted joint matrix, or seeded random values.

The truncated SVD is a randomized range finder (Halko, Martinsson & Tropp 2011) that only multiplies the blocks
with thin dense matrices, so sparse blocks are never densified and the joint matrix is never built. On large
inputs its power iterations run on an evenly spaced sample of the rows (they only sharpen the test matrix); the
last range-finder pass and the projection ``Q.T @ X`` always use every row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INITS", "initialize", "randomized_svd", "sample_rows"]

INITS = ("nndsvda", "nndsvd", "random")
#: inputs with at least this many multiply-adds per product (2 x stored values x k) are "large": their power
#: iterations run on a sample of SAMPLE_ROWS evenly spaced rows when there are more than twice as many rows
#: (else 1 power iteration on all rows instead of scikit-learn's 7: each costs two passes over the data)
LARGE_INPUT_WORK = 4e7
LARGE_INPUT_POWER_ITERATIONS = 1
#: rows of that sample and power iterations on it. At 100,000 cells x 2,040 features (k = 20) a sample of 5,000
#: to 20,000 rows with 0 to 4 power iterations on it gave the same error after 1, 2, 4, 6 and 8 solver iterations
#: (to 5 significant digits) as 1 power iteration on all rows, and seeds 0-2 all reached the same error; no power
#: iteration at all (only the two passes over all rows) was clearly worse (0.491 instead of 0.457 after 2
#: iterations). The sample costs about a fifth of a pass over all rows (initialisation 0.78 s -> 0.28 s)
SAMPLE_ROWS = 10_000
SAMPLE_POWER_ITERATIONS = 0
#: on large inputs the width of the range finder (k + oversamples) is rounded up to a multiple of this: the numba
#: CSR kernels vectorise whole groups of columns (on the 2-core AVX2 machine a CSR product with 32 columns took
#: 0.075 s at 100,000 cells, with 30 columns 0.127 s, with 20 columns 0.084 s)
LARGE_INPUT_WIDTH_MULTIPLE = 16
#: Cholesky QR rounds of the re-orthonormalisations on large inputs: 1 (the second round of CholeskyQR2 only
#: restores orthogonality to float32 round-off, which a range finder does not need; it cost 11 ms at 100,000 x 32)
LARGE_INPUT_QR_ROUNDS = 1


def sample_rows(n: int, size: int) -> np.ndarray:
    """Return ``size`` evenly spaced row indices of ``range(n)`` (sorted; a function of ``n`` and ``size`` only)."""
    size = min(int(size), int(n))
    return (np.arange(size, dtype=np.int64) * n) // size


def randomized_svd(
    data: Any,
    k: int,
    rng: np.random.Generator,
    *,
    n_oversamples: int = 10,
    n_iter: int | None = None,
    sample: Any = None,
    width_multiple: int = 1,
    rounds: int = 2,
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
    sample
        None, or some rows of the same matrix (a NumPy
        :class:`~spatialmultiomics.factorize._rowpass.RowData`, see :meth:`RowData.take_rows`): the power
        iterations then run on these rows, and their feature-side basis ``qr(X_sample.T @ Q)`` becomes the test
        matrix of one last range-finder pass over all rows (``Q = orth(X @ Z)``, ``B = Q.T @ X``).
    width_multiple
        Round the width ``k + n_oversamples`` up to a multiple of this (at most ``min(n_cells, n_features)``).
    rounds
        Cholesky QR rounds of each re-orthonormalisation (``orthonormal(Y, rounds)``): 2 (CholeskyQR2) or 1.

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
    width = -(-(k + n_oversamples) // max(int(width_multiple), 1)) * max(int(width_multiple), 1)
    size = min(width, n, m)
    if n_iter is None:
        n_iter = 7 if k < 0.1 * min(n, m) else 4
    omega = rng.standard_normal((m, size))  # columns = test vectors
    finder = data if sample is None else sample
    Q = finder.orthonormal(finder.dot(omega), rounds)  # (rows, size)
    for _ in range(n_iter):
        Z = np.linalg.qr(finder.tdot(Q))[0]  # (m, size), small
        Q = finder.orthonormal(finder.dot(Z), rounds)
    if sample is not None:  # the sample's basis as the test matrix of one pass over all rows
        Q = data.orthonormal(data.dot(np.linalg.qr(sample.tdot(Q))[0]), rounds)  # (n, size)
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

    S = np.asarray(S, dtype=np.float64)
    Vt = np.asarray(Vt, dtype=np.float64)
    U32 = U.astype(np.float32, copy=False) if hasattr(U, "astype") else np.asarray(U, dtype=np.float32)
    up = np.maximum(U32, 0)  # positive part of U
    un = up - U32  # negative part of U (exact: one of the two terms is 0)
    xp_nrm, xn_nrm = norms(up), norms(un)
    yp, yn = np.maximum(Vt, 0), np.maximum(-Vt, 0)
    yp_nrm, yn_nrm = np.linalg.norm(yp, axis=1), np.linalg.norm(yn, axis=1)
    positive = xp_nrm * yp_nrm >= xn_nrm * yn_nrm
    positive[0] = True
    x_nrm = np.where(positive, xp_nrm, xn_nrm)
    sigma = np.where(positive, xp_nrm * yp_nrm, xn_nrm * yn_nrm)
    lbd = np.sqrt(S * sigma)
    coef_w = lbd / np.maximum(x_nrm, 1e-30)
    coef_w[0] = np.sqrt(S[0])
    H = np.where(positive[:, None], yp, yn) * (lbd / np.maximum(np.where(positive, yp_nrm, yn_nrm), 1e-30))[:, None]
    H[0] = np.sqrt(S[0]) * np.abs(Vt[0])
    # column j of W: the chosen part of U[:, j] times coef_w[j]; the first singular pair of a non-negative matrix
    # has one sign, so its column is |U[:, 0]| = up + un
    take_p = np.where(positive, coef_w, 0.0)
    take_n = np.where(positive, 0.0, coef_w)
    take_n[0] = coef_w[0]
    W = up * take_p.astype(np.float32) + un * take_n.astype(np.float32)
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
        The joint matrix ``X = [s_b X_b]`` (see :func:`randomized_svd`; also needs ``total_sum()``,
        ``max_value(W)`` and, for large inputs, ``take_rows(rows)``, a NumPy ``RowData`` of those rows).
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
    if 2.0 * data.stored * k < LARGE_INPUT_WORK:
        U, S, Vt = randomized_svd(data, k, rng)
    else:  # large: power iterations on a sample of rows when there are many
        sampled = n > 2 * SAMPLE_ROWS
        U, S, Vt = randomized_svd(
            data,
            k,
            rng,
            n_iter=SAMPLE_POWER_ITERATIONS if sampled else LARGE_INPUT_POWER_ITERATIONS,
            sample=data.take_rows(sample_rows(n, SAMPLE_ROWS)) if sampled else None,
            width_multiple=LARGE_INPUT_WIDTH_MULTIPLE,
            rounds=LARGE_INPUT_QR_ROUNDS,
        )
    W, G = _nndsvd(U, S, Vt, norms=getattr(data, "column_norms", None))
    # values at float32 round-off level of the largest entry are noise from the SVD: set them to 0
    eps = np.finfo(np.float32).eps
    w_floor = np.float32(eps * data.max_value(W))
    G[eps * float(G.max(initial=0.0)) > G] = 0.0
    # zeros (and values below the floor) of W become 0 for 'nndsvd', the mean of X for 'nndsvda'
    fill = np.float32(mean) if init == "nndsvda" else np.float32(0.0)
    W = np.where(w_floor <= W if w_floor > 0 else W > 0, W, fill)
    if init == "nndsvda":
        G[G == 0] = fill
    return W, G
